"""Parse the human durations (`30s`, `5m`) and sizes (`16MiB`) that settings accept."""

from __future__ import annotations

import math
import re

from pydantic import ByteSize, TypeAdapter, ValidationError

# The sign is matched so that `-5m` is refused as negative, not as unreadable.
# ASCII digits: `\d` would read Arabic-Indic digits as a number of seconds too.
_DURATION = re.compile(r"^\s*([-+]?[0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

# Sizes beyond this are typos, not disks: a PiB of WAL is more than any server slotwatch watches.
MAX_SIZE = 1024**5
_SIZE_ERROR = "expected a size such as 1048576, 16MiB or 4GiB"
_BYTE_SIZE = TypeAdapter(ByteSize)


def parse_duration(value: object) -> float:
    """Seconds from `15`, `15s`, `500ms`, `5m`, `1h`, `2d`; raises ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 5m or 1h")
    try:
        if isinstance(value, int | float):
            seconds = float(value)
        elif isinstance(value, str):
            match = _DURATION.match(value)
            if not match:
                raise ValueError("expected a duration such as 30s, 5m or 1h")
            seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2) or "s"]
        else:
            raise ValueError("expected a duration such as 30s, 5m or 1h")
    except OverflowError:  # a TOML integer of hundreds of digits does not fit a float
        seconds = math.inf
    if not math.isfinite(seconds):
        raise ValueError("expected a finite duration such as 30s, 5m or 1h")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


def parse_size(value: object) -> int:
    """Bytes from `1048576`, `16MiB`, `4GiB`, `512MB` (pydantic's ByteSize: `MB` is 1000**2,
    `MiB` 1024**2, units in any case); raises ValueError otherwise, or beyond MAX_SIZE."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(_SIZE_ERROR)
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("expected a finite size such as 16MiB or 4GiB")
    text = str(value).strip()
    if text.startswith("-"):
        raise ValueError("a size cannot be negative")
    try:
        size = int(_BYTE_SIZE.validate_python(value if not isinstance(value, str) else text))
    except ValidationError:
        raise ValueError(_SIZE_ERROR) from None
    if size > MAX_SIZE:
        raise ValueError("must be at most 1PiB")
    return size


def format_bytes(value: float | None) -> str:
    """`1.5GiB`-style text for tables and messages; `-` for unknown."""
    if value is None:
        return "-"
    sign = "-" if value < 0 else ""
    amount = abs(float(value))
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if amount < 1024 or unit == "TiB":
            return f"{sign}{amount:.0f}{unit}" if unit == "B" else f"{sign}{amount:.1f}{unit}"
        amount /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def format_duration(seconds: float | None) -> str:
    """`1h05m`-style text; `inf` for never, `-` for unknown."""
    if seconds is None:
        return "-"
    if seconds == float("inf"):
        return "inf"
    total = int(seconds)
    if total < 120:
        return f"{total}s"
    minutes, _ = divmod(total, 60)
    if minutes < 120:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    return f"{hours // 24}d{hours % 24:02d}h"
