"""What a target is: the keys a `[[targets]]` entry may carry, their checks, the resolved Target.

A target's keys may also be set at the top level, where they are defaults for every target; the
process-wide settings and the merging live in settings.py.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    SecretStr,
    field_validator,
)

from slotwatch.model import Thresholds
from slotwatch.units import parse_duration, parse_size


def seconds_between(low: str, high: str) -> AfterValidator:
    """A bound `run` can honour, checked by `config` too: a value is refused at start-up, not at
    the first poll (an interval of years overflows the scheduler, one of 1ms spins)."""
    low_s, high_s = parse_duration(low), parse_duration(high)

    def check(value: float) -> float:
        if value <= 0 < low_s:
            raise ValueError("must be greater than zero")
        if value < low_s:
            raise ValueError(f"must be at least {low}")
        if value > high_s:
            raise ValueError(f"must be at most {high}")
        return value

    return AfterValidator(check)


# pydantic's ByteSize reads `1.5MiB` as a float times the unit; this reads the same text exactly.
_SIZE_TEXT = re.compile(r"^\s*([0-9]*\.[0-9]+)\s*([A-Za-z]*)\s*$")


def _whole_bytes(value: object) -> int:
    """parse_size, refusing a size that is not a whole number of bytes (`1.5`, `1.0001KiB`):
    rounding it down would turn 0.4 into 0 silently. `1.5MiB` is whole bytes, and allowed."""
    if isinstance(value, float) and value > 0 and math.isfinite(value) and not value.is_integer():
        raise ValueError("must be a whole number of bytes")  # pydantic: "not a size"
    size = parse_size(value)
    if isinstance(value, str) and (match := _SIZE_TEXT.match(value)):
        unit = parse_size(f"1{match.group(2)}") if match.group(2) else 1
        if (Decimal(match.group(1)) * unit) % 1 != 0:
            raise ValueError("must be a whole number of bytes")
    return size


def _more_than_zero(value: int | None) -> int | None:
    if value == 0:
        raise ValueError("must be more than 0; leave it unset for none")
    return value


def _no_nul(value: Path | None) -> Path | None:
    # The system cannot open a path with a NUL in it; TOML can write one (\u0000).
    if value is not None and "\0" in str(value):
        raise ValueError("must be a path without a NUL character")
    return value


Duration = Annotated[float, BeforeValidator(parse_duration)]
Size = Annotated[int, BeforeValidator(_whole_bytes)]
# A file to read or write: no NUL in it.
FilePath = Annotated[Path, AfterValidator(_no_nul)]
# A per-target threshold: a year is already longer than any slot waits for anything.
Threshold = Annotated[Duration, seconds_between("0s", "365d")]


def _empty_is_unset(value: object) -> object:
    # An empty variable from a unit file or a template means the default: unset. For a path
    # it must not become Path("") == ".".
    return None if value == "" else value


# On an optional setting: an empty value is the same as not setting it.
EmptyIsUnset = BeforeValidator(_empty_is_unset)

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
    "consumer_metrics_url",
    "consumer_app",
    "stall_after",
    "inactive_after",
    "lag_floor_bytes",
    "lag_warn_bytes",
    "at_risk_eta",
    "wal_budget_bytes",
    "forecast_window",
    "slot_database",
    "other_slots_top",
)
# Keys that say which database a target is: never shared between targets.
IDENTITY_KEYS = ("name", "dsn", "dsn_file", "admin_dsn", "admin_dsn_file")


# The defaults of docs/contract.md §2 live once, in model.Thresholds; the settings read them.
_DEFAULT = Thresholds()
OTHER_SLOTS_TOP = _DEFAULT.other_slots_top


class _Thresholds(BaseModel):
    """The per-target knobs, shared by the top level and each target entry."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    slot_pattern: str = "powersync_selfhost%"
    liveness_url: str = "http://127.0.0.1:8080/probes/liveness"
    probe_name: str = "powersync"
    consumer_metrics_url: Annotated[str | None, EmptyIsUnset] = None
    consumer_app: str = "powersync/%"
    stall_after: Threshold = _DEFAULT.stall_after
    inactive_after: Threshold = _DEFAULT.inactive_after
    lag_floor_bytes: Size = _DEFAULT.lag_floor_bytes
    lag_warn_bytes: Size = _DEFAULT.lag_warn_bytes
    at_risk_eta: Threshold = _DEFAULT.at_risk_eta
    # 0 has no meaning (docs/contract.md §6: unset is "no budget"); it would make every slot
    # critical.
    wal_budget_bytes: Annotated[Size | None, EmptyIsUnset, AfterValidator(_more_than_zero)] = (
        _DEFAULT.wal_budget_bytes
    )
    forecast_window: Threshold = _DEFAULT.forecast_window
    slot_database: Annotated[str | None, EmptyIsUnset] = None  # None: every database
    other_slots_top: int = OTHER_SLOTS_TOP

    @field_validator("other_slots_top", mode="before")
    @classmethod
    def _count(cls, value: object) -> int:
        # From the environment a count arrives as text; a TOML true must not count as 1.
        if value == "":
            return OTHER_SLOTS_TOP
        # ASCII digits only (`isdigit` alone passes `٣` and `²`), and no more than 1000 takes.
        text = value.strip() if isinstance(value, str) else ""
        if text.isascii() and text.isdigit() and len(text) <= 4:
            value = int(text)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 1000:
            raise ValueError("must be a whole number from 0 (off) to 1000")
        return value

    @field_validator("slot_pattern", "consumer_app", "probe_name", "liveness_url", "slot_database")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        # PostgreSQL text cannot hold a NUL, and a control or format character would forge or
        # hide text wherever the value is echoed: refused here, not at the first poll.
        if value is not None and not value.isprintable():
            raise ValueError(
                "must be printable text: no control characters (NUL, newline, escape, ...)"
            )
        return value

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
        # The standard parser, not the HTTP client's: `slotwatch config` must not load the client.
        try:
            url = urlsplit(value)
            url.port  # noqa: B018 - raises ValueError on a port that is not a number in range
        except ValueError:
            raise ValueError("must be an http:// or https:// URL, or empty to disable") from None
        spaced = any(c.isspace() for c in value)
        if url.scheme not in ("http", "https") or not url.hostname or spaced:
            raise ValueError("must be an http:// or https:// URL, or empty to disable")
        return value

    @field_validator("consumer_metrics_url")
    @classmethod
    def _metrics_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        unusable = "must be an http:// or https:// URL, or empty to leave it off"
        if not value.isprintable():
            raise ValueError(
                "must be printable text: no control characters (NUL, newline, escape, ...)"
            )
        try:
            url = urlsplit(value)
            url.port  # noqa: B018 - raises ValueError on a port that is not a number in range
        except ValueError:
            raise ValueError(unusable) from None
        if url.scheme not in ("http", "https") or not url.hostname or " " in value:
            raise ValueError(unusable)
        if "@" in url.netloc:
            # PowerSync's metrics port has no authentication, and the URL is shown on /status.
            raise ValueError("must not carry credentials (user:password@)")
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
    dsn_file: FilePath | None = None
    admin_dsn: SecretStr | None = None
    admin_dsn_file: FilePath | None = None

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
    slot_database: str | None = None  # only this database's slots; None: every database
    consumer_metrics_url: str | None = None  # the consumer's own Prometheus endpoint, if read
