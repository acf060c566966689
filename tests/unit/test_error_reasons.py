"""Database errors become a reason (and an exit code) by SQLSTATE first, by libpq's text only
where no code exists: a failed connect (issue 12 item 7)."""

from __future__ import annotations

import psycopg
import psycopg.errors
import pytest

from slotwatch.errors import ConfigError, DatabaseUnreachable, PermissionDenied
from slotwatch.poll.db import classify_error, error_exception

FAILED = 'connection failed: connection to server at "127.0.0.1", port 5432 failed: FATAL:  '


@pytest.mark.parametrize(
    ("exc", "reason", "exit_code"),
    [
        # Coded errors: the SQLSTATE decides, whatever the words say.
        (
            psycopg.errors.QueryCanceled("canceling statement due to statement timeout"),
            "timeout",
            69,
        ),
        (psycopg.errors.LockNotAvailable("canceling statement due to lock timeout"), "timeout", 69),
        (psycopg.errors.InsufficientPrivilege("permission denied for function x"), "query", 69),
        (psycopg.errors.InvalidPassword("words that say nothing"), "auth", 77),
        (psycopg.errors.InvalidAuthorizationSpecification("x"), "auth", 77),
        (psycopg.errors.InvalidCatalogName('database "nope" does not exist'), "other", 78),
        (psycopg.errors.TooManyConnections("sorry, too many clients already"), "connect", 69),
        (psycopg.errors.AdminShutdown("terminating connection"), "connect", 69),
        (psycopg.errors.UndefinedTable("password authentication failed"), "query", 69),
        # Uncoded connect failures: libpq's text.
        (
            psycopg.OperationalError(FAILED + 'password authentication failed for user "m"'),
            "auth",
            77,
        ),
        (
            psycopg.OperationalError(FAILED + 'pg_hba.conf rejects connection for host "h"'),
            "auth",
            77,
        ),
        (psycopg.OperationalError(FAILED + 'no pg_hba.conf entry for host "h"'), "auth", 77),
        (psycopg.OperationalError(FAILED + 'role "ghost" does not exist'), "auth", 77),
        (psycopg.OperationalError(FAILED + 'database "nope" does not exist'), "other", 78),
        (psycopg.OperationalError("connection timeout expired"), "timeout", 69),
        (psycopg.OperationalError(FAILED + "Connection refused"), "connect", 69),
        (psycopg.OperationalError('root certificate file "/x.crt" does not exist'), "tls", 69),
        (psycopg.OperationalError("SSL error: certificate verify failed"), "tls", 69),
    ],
)
def test_reason_and_exit_code(exc: BaseException, reason: str, exit_code: int) -> None:
    error = classify_error(exc, connecting=not getattr(exc, "sqlstate", None))
    assert error.reason == reason, error
    assert error_exception(error).exit_code == exit_code
    assert "\n" not in error.message


def test_a_pg_hba_refusal_does_not_blame_the_password() -> None:
    error = classify_error(
        psycopg.OperationalError(FAILED + 'pg_hba.conf rejects connection for host "h"'),
        connecting=True,
    )
    raised = error_exception(error)
    assert isinstance(raised, PermissionDenied)
    assert "pg_hba.conf" in error.hint
    assert "password" not in str(raised).replace("no password was asked for", "")


def test_a_missing_database_is_a_configuration_error_naming_dbname() -> None:
    error = classify_error(
        psycopg.OperationalError(FAILED + 'database "nope" does not exist'), connecting=True
    )
    raised = error_exception(error)
    assert isinstance(raised, ConfigError)
    assert "dbname" in str(raised)
    assert "password" not in str(raised)
    assert "role" not in str(raised)


def test_an_outage_is_unreachable() -> None:
    error = classify_error(psycopg.OperationalError("server closed the connection unexpectedly"))
    assert isinstance(error_exception(error), DatabaseUnreachable)
