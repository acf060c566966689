"""Credentials: DSNs read from `*_FILE` files or values, checked by libpq, and kept out of output.

A DSN may hold a password, so nothing here ever repeats one: errors name the setting, the redacted
form replaces the password, and secret_values lists what the log redactor must hide.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

from pydantic import SecretStr

from slotwatch.config.conninfo import ENUMERATED, ConninfoError, parse_conninfo, unusable_option
from slotwatch.config.files import SECRET_FILE_MAX_BYTES, read_small_file
from slotwatch.config.names import setting_name
from slotwatch.config.targets import Target
from slotwatch.errors import ConfigError
from slotwatch.logs import REDACTED

__all__ = ["REDACTED", "check_dsn", "read_secret_setting", "redact_dsn", "redact_url"]

# The conninfo keywords whose values are secrets (libpq: `password`, and `sslpassword`, the
# passphrase of the client key); every other keyword names a host, a file or a mode.
SECRET_KEYWORDS = ("password", "sslpassword")
# ASCII digits only: `\d` would pass `٥٤٣٢`, which libpq refuses when it connects.
_PORTS = re.compile(r"^[0-9]{1,5}(,[0-9]{1,5})*$")
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
        params = parse_conninfo(dsn.get_secret_value())
    except ConninfoError:
        raise ConfigError(
            f"{setting} is not a valid libpq connection string"
            " (postgresql://user@host:5432/db or 'host=... dbname=...')" + _ENCODE_HINT
        ) from None
    host, port = str(params.get("host", "")), str(params.get("port", ""))
    if "@" in host or "@" in str(params.get("hostaddr", "")):
        raise ConfigError(f"{setting}: the host holds an '@'{_ENCODE_HINT}")
    if port and not _PORTS.match(port):
        raise ConfigError(f"{setting}: the port is not a number{_ENCODE_HINT}")
    keyword = unusable_option(params)
    if keyword is not None:
        # The keyword, never its value: a password with an unencoded '&' can end up there.
        raise ConfigError(f"{setting}: {keyword} must be one of {', '.join(ENUMERATED[keyword])}")


def redact_dsn(dsn: str) -> str:
    """The DSN as key=value text with every secret (SECRET_KEYWORDS) replaced; never raises."""
    try:
        params = parse_conninfo(dsn)
    except ConninfoError:
        return REDACTED
    shown = {k: REDACTED if k in SECRET_KEYWORDS else v for k, v in params.items()}
    return " ".join(f"{k}={v}" for k, v in shown.items())


def _split(url: str) -> SplitResult | None:
    # The standard parser, not the HTTP client's: `slotwatch config` must not load the client.
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number in range
    except (ValueError, TypeError):
        return None
    return parts


def redact_url(url: str) -> str:
    """The URL with any password in its userinfo replaced; never raises, never echoes a bad URL."""
    parts = _split(url)
    if parts is None:
        return REDACTED
    if not parts.password:
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:{REDACTED}@{hostport}"))


def _url_password(url: str | None) -> str | None:
    if not url:
        return None
    parts = _split(url)
    if parts is None or not parts.password:
        return None
    return unquote(parts.password) or None


def secret_values(targets: tuple[Target, ...]) -> list[str]:
    """The passwords and key passphrases (and whole DSNs) that must never be printed: fed to the
    log redactor."""
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
                params = parse_conninfo(secret.get_secret_value())
            except ConninfoError:
                continue
            found += [str(params[k]) for k in SECRET_KEYWORDS if params.get(k)]
    return found
