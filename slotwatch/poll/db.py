"""Talking to the source database: connect with timeouts, run the one poll statement.

Its rows become plain data in `poll.rows`; its failures, reasons and messages in `poll.failures`;
the client's own deadline for an answer is kept by `poll.deadline`.

A `TargetConnection` keeps one connection per target open between polls (a TLS handshake to
Supabase every fifteen seconds would cost more than the poll) and reconnects after any failure.
`poll()` never raises for an expected failure: it returns a PollResult with the error's reason.
"""

from __future__ import annotations

import contextlib
import os
import time
import traceback
from pathlib import Path
from typing import Any

import psycopg
import psycopg.conninfo
import psycopg.errors
from psycopg.rows import tuple_row
from pydantic import SecretStr

from slotwatch.errors import (
    SlotwatchError,
    UnsupportedServer,
)
from slotwatch.model import OtherSlotRow, PollError, PollResult, ServerRow, SlotRow
from slotwatch.patterns import like_pattern
from slotwatch.poll import names
from slotwatch.poll.deadline import AnswerDeadline
from slotwatch.poll.failures import classify_error, error_exception, one_line
from slotwatch.poll.queries import can_list_waldir_statement, poll_statement
from slotwatch.poll.rows import Counters, read_poll

APPLICATION_NAME = "slotwatch"

# Set only when the DSN does not say otherwise: a dead peer must not hang a poll for hours.
_KEEPALIVES = {
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
}

# How long past the server's own statement_timeout a poll may wait for its answer before the
# client gives up on the connection (the round trip to a distant server fits well inside).
ANSWER_GRACE = 2.0


def answer_deadline(conn: psycopg.Connection[Any], statement_timeout: float) -> AnswerDeadline:
    """The client's own deadline for one round trip on `conn`: statement_timeout plus
    ANSWER_GRACE. The poll and every round trip of `drop` keep it the same way."""
    return AnswerDeadline(conn, statement_timeout + ANSWER_GRACE)


def no_answer(deadline: AnswerDeadline) -> PollError:
    """What a round trip cut at its deadline ends with: a `timeout`, in one line."""
    return PollError(
        "timeout",
        f"no answer within {deadline.seconds:g}s (statement_timeout plus "
        f"{ANSWER_GRACE:g}s): the server or the network in between is stuck",
    )


def connect(
    dsn: SecretStr,
    *,
    connect_timeout: float,
    statement_timeout: float,
    read_only: bool = True,
) -> psycopg.Connection[Any]:
    """Open an autocommit connection; raises DatabaseUnreachable, PermissionDenied or
    ConfigError (a database that does not exist)."""
    try:
        return _open(dsn, connect_timeout, statement_timeout, read_only=read_only)
    except (psycopg.OperationalError, names.Unresolved) as exc:
        raise error_exception(classify_error(exc, connecting=True)) from None


def _open(
    dsn: SecretStr, connect_timeout: float, statement_timeout: float, *, read_only: bool
) -> psycopg.Connection[Any]:
    params = psycopg.conninfo.conninfo_to_dict(dsn.get_secret_value())
    for key, value in _KEEPALIVES.items():
        params.setdefault(key, value)
    params["application_name"] = APPLICATION_NAME
    params["connect_timeout"] = str(max(1, int(connect_timeout)))
    gucs = f"-c statement_timeout={int(statement_timeout * 1000)}"
    gucs += " -c lock_timeout=" + str(int(statement_timeout * 1000))
    if read_only:
        gucs += " -c default_transaction_read_only=on"
    params["options"] = f"{params.get('options', '')} {gucs}".strip()
    params = pinned_addresses(params, connect_timeout)
    try:
        return psycopg.connect(psycopg.conninfo.make_conninfo("", **params), autocommit=True)
    except psycopg.Error as exc:
        release_failed_connection(exc)
        raise


