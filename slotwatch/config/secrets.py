"""Credentials: DSNs read from `*_FILE` files or values, checked by libpq, and kept out of output.

A DSN may hold a password, so nothing here ever repeats one: errors name the setting, the redacted
form replaces the password, and secret_values lists what the log redactor must hide.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import psycopg.conninfo
from pydantic import SecretStr

from slotwatch.config.files import SECRET_FILE_MAX_BYTES, read_small_file
from slotwatch.config.names import setting_name
from slotwatch.config.targets import Target
from slotwatch.errors import ConfigError
from slotwatch.logs import REDACTED

__all__ = ["REDACTED", "check_dsn", "read_secret_setting", "redact_dsn", "redact_url"]

_PORTS = re.compile(r"^\d{1,5}(,\d{1,5})*$")
_ENCODE_HINT = (
    "; if the password holds '@', '/', '?', '#' or '%', percent-encode it (%40, %2F, %3F, %23, %25)"
)


def _read_secret(path: Path, setting: str) -> SecretStr:
    text = read_small_file(path, SECRET_FILE_MAX_BYTES, setting).strip()
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
    """Reject a DSN libpq cannot parse, without repeating any of it (it may hold a password).

    A URI whose password holds an unencoded `@` or `/` parses, but libpq moves the password's
    tail into `host` or `port`, where every error message and every display would print it: a
    host with `@` or a port that is not a number is refused here, before anything can echo it.
    """
    try:
        params = psycopg.conninfo.conninfo_to_dict(dsn.get_secret_value())
    except (psycopg.ProgrammingError, UnicodeDecodeError):
        raise ConfigError(
            f"{setting} is not a valid libpq connection string"
            " (postgresql://user@host:5432/db or 'host=... dbname=...')" + _ENCODE_HINT
        ) from None
    host, port = str(params.get("host", "")), str(params.get("port", ""))
    if "@" in host or "@" in str(params.get("hostaddr", "")):
        raise ConfigError(f"{setting}: the host holds an '@'{_ENCODE_HINT}")
    if port and not _PORTS.match(port):
        raise ConfigError(f"{setting}: the port is not a number{_ENCODE_HINT}")


def redact_dsn(dsn: str) -> str:
    """The DSN as key=value text with the password replaced; never raises."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(dsn)
    except (psycopg.ProgrammingError, UnicodeDecodeError):
        return REDACTED
    if "password" in params:
        params["password"] = REDACTED
    return " ".join(f"{k}={v}" for k, v in params.items())


def redact_url(url: str) -> str:
    """The URL with any password in its userinfo replaced; never raises, never echoes a bad URL."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError):
        return REDACTED
    if parsed.password:
        return str(parsed.copy_with(username=parsed.username, password=REDACTED))
    return url


def _url_password(url: str | None) -> str | None:
    if not url:
        return None
    try:
        return httpx.URL(url).password or None
    except (httpx.InvalidURL, ValueError, TypeError):
        return None


def secret_values(targets: tuple[Target, ...]) -> list[str]:
    """The passwords (and whole DSNs) that must never be printed: fed to the log redactor."""
    found: list[str] = []
    for target in targets:
        url_password = _url_password(target.liveness_url)
        if url_password:
            found.append(url_password)
        for secret in (target.dsn, target.admin_dsn):
            if secret is None:
                continue
            found.append(secret.get_secret_value())
            try:
                password = psycopg.conninfo.conninfo_to_dict(secret.get_secret_value()).get(
                    "password"
                )
            except (psycopg.ProgrammingError, UnicodeDecodeError):
                password = None
            if password:
                found.append(str(password))
    return found
