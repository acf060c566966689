"""The TOML config file: read it and refuse any key slotwatch does not know, with a hint.

A misspelt key must not fall back to a default silently, at the top level or in a `[[targets]]`
entry. The file's values are returned as they are; settings.py validates them.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Collection
from pathlib import Path
from typing import Any

from slotwatch.config.targets import TARGET_KEYS
from slotwatch.errors import ConfigError


def read_config_file(path: Path, top_keys: Collection[str]) -> dict[str, Any]:
    """The file's settings, `name` renamed to target_name; `top_keys` may stand at the top."""
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
    for key in sorted(set(data) - set(top_keys) - {"name"}):
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
