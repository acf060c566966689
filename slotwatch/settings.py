"""Settings: SLOTWATCH_* environment, `*_FILE` secrets, the TOML file, and their redacted view.

Precedence, highest first: environment variables, then the TOML file, then the defaults of
SPEC §6. Per-target keys (dsn, slot_pattern, thresholds, ...) may be set at the top level, where
they apply to every target, or inside a `[[targets]]` entry. A target's identity (its DSN and
name) cannot come from the environment when the file lists targets: that would be ambiguous.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import httpx
import psycopg.conninfo
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from slotwatch.errors import ConfigError
from slotwatch.model import Thresholds
from slotwatch.units import parse_duration, parse_size

PREFIX = "SLOTWATCH_"
REDACTED = "********"

Duration = Annotated[float, BeforeValidator(parse_duration)]
Size = Annotated[int, BeforeValidator(parse_size)]
_RawValue = str | bool | int | float | None

# Keys a [[targets]] entry may carry; at the top level they are defaults for every target.
TARGET_KEYS = (
    "name",
    "dsn",
    "dsn_file",
    "admin_dsn",
    "admin_dsn_file",
    "slot_pattern",
    "liveness_url",
    "probe_name",
    "consumer_app",
    "stall_after",
    "inactive_after",
    "lag_floor_bytes",
    "lag_warn_bytes",
    "at_risk_eta",
    "wal_budget_bytes",
    "forecast_window",
)
# Keys that say which database a target is: never shared between targets.
IDENTITY_KEYS = ("name", "dsn", "dsn_file", "admin_dsn", "admin_dsn_file")
SECRET_KEYS = ("dsn", "admin_dsn")


class _Thresholds(BaseModel):
    """The per-target knobs, shared by the top level and each target entry."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    slot_pattern: str = "powersync_selfhost%"
    liveness_url: str = "http://127.0.0.1:8080/probes/liveness"
    probe_name: str = "powersync"
    consumer_app: str = "powersync/%"
    stall_after: Duration = 300.0
    inactive_after: Duration = 120.0
    lag_floor_bytes: Size = 1024 * 1024
    lag_warn_bytes: Size = 256 * 1024 * 1024
    at_risk_eta: Duration = 3600.0
    wal_budget_bytes: Size | None = None
    forecast_window: Duration = 600.0

    @field_validator("wal_budget_bytes", mode="before")
    @classmethod
    def _empty_budget_is_unset(cls, value: object) -> object:
        # An empty variable from a unit file or a template means the SPEC default: unset.
        return None if value == "" else value

    @field_validator("slot_pattern")
    @classmethod
    def _pattern(cls, value: str) -> str:
        if not value or len(value) > 63:
            raise ValueError("must be 1 to 63 characters (a slot name is at most 63)")
        if value.count("%") == len(value):
            raise ValueError("must be more than wildcards: it decides which slots drop may touch")
        return value

    @field_validator("liveness_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if value == "":
            return value
        try:
            url = httpx.URL(value)
        except (httpx.InvalidURL, ValueError):
            raise ValueError("must be an http:// or https:// URL, or empty to disable") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("must be an http:// or https:// URL, or empty to disable")
        return value

    @field_validator("probe_name", "consumer_app")
    @classmethod
    def _nonempty(cls, value: str) -> str:
        if not value:
            raise ValueError("must not be empty")
        return value


class TargetEntry(_Thresholds):
    """One `[[targets]]` entry after the top-level defaults are merged in."""

    name: str = "default"
    dsn: SecretStr | None = None
    dsn_file: Path | None = None
    admin_dsn: SecretStr | None = None
    admin_dsn_file: Path | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value or not all(c.isalnum() or c in "-_." for c in value):
            raise ValueError("must be letters, digits, '-', '_' or '.' (it becomes a label)")
        return value


@dataclass(frozen=True, slots=True)
class Target:
    """A database to watch, with everything resolved: secrets read, thresholds parsed."""

    name: str
    dsn: SecretStr
    admin_dsn: SecretStr | None
    slot_pattern: str
    liveness_url: str | None
    probe_name: str
    consumer_app: str
    thresholds: Thresholds


class Settings(BaseSettings):
    """Process-wide settings plus the per-target defaults, read from SLOTWATCH_* variables.

    Values from the TOML file arrive as keyword arguments; the environment wins over them.
    """

    model_config = SettingsConfigDict(
        env_prefix=PREFIX, extra="forbid", frozen=True, case_sensitive=False
    )

    # per-target defaults (also the single target when the file lists none)
    target_name: str = "default"
    dsn: SecretStr | None = None
    dsn_file: Path | None = None
    admin_dsn: SecretStr | None = None
    admin_dsn_file: Path | None = None
    slot_pattern: str | None = None
    liveness_url: str | None = None
    probe_name: str | None = None
    consumer_app: str | None = None
    # Kept as given and parsed per target (TargetEntry), so a TOML float or `inf` reaches the
    # unit parser's message and a TOML `true` is refused rather than coerced to 1.
    stall_after: _RawValue = None
    inactive_after: _RawValue = None
    lag_floor_bytes: _RawValue = None
    lag_warn_bytes: _RawValue = None
    at_risk_eta: _RawValue = None
    wal_budget_bytes: _RawValue = None
    forecast_window: _RawValue = None

    # process-wide, top level only
    listen: str = "127.0.0.1:9847"
    poll_interval: Duration = 15.0
    probe_interval: Duration = 10.0
    probe_timeout: Duration = 5.0
    connect_timeout: Duration = 5.0
    statement_timeout: Duration = 5.0
    audit_log: Path | None = None
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    targets: list[dict[str, Any]] = Field(default_factory=list)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment first so that it overrides the file; no dotenv, no secrets dir.
        return (env_settings, init_settings)

    @field_validator("poll_interval", "probe_interval", "probe_timeout")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be greater than zero")
        return value

    @field_validator("connect_timeout", "statement_timeout")
    @classmethod
    def _at_least_a_second(cls, value: float) -> float:
        if value < 1:
            raise ValueError("must be at least 1s")
        return value

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        parse_listen(value)
        return value

    @field_validator("audit_log", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # `Environment=SLOTWATCH_AUDIT_LOG=` in a unit means "none", not Path("") == ".".
        return None if value == "" else value

    @field_validator("audit_log")
    @classmethod
    def _a_file(cls, value: Path | None) -> Path | None:
        if value is not None and value.is_dir():
            raise ValueError("is a directory; name the file drop appends its audit records to")
        return value

    @field_validator("log_format", "log_level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    def listen_address(self) -> tuple[str, int]:
        return parse_listen(self.listen)

    def resolved_targets(self) -> tuple[Target, ...]:
        """Every target with its secrets read; raises ConfigError naming the bad setting."""
        own = {k: getattr(self, k) for k in TARGET_KEYS if k != "name"}
        own["name"] = self.target_name
        defaults = {k: v for k, v in own.items() if v is not None}
        if not self.targets:
            return (_resolve_target(defaults, ""),)
        shared = {k: v for k, v in defaults.items() if k not in IDENTITY_KEYS}
        seen: set[str] = set()
        resolved = []
        for index, entry in enumerate(self.targets):
            target = _resolve_target({**shared, **entry}, f"targets[{index}].")
            if target.name in seen:
                raise ConfigError(f"targets[{index}].name: '{target.name}' is used twice")
            seen.add(target.name)
            resolved.append(target)
        return tuple(resolved)


def parse_listen(value: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` -> (host, port); raises ValueError."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError("must be HOST:PORT, e.g. 127.0.0.1:9847 or [::1]:9847")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError("the address in brackets must be an IPv6 address") from None
    elif not host or ":" in host:
        raise ValueError("must be HOST:PORT, e.g. 127.0.0.1:9847 or [::1]:9847")
    return host, int(port_text)


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


def _secret(values: Mapping[str, Any], key: str, where: str) -> SecretStr | None:
    plain, file = values.get(key), values.get(f"{key}_file")
    if plain is not None and file is not None:
        raise ConfigError(
            f"{_setting_name(where, key)} and {_setting_name(where, key + '_file')} are both set;"
            " give only one"
        )
    if file is not None:
        return _read_secret(Path(file), _setting_name(where, key + "_file"))
    if plain is None:
        return None
    secret = plain if isinstance(plain, SecretStr) else SecretStr(str(plain))
    if not secret.get_secret_value().strip():
        raise ConfigError(f"{_setting_name(where, key)} is empty")
    return secret


def _setting_name(where: str, key: str) -> str:
    if where:
        return f"{where}{key}"
    return f"{PREFIX}{'TARGET_NAME' if key == 'name' else key.upper()}"


def _resolve_target(values: dict[str, Any], where: str) -> Target:
    plain = {
        k: (v.get_secret_value() if isinstance(v, SecretStr) else v) for k, v in values.items()
    }
    try:
        entry = TargetEntry.model_validate(plain)
    except ValidationError as exc:
        raise ConfigError(_render(exc, where)) from None
    dsn = _secret(values, "dsn", where)
    if dsn is None:
        raise ConfigError(
            f"{_setting_name(where, 'dsn')} is required (or {_setting_name(where, 'dsn_file')})"
        )
    check_dsn(dsn, _setting_name(where, "dsn"))
    admin = _secret(values, "admin_dsn", where)
    if admin is not None:
        check_dsn(admin, _setting_name(where, "admin_dsn"))
    return Target(
        name=entry.name,
        dsn=dsn,
        admin_dsn=admin,
        slot_pattern=entry.slot_pattern,
        liveness_url=entry.liveness_url or None,
        probe_name=entry.probe_name,
        consumer_app=entry.consumer_app,
        thresholds=Thresholds(
            stall_after=entry.stall_after,
            inactive_after=entry.inactive_after,
            lag_floor_bytes=entry.lag_floor_bytes,
            lag_warn_bytes=entry.lag_warn_bytes,
            at_risk_eta=entry.at_risk_eta,
            wal_budget_bytes=entry.wal_budget_bytes,
            forecast_window=entry.forecast_window,
        ),
    )


def check_dsn(dsn: SecretStr, setting: str) -> None:
    """Reject a DSN libpq cannot parse, without repeating any of it (it may hold a password)."""
    try:
        psycopg.conninfo.conninfo_to_dict(dsn.get_secret_value())
    except psycopg.ProgrammingError:
        raise ConfigError(
            f"{setting} is not a valid libpq connection string"
            " (postgresql://user@host:5432/db or 'host=... dbname=...')"
        ) from None


def redact_dsn(dsn: str) -> str:
    """The DSN as key=value text with the password replaced; never raises."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
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
                password = psycopg.conninfo.conninfo_to_dict(secret.get_secret_value()).get(
                    "password"
                )
            except psycopg.ProgrammingError:
                password = None
            if password:
                found.append(str(password))
    return found


def _render(exc: ValidationError, where: str = "") -> str:
    """One line naming the setting; never the input (it may be a secret)."""
    errors = exc.errors(include_input=False, include_url=False)
    first = errors[0]
    loc = [str(part) for part in first["loc"]]
    key = loc[0] if loc else "?"
    if where or key == "targets":
        name = where + ".".join(loc) if where else ".".join(loc)
    else:
        name = _setting_name("", key)
    message = str(first["msg"]).removeprefix("Value error, ")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{name}: {message}{more}"


def known_variables() -> set[str]:
    names = {f"{PREFIX}{field.upper()}" for field in Settings.model_fields if field != "targets"}
    return names | {f"{PREFIX}CONFIG"}


def check_environment(environ: Mapping[str, str]) -> None:
    """Reject unknown SLOTWATCH_* variables: a typo must not fall back to a default silently."""
    known = known_variables()
    for name in sorted(environ):
        if name.upper().startswith(PREFIX) and name.upper() not in known:
            hint = difflib.get_close_matches(name.upper(), known, n=1, cutoff=0.6)
            suggestion = f"; did you mean {hint[0]}?" if hint else ""
            raise ConfigError(f"unknown setting {name}{suggestion}")


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path}: not UTF-8 text (TOML must be UTF-8)") from None
    if "name" in data:
        # `name` is a target key; at the top level it is spelled target_name.
        data["target_name"] = data.pop("name")
    top_keys = {f for f in Settings.model_fields if f not in TARGET_KEYS} | set(TARGET_KEYS)
    for key in sorted(set(data) - top_keys - {"name"}):
        hint = difflib.get_close_matches(key, top_keys, n=1)
        suggestion = f"; did you mean {hint[0]}?" if hint else ""
        raise ConfigError(f"config file {path}: unknown setting '{key}'{suggestion}")
    targets = data.get("targets", [])
    if not isinstance(targets, list) or not all(isinstance(t, dict) for t in targets):
        raise ConfigError(f"config file {path}: targets must be a list of [[targets]] tables")
    for index, entry in enumerate(targets):
        unknown = sorted(set(entry) - set(TARGET_KEYS))
        if unknown:
            hint = difflib.get_close_matches(unknown[0], TARGET_KEYS, n=1)
            suggestion = f"; did you mean {hint[0]}?" if hint else ""
            raise ConfigError(
                f"config file {path}: targets[{index}]: unknown setting '{unknown[0]}'{suggestion}"
            )
    return data


def load_settings(config_path: Path | str | None = None) -> tuple[Settings, tuple[Target, ...]]:
    """Read and validate the environment and the file; raises ConfigError with one line."""
    env = os.environ
    check_environment(env)
    path = config_path or env.get(f"{PREFIX}CONFIG") or None
    file_values = read_config_file(Path(path)) if path else {}
    if file_values.get("targets"):
        for key in IDENTITY_KEYS:
            name = _setting_name("", key)
            if name in env:
                raise ConfigError(
                    f"{name} cannot apply when the config file lists [[targets]]; set it per target"
                )
            # Silently ignoring a top-level dsn would watch a database nobody asked for.
            if (key if key != "name" else "target_name") in file_values:
                raise ConfigError(
                    f"config file {path}: {key} at the top level cannot apply when the file"
                    " lists [[targets]]; set it per target"
                )
    try:
        settings = Settings(**file_values)
        return settings, settings.resolved_targets()
    except ValidationError as exc:
        raise ConfigError(_blame_file(_render(exc), env, file_values, path)) from None
    except ConfigError as exc:
        raise ConfigError(_blame_file(str(exc), env, file_values, path)) from None


def _blame_file(
    message: str, env: Mapping[str, str], file_values: Mapping[str, Any], path: object
) -> str:
    """Name a top-level setting as the file spells it when its value came from the file.

    Errors name settings by their variable; an operator who wrote `poll_interval` in the file
    would look for SLOTWATCH_POLL_INTERVAL in the environment in vain.
    """
    in_env = {name.upper() for name in env}
    blamed = message
    for key in file_values:
        name = _setting_name("", key)
        if name in in_env:
            continue
        spelled = "name" if key == "target_name" else key
        blamed = re.sub(rf"\b{re.escape(name)}\b", spelled, blamed)
    return blamed if blamed == message else f"config file {path}: {blamed}"


def redacted_view(settings: Settings, targets: tuple[Target, ...]) -> dict[str, Any]:
    """The effective configuration as plain data, every secret replaced; for `slotwatch config`."""
    process = settings.model_dump(
        include={
            "listen",
            "poll_interval",
            "probe_interval",
            "probe_timeout",
            "connect_timeout",
            "statement_timeout",
            "audit_log",
            "log_format",
            "log_level",
        }
    )
    process["audit_log"] = str(settings.audit_log) if settings.audit_log else None
    process["targets"] = [
        {
            "name": t.name,
            "dsn": redact_dsn(t.dsn.get_secret_value()),
            "admin_dsn": redact_dsn(t.admin_dsn.get_secret_value()) if t.admin_dsn else None,
            "slot_pattern": t.slot_pattern,
            "liveness_url": t.liveness_url,
            "probe_name": t.probe_name,
            "consumer_app": t.consumer_app,
            "stall_after": t.thresholds.stall_after,
            "inactive_after": t.thresholds.inactive_after,
            "lag_floor_bytes": t.thresholds.lag_floor_bytes,
            "lag_warn_bytes": t.thresholds.lag_warn_bytes,
            "at_risk_eta": t.thresholds.at_risk_eta,
            "wal_budget_bytes": t.thresholds.wal_budget_bytes,
            "forecast_window": t.thresholds.forecast_window,
        }
        for t in targets
    ]
    return process
