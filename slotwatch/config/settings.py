"""Settings: the SLOTWATCH_* model, its sources in order, and the targets it resolves to.

Precedence, highest first: environment variables, then the TOML file, then the defaults of
docs/contract.md §6. Per-target keys (dsn, slot_pattern, ...) may be set at the top level, where
they apply to every target, or inside a `[[targets]]` entry. A target's identity (its DSN and
name) cannot come from the environment when the file lists targets: that would be ambiguous.
Reading the file lives in files.py, secrets in secrets.py, setting names for errors in names.py.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from slotwatch.config.files import read_config_file
from slotwatch.config.names import PREFIX, blame_file, did_you_mean, render, setting_name
from slotwatch.config.secrets import (
    REDACTED,
    check_dsn,
    read_secret_setting,
    redact_dsn,
    redact_url,
    secret_values,
)
from slotwatch.config.shard import Shard, parse_shard, share
from slotwatch.config.targets import (
    IDENTITY_KEYS,
    TARGET_KEYS,
    Duration,
    EmptyIsUnset,
    FilePath,
    Target,
    TargetEntry,
    seconds_between,
)
from slotwatch.errors import ConfigError
from slotwatch.model import Thresholds

# What other modules import from here: settings stay one place to ask, whichever module does the
# work behind a name.
__all__ = [
    "REDACTED",
    "Settings",
    "Target",
    "check_environment",
    "load_settings",
    "parse_listen",
    "redact_dsn",
    "redacted_view",
    "secret_values",
]

_RawValue = str | bool | int | float | None


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
    dsn_file: FilePath | None = None
    admin_dsn: SecretStr | None = None
    admin_dsn_file: FilePath | None = None
    slot_pattern: str | None = None
    liveness_url: str | None = None
    probe_name: str | None = None
    consumer_metrics_url: str | None = None
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
    slot_database: str | None = None
    other_slots_top: _RawValue = None

    # process-wide, top level only
    listen: str = "127.0.0.1:9847"
    poll_interval: Annotated[Duration, seconds_between("100ms", "1d")] = 15.0
    probe_interval: Annotated[Duration, seconds_between("100ms", "1d")] = 10.0
    probe_timeout: Annotated[Duration, seconds_between("100ms", "1h")] = 5.0
    connect_timeout: Annotated[Duration, seconds_between("1s", "1h")] = 5.0
    # PostgreSQL's statement_timeout is an int of milliseconds (at most 2147483.647s): beyond it
    # every connection would fail.
    statement_timeout: Annotated[Duration, seconds_between("1s", "2147483s")] = 5.0
    audit_log: Annotated[FilePath | None, EmptyIsUnset] = None
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    shard: Annotated[str | None, EmptyIsUnset] = None
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

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        parse_listen(value)
        return value

    @field_validator("audit_log")
    @classmethod
    def _a_file(cls, value: Path | None) -> Path | None:
        if value is not None and value.is_dir():
            raise ValueError("is a directory; name the file drop appends its audit records to")
        return value

    @field_validator("shard")
    @classmethod
    def _shard(cls, value: str | None) -> str | None:
        return None if value is None else str(parse_shard(value))

    @field_validator("log_format", "log_level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    def listen_address(self) -> tuple[str, int]:
        return parse_listen(self.listen)

    def shard_of_targets(self) -> Shard | None:
        return None if self.shard is None else parse_shard(self.shard)

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
    # ASCII digits: `isdigit` alone passes `٩٨٤٧` (and int() reads it as 9847).
    digits = port_text.isascii() and port_text.isdigit() and len(port_text) <= 5
    if not sep or not digits or not 0 < int(port_text) < 65536:
        raise ValueError("must be HOST:PORT, e.g. 127.0.0.1:9847 or [::1]:9847")
    if not host.isprintable() or any(c.isspace() for c in host):
        raise ValueError("the host must be printable text without spaces")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError("the address in brackets must be an IPv6 address") from None
    elif not host or ":" in host:
        raise ValueError("must be HOST:PORT, e.g. 127.0.0.1:9847 or [::1]:9847")
    return host, int(port_text)


def _resolve_target(values: dict[str, Any], where: str) -> Target:
    plain = {
        k: (v.get_secret_value() if isinstance(v, SecretStr) else v) for k, v in values.items()
    }
    try:
        entry = TargetEntry.model_validate(plain)
    except ValidationError as exc:
        raise ConfigError(render(exc, where)) from None
    dsn = read_secret_setting(values, "dsn", where)
    if dsn is None:
        raise ConfigError(
            f"{setting_name(where, 'dsn')} is required (or {setting_name(where, 'dsn_file')})"
        )
    check_dsn(dsn, setting_name(where, "dsn"))
    admin = read_secret_setting(values, "admin_dsn", where)
    if admin is not None:
        check_dsn(admin, setting_name(where, "admin_dsn"))
    return Target(
        name=entry.name,
        dsn=dsn,
        admin_dsn=admin,
        slot_pattern=entry.slot_pattern,
        liveness_url=entry.liveness_url or None,
        probe_name=entry.probe_name,
        consumer_app=entry.consumer_app,
        consumer_metrics_url=entry.consumer_metrics_url,
        thresholds=Thresholds(
            stall_after=entry.stall_after,
            inactive_after=entry.inactive_after,
            lag_floor_bytes=entry.lag_floor_bytes,
            lag_warn_bytes=entry.lag_warn_bytes,
            at_risk_eta=entry.at_risk_eta,
            wal_budget_bytes=entry.wal_budget_bytes,
            forecast_window=entry.forecast_window,
            other_slots_top=entry.other_slots_top,
        ),
        slot_database=entry.slot_database,
    )


def _top_level_keys() -> set[str]:
    """Keys the config file may set outside `[[targets]]`: every setting, and target defaults."""
    return set(Settings.model_fields) | set(TARGET_KEYS)


def known_variables() -> set[str]:
    names = {f"{PREFIX}{field.upper()}" for field in Settings.model_fields if field != "targets"}
    return names | {f"{PREFIX}CONFIG"}


# Variables naming a file: its name is bytes to the system, and need not be UTF-8.
_PATH_VARIABLES = frozenset(
    f"{PREFIX}{name}" for name in ("CONFIG", "DSN_FILE", "ADMIN_DSN_FILE", "AUDIT_LOG")
)


def _variable(environ: Mapping[str, str], name: str) -> str | None:
    """The variable `name` as the environment spells it: they are read in any case."""
    return next((n for n in environ if n.upper() == name), None)


def check_environment(environ: Mapping[str, str]) -> None:
    """Reject unknown SLOTWATCH_* variables: a typo must not fall back to a default silently.

    Variables are read in any case (pydantic-settings, case_sensitive=False), so two spellings of
    one are refused too: which of them won would be an accident of the environment's order. A
    text setting must be UTF-8: os.environ turns other bytes into surrogates, which no poll, no
    listening socket and no log line can encode.
    """
    known = known_variables()
    spelled: dict[str, str] = {}
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(PREFIX):
            continue
        if upper not in known:
            raise ConfigError(f"unknown setting {name}{did_you_mean(upper, known)}")
        if upper in spelled:
            raise ConfigError(f"{spelled[upper]} and {name} are both set; give only one")
        spelled[upper] = name
        if upper not in _PATH_VARIABLES and not _is_utf8(environ[name]):
            raise ConfigError(f"{name}: must be UTF-8 text")


def _is_utf8(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def load_settings(config_path: Path | str | None = None) -> tuple[Settings, tuple[Target, ...]]:
    """Read and validate the environment and the file; raises ConfigError with one line."""
    env = os.environ
    check_environment(env)
    config_variable = _variable(env, f"{PREFIX}CONFIG")
    path = config_path or (env[config_variable] if config_variable else None) or None
    file_values = read_config_file(Path(path), _top_level_keys()) if path else {}
    if file_values.get("targets"):
        for key in IDENTITY_KEYS:
            # As pydantic-settings reads it: `slotwatch_dsn` is SLOTWATCH_DSN.
            name = _variable(env, setting_name("", key))
            if name is not None:
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
        raise ConfigError(blame_file(render(exc), env, file_values, path)) from None
    except ConfigError as exc:
        raise ConfigError(blame_file(str(exc), env, file_values, path)) from None


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
            "shard",
        }
    )
    process["audit_log"] = str(settings.audit_log) if settings.audit_log else None
    if settings.shard is not None:
        process["shard_targets"] = [t.name for t in share(targets, settings.shard_of_targets())]
    process["targets"] = [
        {
            "name": t.name,
            "dsn": redact_dsn(t.dsn.get_secret_value()),
            "admin_dsn": redact_dsn(t.admin_dsn.get_secret_value()) if t.admin_dsn else None,
            "slot_pattern": t.slot_pattern,
            "liveness_url": redact_url(t.liveness_url) if t.liveness_url else None,
            "probe_name": t.probe_name,
            "consumer_metrics_url": t.consumer_metrics_url,
            "consumer_app": t.consumer_app,
            "stall_after": t.thresholds.stall_after,
            "inactive_after": t.thresholds.inactive_after,
            "lag_floor_bytes": t.thresholds.lag_floor_bytes,
            "lag_warn_bytes": t.thresholds.lag_warn_bytes,
            "at_risk_eta": t.thresholds.at_risk_eta,
            "wal_budget_bytes": t.thresholds.wal_budget_bytes,
            "forecast_window": t.thresholds.forecast_window,
            "slot_database": t.slot_database,
            "other_slots_top": t.thresholds.other_slots_top,
        }
        for t in targets
    ]
    return process
