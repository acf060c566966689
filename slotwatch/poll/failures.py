"""What a failed poll or connect says: a `slotwatch_poll_errors_total` reason, one line of
message with any secret scrubbed, a hint, and the exception a one-shot verb ends with.

By SQLSTATE where the error carries one, by libpq's text where it does not (a failed connect).
"""

from __future__ import annotations

import re

import psycopg

from slotwatch.errors import (
    ConfigError,
    DatabaseUnreachable,
    PermissionDenied,
    SlotwatchError,
    UnsupportedServer,
)
from slotwatch.logs import REDACTOR
from slotwatch.model import PollError
from slotwatch.poll.names import Unresolved


def error_exception(error: PollError) -> SlotwatchError:
    """The exception (and so the exit code) a one-shot verb ends with for a failed poll."""
    message = f"{error.message} ({error.hint})" if error.hint else error.message
    if error.misconfigured:
        return ConfigError(message)
    if error.reason == "auth":
        return PermissionDenied(message)
    return DatabaseUnreachable(message)


def one_line(exc: BaseException) -> str:
    """The first meaningful line of an error, with any secret scrubbed."""
    text = str(exc).strip() or type(exc).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    # libpq puts "connection to server ... failed:" and the cause on separate lines.
    line = " ".join(lines[:2]) if lines and lines[0].endswith("failed:") else lines[0]
    return REDACTOR.scrub(line)


# SQLSTATE (or its class, the first two characters) -> reason; the first that matches wins.
_SQLSTATE_REASONS = (
    ("57014", "timeout"),  # query_canceled: statement_timeout
    ("55P03", "timeout"),  # lock_not_available: lock_timeout
    ("42501", "query"),  # insufficient_privilege: a missing GRANT, said in the message
    ("28", "auth"),  # invalid_authorization_specification, invalid_password
    ("3D", "other"),  # invalid_catalog_name: the database does not exist (misconfigured)
    ("08", "connect"),  # connection_exception
    ("53", "connect"),  # insufficient_resources: too many connections, out of memory
    ("57P", "connect"),  # admin_shutdown, crash_shutdown, cannot_connect_now
)

# libpq reports a failed connect by text alone (psycopg gives no SQLSTATE then): these markers
# stand in for the codes.
_MISSING_DATABASE = re.compile(r'database "[^"]*" does not exist')
# (marker, hint): every auth refusal says what to change, and only a password failure blames it.
_AUTH = (
    (
        "pg_hba.conf",
        "pg_hba.conf on the server refuses this host, role or database: add a line for it there;"
        " no password was asked for",
    ),
    ("password authentication failed", "check the role's password"),
    ("no password supplied", "the server asks for a password: put it in the DSN or its file"),
    ("authentication failed", "check the role and how pg_hba.conf authenticates it"),
    ('role "', "the role in the DSN does not exist on this server"),
    ("permission denied", "grant the role CONNECT on the database"),
)


_SILENT_NAME_SERVER = (
    "the name servers of /etc/resolv.conf do not answer: fix them, or give the DSN an IP"
    " address (host=, or hostaddr= beside it) to connect without a lookup"
)


def classify_error(exc: BaseException, *, connecting: bool = False) -> PollError:
    """Map an exception to a `slotwatch_poll_errors_total` reason and a one-line message.

    By SQLSTATE where the error carries one; by libpq's text only where it does not (a failed
    connect). A missing database is a configuration error; a pg_hba.conf refusal is auth, with
    a hint that does not blame the password.
    """
    message = one_line(exc)
    if isinstance(exc, UnsupportedServer):
        return PollError("other", message)
    if isinstance(exc, Unresolved):
        if exc.timed_out:
            return PollError("timeout", message, _SILENT_NAME_SERVER)
        return PollError("connect", message)
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(exc, psycopg.Error) and sqlstate:
        if sqlstate.startswith("3D"):
            return _missing_database(message)
        for prefix, reason in _SQLSTATE_REASONS:
            if sqlstate.startswith(prefix):
                return PollError(reason, message)
        return PollError("query", message)
    lowered = message.lower()
    if isinstance(exc, psycopg.OperationalError) or connecting:
        if any(m in lowered for m in ("certificate file", "private key file")):
            return PollError("tls", message)
        if "timeout expired" in lowered:
            return PollError("timeout", message)
        if _MISSING_DATABASE.search(message):
            return _missing_database(message)
        for marker, hint in _AUTH:
            if marker in lowered:
                return PollError("auth", message, hint)
        if any(m in lowered for m in ("ssl", "certificate", "tls")):
            return PollError("tls", message)
        return PollError("connect", message)
    if isinstance(exc, psycopg.Error):
        return PollError("query", message)
    return PollError("other", message)


def _missing_database(message: str) -> PollError:
    return PollError(
        "other",
        message,
        "the DSN's dbname names a database this server does not have: fix dbname in the DSN",
        misconfigured=True,
    )
