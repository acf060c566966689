"""Names a setting in an error the way the operator wrote it: its variable, file key or target.

Errors are one line and never repeat a value (it may be a secret), so the name is all an operator
has to go on: it must be the spelling they can find in their unit file, environment or TOML file.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Mapping
from typing import Any

from pydantic import ValidationError

PREFIX = "SLOTWATCH_"


def did_you_mean(word: str, choices: Collection[str]) -> str:
    """`; did you mean poll_interval?` for the closest known name, or nothing."""
    hint = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {hint[0]}?" if hint else ""


def setting_name(where: str, key: str) -> str:
    """`targets[1].dsn` inside a target entry (`where` = "targets[1]."), else the variable."""
    if where:
        return f"{where}{key}"
    return f"{PREFIX}{'TARGET_NAME' if key == 'name' else key.upper()}"


def render(exc: ValidationError, where: str = "") -> str:
    """One line naming the setting; never the input (it may be a secret)."""
    errors = exc.errors(include_input=False, include_url=False)
    first = errors[0]
    loc = [str(part) for part in first["loc"]]
    key = loc[0] if loc else "?"
    if where or key == "targets":
        name = where + ".".join(loc) if where else ".".join(loc)
    else:
        name = setting_name("", key)
    message = str(first["msg"]).removeprefix("Value error, ")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{name}: {message}{more}"


def as_spelled(message: str, env: Mapping[str, str]) -> str:
    """Name each variable as the environment spells it: they are read in any case, and an
    operator who wrote slotwatch_poll_interval searches their unit file for that."""
    for name in env:
        upper = name.upper()
        if upper != name and upper.startswith(PREFIX):
            message = re.sub(rf"\b{re.escape(upper)}\b", name, message)
    return message


def blame_file(
    message: str, env: Mapping[str, str], file_values: Mapping[str, Any], path: object
) -> str:
    """Name a top-level setting as the file spells it when its value came from the file, and
    a variable as the environment spells it (`as_spelled`).

    Errors name settings by their variable; an operator who wrote `poll_interval` in the file
    would look for SLOTWATCH_POLL_INTERVAL in the environment in vain.
    """
    message = as_spelled(message, env)
    in_env = {name.upper() for name in env}
    blamed = message
    for key in file_values:
        name = setting_name("", key)
        if name in in_env:
            continue
        spelled = "name" if key == "target_name" else key
        blamed = re.sub(rf"\b{re.escape(name)}\b", spelled, blamed)
    return blamed if blamed == message else f"config file {path}: {blamed}"
