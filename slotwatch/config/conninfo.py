"""libpq's own connection-string parser, reached without loading the database driver.

`slotwatch config` must check a DSN exactly as `run` will connect with it, yet stay light: the
driver (psycopg) costs more to import than the whole verb. Its `conninfo_to_dict` is a thin call
of libpq's `PQconninfoParse`; this module makes the same call through ctypes, on the libpq the
driver itself uses (the one bundled with psycopg[binary], else the system's), and falls back to
the driver when no libpq can be loaded, so the answer is always libpq's.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
from functools import cache
from pathlib import Path
from typing import Any


class ConninfoError(ValueError):
    """libpq refused the string. The message never repeats it: it may hold a password."""


# Keywords whose value libpq checks against a fixed set, but only when it connects (in
# connectOptions2, fe-connect.c), so a typo would pass `config` and fail every poll. The sets are
# those of https://www.postgresql.org/docs/current/libpq-connect.html#LIBPQ-PARAMKEYWORDS (libpq
# 18); libpq compares them case-sensitively, except the TLS versions. A keyword the loaded libpq
# does not know is already refused by PQconninfoParse. Left out: `replication` (the server, not
# libpq, reads it) and `require_auth` (a list with `!` negation, left to libpq).
ENUMERATED: dict[str, tuple[str, ...]] = {
    "sslmode": ("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
    "gssencmode": ("disable", "prefer", "require"),
    "channel_binding": ("disable", "prefer", "require"),
    "sslcertmode": ("disable", "allow", "require"),
    "sslnegotiation": ("postgres", "direct"),
    "target_session_attrs": (
        "any",
        "read-write",
        "read-only",
        "primary",
        "standby",
        "prefer-standby",
    ),
    "load_balance_hosts": ("disable", "random"),
    "min_protocol_version": ("3.0", "3.2", "latest"),
    "max_protocol_version": ("3.0", "3.2", "latest"),
    "ssl_min_protocol_version": ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"),
    "ssl_max_protocol_version": ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"),
}
_ANY_CASE = frozenset({"ssl_min_protocol_version", "ssl_max_protocol_version"})


def unusable_option(params: dict[str, str]) -> str | None:
    """The first keyword of ENUMERATED whose value libpq would refuse when connecting, or None."""
    for keyword, allowed in ENUMERATED.items():
        value = params.get(keyword)
        if value is None:
            continue
        if keyword in _ANY_CASE:
            usable = value.lower() in (a.lower() for a in allowed)
        else:
            usable = value in allowed
        if not usable:
            return keyword
    return None


class _Option(ctypes.Structure):
    # PQconninfoOption, libpq-fe.h
    _fields_ = (
        ("keyword", ctypes.c_char_p),
        ("envvar", ctypes.c_char_p),
        ("compiled", ctypes.c_char_p),
        ("val", ctypes.c_char_p),
        ("label", ctypes.c_char_p),
        ("dispchar", ctypes.c_char_p),
        ("dispsize", ctypes.c_int),
    )


def _candidates() -> list[str]:
    found: list[str] = []
    spec = importlib.util.find_spec("psycopg_binary")  # finds the wheel without importing it
    if spec is not None and spec.origin is not None:
        libs = Path(spec.origin).parent.parent / "psycopg_binary.libs"
        found += sorted(str(p) for p in libs.glob("libpq*.so*"))
    system = ctypes.util.find_library("pq")
    if system:
        found.append(system)
    return found


@cache
def _libpq() -> ctypes.CDLL | None:
    for path in _candidates():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        lib.PQconninfoParse.restype = ctypes.POINTER(_Option)
        lib.PQconninfoParse.argtypes = (ctypes.c_char_p, ctypes.POINTER(ctypes.c_char_p))
        lib.PQconninfoFree.argtypes = (ctypes.POINTER(_Option),)
        return lib
    return None


def parse_conninfo(dsn: str) -> dict[str, str]:
    """The parameters a libpq URI or key=value string sets; raises ConninfoError."""
    if "\0" in dsn:
        # libpq reads a C string: it would silently drop whatever follows the NUL.
        raise ConninfoError("not a valid libpq connection string")
    lib = _libpq()
    if lib is None:
        return _parse_with_driver(dsn)
    try:
        # An environment variable holding bytes that are not UTF-8 arrives with surrogates.
        encoded = dsn.encode()
    except UnicodeError:
        raise ConninfoError("not a valid libpq connection string") from None
    options = lib.PQconninfoParse(encoded, None)
    if not options:
        raise ConninfoError("not a valid libpq connection string")
    try:
        return _values(options)
    except UnicodeError:
        raise ConninfoError("not a valid libpq connection string") from None
    finally:
        lib.PQconninfoFree(options)


def _values(options: Any) -> dict[str, str]:
    params: dict[str, str] = {}
    for option in options:
        if option.keyword is None:
            break
        if option.val is not None:
            params[option.keyword.decode()] = option.val.decode()
    return params


def _parse_with_driver(dsn: str) -> dict[str, str]:
    import psycopg.conninfo  # noqa: PLC0415 - only when no libpq could be loaded directly

    try:
        return {k: str(v) for k, v in psycopg.conninfo.conninfo_to_dict(dsn).items()}
    except (psycopg.ProgrammingError, UnicodeError):
        raise ConninfoError("not a valid libpq connection string") from None