def pinned_addresses(params: dict[str, Any], within: float) -> dict[str, Any]:
    """`params` with each host name resolved within `within` seconds (`poll.names`) and pinned
    as `hostaddr`, so that neither psycopg nor libpq looks it up again, unbounded.

    As psycopg does it: a name with several addresses becomes one host entry per address, in
    the resolver's order; a name with none is left out while another host remains, and is the
    error (`names.Unresolved`) when none does. Socket directories and addresses pass as they
    are; a DSN that sets `hostaddr` itself is left alone. A DSN that names a `service` (or
    `PGSERVICE`) is read with its service file's entry, as libpq reads it (`service_entry`).
    """
    service = service_entry(params)

    def given(key: str, variable: str) -> str:
        # libpq's order: the DSN, then its service's entry, then the environment.
        return str(params.get(key) or service.get(key) or os.environ.get(variable) or "")

    hosts = given("host", "PGHOST")
    if not hosts or given("hostaddr", "PGHOSTADDR"):
        return params
    entries = hosts.split(",")
    ports = given("port", "PGPORT").split(",")
    if len(ports) == 1:
        ports *= len(entries)
    if len(ports) != len(entries):
        return params  # libpq's own error says what is wrong with the lists
    if all(_socket(host) or names.is_address(host) for host in entries):
        return params  # nothing to look up
    pinned: list[tuple[str, str, str]] = []
    failed: names.Unresolved | None = None
    for host, port in zip(entries, ports, strict=True):
        if _socket(host):
            pinned.append((host, "", port))  # an empty hostaddr: libpq reads the host entry
            continue
        try:
            pinned += [(host, address, port) for address in names.resolve(host, within)]
        except names.Unresolved as exc:
            failed = failed or exc
    if not pinned and failed is not None:
        raise failed
    result = {
        **params,
        "host": ",".join(h for h, _, _ in pinned),
        "hostaddr": ",".join(a for _, a, _ in pinned),
    }
    if any(p for _, _, p in pinned):
        result["port"] = ",".join(p for _, _, p in pinned)
    return result


# libpq's system-wide service file is `pg_service.conf` in PGSYSCONFDIR, else in the directory it
# was built with: /etc/postgresql-common for both the libpq bundled with psycopg[binary] and
# Debian's libpq5.
SYSCONFDIR = "/etc/postgresql-common"


def service_entry(params: dict[str, Any]) -> dict[str, str]:
    """The keywords of the DSN's service (`service`, else PGSERVICE), as libpq finds it: in the
    DSN's `servicefile` or PGSERVICEFILE or ~/.pg_service.conf, else in the system-wide
    pg_service.conf. Empty when there is no service, or no file holds it: libpq's own error then
    says so when it connects."""
    name = str(params.get("service") or os.environ.get("PGSERVICE") or "")
    if not name:
        return {}
    user = str(
        params.get("servicefile")
        or os.environ.get("PGSERVICEFILE")
        or Path("~/.pg_service.conf").expanduser()
    )
    system = Path(os.environ.get("PGSYSCONFDIR") or SYSCONFDIR) / "pg_service.conf"
    for path in (Path(user), system):
        entry = _service_in(path, name)
        if entry is not None:
            return entry
    return {}


