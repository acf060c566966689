"""The SQL slotwatch runs, chosen by server version in this one place.

Each statement is a whole file under `sql/`, read-only, carrying a `/* slotwatch: ... */`
marker so a DBA can find it in pg_stat_activity. Parameters are always bound, never pasted.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

from slotwatch.errors import UnsupportedServer

MIN_VERSION = 130000

# The poll's marked fragments, `/*NAME else ALT*/text/*end*/`: kept when the server has the
# feature, else replaced by ALT. The one place that knows which server has what.
_SINCE = {"pg14": 140000, "pg17": 170000}  # pg_stat_replication_slots; inactive_since & co.
_FRAGMENT = re.compile(r"/\*(\w+) else ?(.*?)\*/(.*?)/\*end\*/", re.S)


@cache
def _read(name: str) -> str:
    return resources.files("slotwatch.poll").joinpath("sql", name).read_text(encoding="utf-8")


def can_list_waldir_statement() -> str:
    """Asked once per connection: may this role run pg_ls_waldir()?"""
    return _read("can_list_waldir.sql")


@cache
def poll_statement(version_num: int, *, list_waldir: bool = True) -> str:
    """The poll statement for a server; raises UnsupportedServer below PostgreSQL 13.

    Without `list_waldir` the pg_ls_waldir() expression becomes NULL: PostgreSQL checks EXECUTE
    on every function of a statement before running it, so no CASE can guard it.
    """
    if version_num < MIN_VERSION:
        raise UnsupportedServer(
            f"PostgreSQL {version_num // 10000} is not supported: slotwatch needs 13 or newer"
            " (wal_status and safe_wal_size)"
        )
    have = {name for name, first in _SINCE.items() if version_num >= first}
    if list_waldir:
        have.add("waldir")

    def keep_or_replace(fragment: re.Match[str]) -> str:
        name, alternative, text = fragment.groups()
        if name not in _SINCE and name != "waldir":  # pragma: no cover - a typo in poll.sql
            raise ValueError(f"poll.sql: unknown fragment /*{name} else ...*/")
        return text if name in have else alternative

    return _FRAGMENT.sub(keep_or_replace, _read("poll.sql"))


# The guarded drop (slotwatch/drop/execute.py). Each statement binds %(slot)s and, where it
# re-checks the guard, %(slot_like)s and %(slot_database)s (NULL: every database); none is ever
# built from pieces.
_DROP = ((170000, "drop_slot_pg17.sql"), (MIN_VERSION, "drop_slot_pg13.sql"))


def _by_version(choices: tuple[tuple[int, str], ...], version_num: int) -> str:
    for first, name in choices:
        if version_num >= first:
            return _read(name)
    poll_statement(version_num)  # raises UnsupportedServer with the usual message
    raise AssertionError("unreachable")  # pragma: no cover


def drop_statement(version_num: int) -> str:
    """Drop the slot only if it still exists, matches, is in the target's database and is free;
    one row per slot dropped."""
    return _by_version(_DROP, version_num)


def terminate_statement() -> str:
    """Terminate whichever walsender holds the slot now, without waiting for it to exit."""
    return _read("drop_terminate.sql")


def drop_lock_statement() -> str:
    return _read("drop_lock.sql")


def drop_unlock_statement() -> str:
    return _read("drop_unlock.sql")


def drop_privileges_statement() -> str:
    return _read("drop_privileges.sql")
