"""Slot patterns (docs/contract.md §1): `%` is the only wildcard; `_` matches itself.

Pure: the poll binds `like_pattern` as a LIKE parameter, the drop guard pre-checks with
`pattern_matches`, and the drop statement re-checks in SQL.
"""

from __future__ import annotations


def like_pattern(pattern: str) -> str:
    """A slot pattern (docs/contract.md §1) as LIKE: only `%` is a wildcard, `_` is itself."""
    return pattern.replace("\\", "\\\\").replace("_", "\\_")


def pattern_matches(pattern: str, name: str) -> bool:
    """The same matching in Python, for the drop guard's pre-check (SQL re-checks it)."""
    parts = pattern.split("%")
    if len(parts) == 1:
        return name == pattern
    if not name.startswith(parts[0]) or not name.endswith(parts[-1]):
        return False
    position = len(parts[0])
    end = len(name) - len(parts[-1])
    for middle in parts[1:-1]:
        found = name.find(middle, position, end)
        if found < 0:
            return False
        position = found + len(middle)
    return position <= end