def _service_in(path: Path, name: str) -> dict[str, str] | None:
    """The `[name]` group of a service file (`key=value` lines, `#` comments), or None when the
    file is absent, unreadable or has no such group."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    entry: dict[str, str] | None = None
    inside = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            if entry is not None:
                break  # the group ended: libpq reads only the first of that name
            inside = line.rstrip("]")[1:] == name
            if inside:
                entry = {}
            continue
        if inside and entry is not None and "=" in line:
            key, _, value = line.partition("=")
            entry[key.strip()] = value.strip()
    return entry


def _socket(host: str) -> bool:
    """Whether a host entry names a Unix socket (directory or abstract) or the default one."""
    return not host or host.startswith(("/", "@")) or host[1:2] == ":"


def release_failed_connection(exc: BaseException) -> None:
    """Close the socket a failed connect leaves behind, now rather than at the next GC.

    psycopg keeps the half-open libpq connection of a timed-out connect alive through the frames
    of the exception chain (cycles only the garbage collector breaks): against a black hole or a
    locked pg_database, sockets piled up and the server later finished the logins nobody waited
    for. Finishing the libpq connection and clearing the chain's frames closes it at once.
    """
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        pgconn = getattr(current, "pgconn", None)
        if pgconn is not None:
            with contextlib.suppress(Exception):
                pgconn.finish()
        if current.__traceback__ is not None:
            traceback.clear_frames(current.__traceback__)
        todo += [current.__context__, current.__cause__]


def can_list_waldir(conn: psycopg.Connection[Any]) -> bool:
    """Whether this session may run pg_ls_waldir()."""
    row = conn.execute(can_list_waldir_statement()).fetchone()
    return bool(row and row[0])


def session_poll_statement(conn: psycopg.Connection[Any]) -> str:
    """The poll statement for this session's server version and privileges.

    Costs one round trip (the privilege question): callers keep the answer for the life of the
    connection. Raises UnsupportedServer below PostgreSQL 13.
    """
    return poll_statement(conn.info.server_version, list_waldir=can_list_waldir(conn))


def fetch_rows(
    conn: psycopg.Connection[Any],
    statement: str,
    slot_pattern: str,
    consumer_app: str,
    slot_database: str | None = None,
    *,
    all_counters: bool = True,
) -> tuple[tuple[str, ...], list[tuple[Any, ...]]]:
    """Run the session's poll statement: one round trip; its column names and plain rows.

    Without `all_counters` only active slots' decoding counters are read (see poll.sql); the
    others come back as None, for `read_poll` to fill with their last known values.
    """
    params = {
        "slot_like": like_pattern(slot_pattern),
        "consumer_like": like_pattern(consumer_app),
        "slot_database": slot_database,
        "all_counters": all_counters,
    }
    with conn.cursor(row_factory=tuple_row) as cur:
        cur.execute(statement, params)
        description = cur.description  # built anew at each look
        if description is None:  # pragma: no cover - the statement is a SELECT
            raise SlotwatchError("the poll statement returned no rows")
        columns = tuple(column.name for column in description)
        rows = cur.fetchall()
    if not rows:  # pragma: no cover - the statement always returns at least one row
        raise SlotwatchError("the poll statement returned no row")
    return columns, rows


def fetch(
    conn: psycopg.Connection[Any], statement: str, slot_pattern: str, consumer_app: str
) -> tuple[ServerRow, tuple[SlotRow, ...], tuple[OtherSlotRow, ...]]:
    """One poll, parsed, with no counters carried from an earlier one (what `drop` reads)."""
    parsed = read_poll(*fetch_rows(conn, statement, slot_pattern, consumer_app))
    return parsed.server, parsed.slots, parsed.others


# Every this many polls (and on each new connection) the decoding counters of inactive slots are
# read too: decoding by SQL (pg_logical_slot_get_changes) between two polls moves them unseen.
ALL_COUNTERS_EVERY = 20


class TargetConnection:
    """One target's connection, opened lazily and reopened after failures."""

    def __init__(
        self,
        name: str,
        dsn: SecretStr,
        slot_pattern: str,
        consumer_app: str,
        *,
        connect_timeout: float,
        statement_timeout: float,
        slot_database: str | None = None,
    ) -> None:
        self.name = name
        self._dsn = dsn
        self._slot_pattern = slot_pattern
        self._consumer_app = consumer_app
        self._slot_database = slot_database
        self._connect_timeout = connect_timeout
        self._statement_timeout = statement_timeout
        self._conn: psycopg.Connection[Any] | None = None
        self._statement: str | None = None  # chosen once per connection
        self._counters: dict[str, Counters] = {}
        self._polls = 0  # on this connection
        self._read_all_counters = True

    def poll(self) -> PollResult:
        started = time.time()
        clock = time.monotonic()
        deadline: AnswerDeadline | None = None
        try:
            if self._conn is None or self._conn.closed or self._conn.broken:
                self.close()
                try:
                    self._conn = _open(
                        self._dsn, self._connect_timeout, self._statement_timeout, read_only=True
                    )
                    self._statement = None
                except (psycopg.OperationalError, names.Unresolved) as exc:
                    error = classify_error(exc, connecting=True)
                    return PollResult(self.name, started, time.monotonic() - clock, error=error)
            deadline = answer_deadline(self._conn, self._statement_timeout)
            with deadline:
                if self._statement is None:
                    self._statement = session_poll_statement(self._conn)
                    self._polls = 0
                    self._read_all_counters = True
                columns, rows = fetch_rows(
                    self._conn,
                    self._statement,
                    self._slot_pattern,
                    self._consumer_app,
                    self._slot_database,
                    all_counters=self._read_all_counters,
                )
                server, slots, others, self._counters, unknown = read_poll(
                    columns, rows, self._counters
                )
                self._polls += 1
                # PostgreSQL 13 has no counters: asking for them all changes nothing there.
                self._read_all_counters = unknown or self._polls % ALL_COUNTERS_EVERY == 0
        except (psycopg.Error, UnsupportedServer) as exc:
            # A query error leaves the connection usable, a lost one does not: start afresh.
            self.close()
            error = classify_error(exc)
            if deadline is not None and deadline.fired:
                error = no_answer(deadline)
            return PollResult(self.name, started, time.monotonic() - clock, error=error)
        except Exception as exc:  # noqa: BLE001 - a surprise (a document we cannot parse, a
            # driver bug) must still read as a failed poll: else slotwatch_up keeps the last 1.
            self.close()
            error = PollError("other", f"unexpected {type(exc).__name__}: {one_line(exc)}")
            return PollResult(self.name, started, time.monotonic() - clock, error=error)
        return PollResult(
            self.name, started, time.monotonic() - clock, server, slots, others=others
        )

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            # Closing a dead socket may complain; there is nothing left to do with it.
            with contextlib.suppress(psycopg.Error):
                conn.close()
