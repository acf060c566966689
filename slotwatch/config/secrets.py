"""Credentials: DSNs read from `*_FILE` files or values, checked by libpq, and kept out of output.

A DSN may hold a password, so nothing here ever repeats one: errors name the setting, the redacted
form replaces the password, and secret_values lists what the log redactor must hide.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from slotwatch.config.conninfo import ConninfoError, parse_conninfo
from slotwatch.config.names import setting_name
from slotwatch.config.targets import Target
from slotwatch.errors import ConfigError

REDACTED = "********"


def _read_secret(path: Path, setting: str) -> SecretStr:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{setting}: cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{setting}: {path} is not UTF-8 text") from None
    if not text:
        raise ConfigError(f"{setting}: {path} is empty")
    return SecretStr(text)


def read_secret_setting(values: Mapping[str, Any], key: str, where: str) -> SecretStr | None:
    """`key` or the file named by `key_file` (never both); None when neither is set."""
    plain, file = values.get(key), values.get(f"{key}_file")
    if plain is not None and file is not None:
        raise ConfigError(
            f"{setting_name(where, key)} and {setting_name(where, key + '_file')} are both set;"
            " give only one"
        )
    if file is not None:
        return _read_secret(Path(file), setting_name(where, key + "_file"))
    if plain is None:
        return None
    secret = plain if isinstance(plain, SecretStr) else SecretStr(str(plain))
    if not secret.get_secret_value().strip():
        raise ConfigError(f"{setting_name(where, key)} is empty")
    return secret


def check_dsn(dsn: SecretStr, setting: str) -> None:
    """Reject a DSN libpq cannot parse, without repeating any of it (it may hold a password)."""
    try:
        parse_conninfo(dsn.get_secret_value())
    except ConninfoError:
        raise ConfigError(
            f"{setting} is not a valid libpq connection string"
            " (postgresql://user@host:5432/db or 'host=... dbname=...')"
        ) from None


def redact_dsn(dsn: str) -> str:
    """The DSN as key=value text with the password replaced; never raises."""
    try:
        params = parse_conninfo(dsn)
    except ConninfoError:
        return REDACTED
    if "password" in params:
        params["password"] = REDACTED
    return " ".join(f"{k}={v}" for k, v in params.items())


def secret_values(targets: tuple[Target, ...]) -> list[str]:
    """The passwords (and whole DSNs) that must never be printed: fed to the log redactor."""
    found: list[str] = []
    for target in targets:
        for secret in (target.dsn, target.admin_dsn):
            if secret is None:
                continue
            found.append(secret.get_secret_value())
            try:
                password = parse_conninfo(secret.get_secret_value()).get("password")
            except ConninfoError:
                password = None
            if password:
                found.append(str(password))
    return found
