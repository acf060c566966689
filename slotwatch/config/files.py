"""Files slotwatch reads at start-up (the TOML config, `*_FILE` secrets): bounded reads, and
the config file's keys checked, with a hint.

Only a regular file is read (a FIFO would block forever, /dev/zero would never end), opened
without blocking and read up to a cap. A misspelt key must not fall back to a default silently,
at the top level or in a `[[targets]]` entry. The file's values are returned as they are;
settings.py validates them.
"""

from __future__ import annotations

import os
import re
import stat
import sys
import tomllib
from collections.abc import Collection
from pathlib import Path
from typing import Any

from slotwatch.config.names import did_you_mean, setting_name
from slotwatch.config.targets import TARGET_KEYS
from slotwatch.errors import ConfigError, escaped

CONFIG_FILE_MAX_BYTES = 1024 * 1024
SECRET_FILE_MAX_BYTES = 64 * 1024


def read_small_file(path: Path, limit: int, what: str) -> str:
    """The UTF-8 text of a regular file of at most `limit` bytes; else ConfigError naming `what`."""
    try:
        # O_NONBLOCK: opening a FIFO with no writer must not wait; a regular file ignores it.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read {path}: {exc.strerror or exc}") from None
    except ValueError:  # a NUL in the path: no file has that name
        raise ConfigError(f"{what}: the path holds a NUL character") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ConfigError(f"{what}: {path} is not a regular file")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise ConfigError(f"{what}: {path} is larger than {limit} bytes")
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    try:
        return b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{what}: {path} is not UTF-8 text") from None


# A TOML integer as a value: after `=`, or in an array.
_INTEGER = re.compile(r"(?:=|\[|,)\s*[+-]?([0-9][0-9_]*)")
_KEY = re.compile(r"\s*([A-Za-z0-9_-]+)\s*=")


def _long_integer(text: str) -> str:
    """`lag_warn_bytes (line 2): `, where the integer tomllib could not convert stands."""
    limit = sys.get_int_max_str_digits()
    for number, line in enumerate(text.splitlines(), start=1):
        if any(len(m[1].replace("_", "")) > limit for m in _INTEGER.finditer(line)):
            key = _KEY.match(line)
            return f"{key[1]} (line {number}): " if key else f"line {number}: "
    return ""


def read_config_file(path: Path, top_keys: Collection[str]) -> dict[str, Any]:
    """The file's settings, `name` renamed to target_name; `top_keys` may stand at the top."""
    text = read_small_file(path, CONFIG_FILE_MAX_BYTES, "config file")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"config file {path}: not valid TOML: nested too deeply") from None
    except ValueError:
        # Not a TOMLDecodeError: int() refusing more digits than sys.get_int_max_str_digits().
        raise ConfigError(
            f"config file {path}: {_long_integer(text)}an integer of more than"
            f" {sys.get_int_max_str_digits()} digits is not a usable value"
        ) from None
    if "name" in data:
        # `name` is a target key; at the top level it is spelled target_name.
        data["target_name"] = data.pop("name")
    for key in sorted(set(data) - set(top_keys) - {"name"}):
        raise ConfigError(
            f"config file {path}: unknown setting '{escaped(key)}'{did_you_mean(key, top_keys)}"
        )
    targets = data.get("targets", [])
    if not isinstance(targets, list) or not all(isinstance(t, dict) for t in targets):
        raise ConfigError(f"config file {path}: targets must be a list of [[targets]] tables")
    process_wide = set(top_keys) - set(TARGET_KEYS) - {"targets", "target_name"}
    for index, entry in enumerate(targets):
        unknown = sorted(set(entry) - set(TARGET_KEYS))
        if not unknown:
            continue
        key = unknown[0]
        if key in process_wide:
            # shard, poll_interval, listen...: one value for the whole process, so an entry that
            # sets it would silently be ignored or contradict another entry.
            raise ConfigError(
                f"config file {path}: targets[{index}]: '{key}' is process-wide, not per target:"
                f" set it at the top level of the file or as {setting_name('', key)}"
            )
        raise ConfigError(
            f"config file {path}: targets[{index}]: unknown setting '{escaped(key)}'"
            + did_you_mean(key, TARGET_KEYS)
        )
    return data
