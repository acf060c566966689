"""The drop on the admin connection: privileges, the slot's lock, terminate, drop until a deadline.

A session advisory lock keyed on the slot name serialises concurrent drops. The drop statement
itself re-checks that the slot exists, matches, is in the target's slot_database and is free, so
nothing can change between the last check and the drop; with `terminate` each new holder is sent
SIGTERM once and the drop retried with a doubling back-off (2 ms to 100 ms) while it exits, until
the deadline. Every round trip waits for its answer at most statement_timeout plus the poll's
grace (`db.answer_deadline`, kept by the poll's watchdog): a server that accepted the connection
and went silent ends the drop with DatabaseUnreachable, never a hang (OutcomeUnknown when it was
the drop statement that went unanswered: the slot may be gone). Outcomes are returned or
raised as SlotwatchErrors; what to print is left to the caller, except the progress lines handed
to `say`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any, Literal

import psycopg
import psycopg.conninfo
import psycopg.errors
from pydantic import SecretStr

from slotwatch.config.settings import Target
from slotwatch.drop.guard import DropRequest, SlotFacts, database_check
from slotwatch.errors import (
    DatabaseUnreachable,
    InterruptedUnknown,
    PermissionDenied,
    Refused,
    UnsupportedServer,
)
from slotwatch.model import PollResult, ServerRow, SlotRow
from slotwatch.patterns import like_pattern
from slotwatch.poll import db
from slotwatch.poll.failures import one_line
from slotwatch.poll.queries import (
    MIN_VERSION,
    drop_lock_statement,
    drop_privileges_statement,
    drop_statement,
    drop_unlock_statement,
    terminate_statement,
)
from slotwatch.units import format_duration

# After a SIGTERM the drop is retried after FIRST_PAUSE, then after twice as long each time up
# to MAX_PAUSE: a walsender exits within milliseconds, and a consumer restarting on the slot needs
# a new process, connection and START_REPLICATION, so the first quick tries win the race; one that
# never exits (a stopped process) costs ten statements a second, not a busy loop.
FIRST_PAUSE = 0.002
MAX_PAUSE = 0.1
LOCK_GRACE = 10.0  # seconds past the deadline a concurrent drop may keep the slot's lock

Outcome = Literal["dropped", "already_gone"]


class DeadlinePassed(Refused):
    """The walsender kept the slot until the deadline: nothing was dropped."""


class OutcomeUnknown(DatabaseUnreachable):
    """The drop statement was sent and its answer never came (no answer by the deadline, or
    the connection lost): the server may have dropped the slot. Exit 69, audit outcome
    `unknown`."""


class AdminConnection:
    """The one connection a drop reads and acts on, opened on first use.

    `drop_attempts` and `terminated_pids` count what was done, for the audit record, whatever
    the outcome.
    """

    def __init__(
        self,
        dsn: SecretStr,
        target: Target,
        *,
        connect_timeout: float,
        statement_timeout: float,
        say: Callable[[str], None],
    ) -> None:
        self.dsn = dsn
        self.target = target
        self.connect_timeout = connect_timeout
        self.statement_timeout = statement_timeout
        self.say = say  # progress the operator sees while the drop waits or terminates
        self.like = like_pattern(target.slot_pattern)
        self.conn: psycopg.Connection[Any] | None = None
        self.version_num = 0
        self.statement: str | None = None  # the poll statement, chosen once per connection
        self.drop_attempts = 0
        self.terminated_pids: list[int] = []

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(psycopg.Error):
                self.conn.close()

    @property
    def params(self) -> dict[str, str | None]:
        """What the drop and terminate statements re-check the slot against, besides its name."""
        return {"slot_like": self.like, "slot_database": self.target.slot_database}

    def _connection(self) -> psycopg.Connection[Any]:
        if self.conn is None or self.conn.closed:
            self.conn = db.connect(
                self.dsn,
                connect_timeout=self.connect_timeout,
                statement_timeout=self.statement_timeout,
                read_only=False,
            )
            self.version_num = self.conn.info.server_version
            self.statement = None
        return self.conn

    def role(self) -> str:
        """The role the admin DSN names, for the GRANT an error message suggests."""
        try:
            return str(psycopg.conninfo.conninfo_to_dict(self.dsn.get_secret_value())["user"])
        except (KeyError, psycopg.ProgrammingError, UnicodeDecodeError):
            return "<role>"

    @contextlib.contextmanager
    def _round_trip(
        self,
        doing: str,
        denied: str,
        *,
        conn: psycopg.Connection[Any] | None = None,
        unanswered: str = "nothing was dropped",
        changes: bool = False,
    ) -> Iterator[psycopg.Connection[Any]]:
        """One round trip on the connection (`conn`, else the one opened on first use), under
        the poll's answer deadline; a failure as a one-line error.

        A missing privilege names what to grant (`denied` is a template with {error}, the
        server's message, and {role}); no answer by the deadline says so, then `unanswered`.
        A round trip that `changes` the server and lost its answer (the deadline, or the
        connection gone: an error the server did not send) raises OutcomeUnknown, with
        `unanswered` after the error as well.
        """
        conn = conn if conn is not None else self._connection()
        deadline = db.answer_deadline(conn, self.statement_timeout)
        try:
            with deadline:
                yield conn
        except psycopg.errors.InsufficientPrivilege as exc:
            message = denied.format(error=one_line(exc), role=self.role())
            raise PermissionDenied(message) from None
        except psycopg.Error as exc:
            lost = deadline.fired or exc.sqlstate is None  # no answer from the server itself
            unreachable = OutcomeUnknown if changes and lost else DatabaseUnreachable
            if deadline.fired:
                silent = db.no_answer(deadline).message
                raise unreachable(f"{doing}: {silent}; {unanswered}") from None
            after = f"; {unanswered}" if changes and lost else ""
            raise unreachable(f"{doing} failed: {one_line(exc)}{after}") from None

    # --- reading ----------------------------------------------------------------------------

    def read(self) -> tuple[ServerRow | None, tuple[SlotRow, ...]]:
        """One poll on the admin connection; (None, ()) means the server is a standby.

        The matching slots of every database, whatever the target's slot_database: the guard
        names the database of a slot that is not the target's (`in_scope` keeps those out of
        what is judged or offered).
        """
        with self._round_trip(
            "reading the slots", "cannot read the slots: {error}; GRANT pg_monitor TO {role}"
        ) as conn:
            try:
                if self.statement is None:
                    # Once per connection: a watch window reads every second.
                    self.statement = db.session_poll_statement(conn)
                server, slots, _ = db.fetch(
                    conn, self.statement, self.target.slot_pattern, self.target.consumer_app
                )
            except UnsupportedServer:
                if self.version_num < MIN_VERSION:
                    raise
                return None, ()
            return server, slots

    def poll_result(self) -> PollResult:
        """One poll as the daemon's store records it (the target's slots only); a standby
        refuses the drop."""
        started, clock = time.time(), time.monotonic()
        server, rows = self.read()
        if server is None:
            raise Refused("the server became a standby (in recovery) during the drop")
        mine = tuple(row for row in rows if self.in_scope(row))
        return PollResult(self.target.name, started, time.monotonic() - clock, server, mine)

    def in_scope(self, row: SlotRow) -> bool:
        """Whether the slot is in the target's slot_database (the guard's database check)."""
        request = DropRequest(
            row.name, self.target.slot_pattern, slot_database=self.target.slot_database
        )
        return database_check(request, SlotFacts(database=row.database)).passed

    # --- acting -----------------------------------------------------------------------------

    def check_privileges(self, *, terminate: bool) -> None:
        """Refuse before the prompt when the role could not drop (or terminate) at all."""
        with self._round_trip(
            "reading the role's privileges", "cannot read the role's privileges: {error}"
        ) as conn:
            row = conn.execute(drop_privileges_statement()).fetchone()
        if row is None:  # pragma: no cover - current_user always has a pg_roles row
            return
        role, superuser, replication, signal_backend = row
        missing = []
        if not (superuser or replication):
            missing.append(
                f"ALTER ROLE {role} REPLICATION  (pg_drop_replication_slot needs the "
                "REPLICATION attribute)"
            )
        if terminate and not (superuser or signal_backend):
            missing.append(f"GRANT pg_signal_backend TO {role}  (to terminate the walsender)")
        if missing:
            raise PermissionDenied(
                f"role {role} may not drop this slot; as an administrator run: "
                + "; ".join(missing)
                + " (or set SLOTWATCH_ADMIN_DSN to a role that has it); nothing was dropped"
            )

    def drop(self, slot: str, *, terminate: bool, deadline: float) -> Outcome:
        """Drop `slot` under its lock, terminating and retrying until `deadline` seconds."""
        # The advisory lock is the session's: the lock, the drops, terminate and the unlock are
        # all sent on this one connection.
        conn = self._connection()
        until = time.monotonic() + deadline
        self._lock(conn, slot, until + LOCK_GRACE)
        try:
            return self._drop_loop(conn, slot, until, terminate=terminate, deadline=deadline)
        except KeyboardInterrupt:
            # The session's end releases the lock: Ctrl-C waits for no further round trip.
            self.close()
            raise
        finally:
            # So does a connection lost; an unlock that fails changes nothing.
            with (
                contextlib.suppress(DatabaseUnreachable, PermissionDenied),
                self._round_trip("releasing the drop lock", "{error}", conn=conn) as unlocking,
            ):
                if not conn.closed:
                    unlocking.execute(drop_unlock_statement(), {"slot": slot})

    def _lock(self, conn: psycopg.Connection[Any], slot: str, until: float) -> None:
        waited = False
        while True:
            with self._round_trip(
                "taking the slot's drop lock", "cannot take the drop lock: {error}", conn=conn
            ):
                row = conn.execute(drop_lock_statement(), {"slot": slot}).fetchone()
            if row is not None and row[0]:
                return
            if not waited:
                self.say("Another slotwatch drop of this slot is running; waiting for it...")
                waited = True
            if time.monotonic() >= until:
                raise Refused(
                    f"another slotwatch drop of {slot} held its lock past the deadline; "
                    "nothing was dropped"
                )
            time.sleep(0.1)

    def _drop_loop(
        self,
        conn: psycopg.Connection[Any],
        slot: str,
        until: float,
        *,
        terminate: bool,
        deadline: float,
    ) -> Outcome:
        params = {"slot": slot, **self.params}
        holders: list[int] = []
        signals = _Signals(self.say)
        pause = FIRST_PAUSE
        while True:
            dropped = self._try_drop(conn, params)
            if dropped is True:
                signals.gone_except(None)
                return "dropped"
            server, rows = self.read()
            row = next((r for r in rows if r.name == slot), None)
            if dropped is None or (server is not None and row is None):
                signals.gone_except(None)
                return "already_gone"
            if server is None:
                raise Refused("the server became a standby (in recovery): nothing was dropped")
            if row is None:  # pragma: no cover - handled as gone above
                return "already_gone"
            if not self.in_scope(row):
                # Dropped and made again, in another database: no longer this target's slot.
                raise Refused(
                    f"{slot} is now a slot of another database than the target's "
                    "slot_database; nothing was dropped"
                )
            if not row.active:
                if row.synced or row.failover:
                    raise Refused(f"{slot} became a synced/failover slot; nothing was dropped")
                signals.gone_except(None)
                if time.monotonic() >= until:
                    raise DeadlinePassed(_deadline_message(slot, holders, deadline, signals))
                continue  # released between the drop and the read: try again at once
            pid = row.active_pid
            if pid is not None and pid not in holders:
                holders.append(pid)
            if not terminate:
                raise Refused(
                    f"a walsender (pid {pid}) took the slot meanwhile; nothing was "
                    "dropped (add --terminate to end it)"
                )
            signals.gone_except(pid)
            if time.monotonic() >= until:
                raise DeadlinePassed(_deadline_message(slot, holders, deadline, signals))
            if pid is not None and not signals.sent_to(pid):
                self._terminate(conn, params, signals)
                pause = FIRST_PAUSE  # it may exit within milliseconds: look again soon
            elif pid is not None:
                signals.still_running(pid)
            # Back off, doubling to MAX_PAUSE: a walsender that takes long to exit (or never
            # does, being stopped) must not turn the wait into thousands of statements.
            time.sleep(max(0.0, min(pause, until - time.monotonic())))
            pause = min(pause * 2, MAX_PAUSE)

    def _try_drop(
        self, conn: psycopg.Connection[Any], params: dict[str, str | None]
    ) -> bool | None:
        """True dropped, False not (held or changed), None: gone (someone else dropped it)."""
        self.drop_attempts += 1
        with self._round_trip(
            "the drop",
            "{error}: ALTER ROLE {role} REPLICATION; nothing was dropped",
            conn=conn,
            # The statement may have reached the server and dropped the slot before it froze.
            unanswered="whether the slot was dropped is not known: look at pg_replication_slots "
            "before running the drop again",
            changes=True,
        ):
            try:
                rows = conn.execute(drop_statement(self.version_num), params).fetchall()
            except KeyboardInterrupt:
                # psycopg cancels the statement, which may have run already.
                raise InterruptedUnknown(
                    "during the drop statement; whether the slot was dropped is not known: look "
                    "at pg_replication_slots before running the drop again"
                ) from None
            except psycopg.errors.UndefinedObject:
                return None  # 42704: dropped by someone else between our scan and our call
            except psycopg.errors.ObjectInUse:
                return False  # 55006: a walsender took it between our scan and our call
        return len(rows) > 0

    def _terminate(
        self, conn: psycopg.Connection[Any], params: dict[str, str | None], signals: _Signals
    ) -> None:
        with self._round_trip(
            "terminating the walsender",
            "{error}: GRANT pg_signal_backend TO {role} (a walsender of a superuser can only be "
            "terminated by a superuser); nothing was dropped",
            conn=conn,
            unanswered="nothing was dropped (the walsender may have been sent SIGTERM)",
        ):
            rows = conn.execute(terminate_statement(), params).fetchall()
        for pid, signalled in rows:
            self.terminated_pids.append(int(pid))
            signals.sent(int(pid), bool(signalled))


class _Signals:
    """SIGTERMs sent during one drop, and what became of each: the operator's progress lines.

    A walsender is "terminated" only once it has let go of the slot; until then it is one that
    was sent SIGTERM and is still running, which is said at 1 s, 2 s, 4 s... after the signal.
    """

    def __init__(self, say: Callable[[str], None]) -> None:
        self._say = say
        self._sent: dict[int, float] = {}  # pid -> monotonic time of its SIGTERM
        self._next_note: dict[int, float] = {}
        self._refused: set[int] = set()
        self.running: dict[int, float] = {}  # pid -> seconds since SIGTERM, while it holds on

    def sent_to(self, pid: int) -> bool:
        return pid in self._sent

    def sent(self, pid: int, accepted: bool) -> None:
        self._sent[pid] = time.monotonic()
        self._next_note[pid] = 1.0
        if accepted:
            self._say(f"Sent SIGTERM to walsender pid {pid}")
        else:
            self._refused.add(pid)
            self._say(f"Sent SIGTERM to walsender pid {pid}, but the server refused to signal it")

    def still_running(self, pid: int) -> None:
        waited = time.monotonic() - self._sent[pid]
        self.running[pid] = waited
        if waited >= self._next_note[pid]:
            self._next_note[pid] *= 2
            self._say(f"Sent SIGTERM to pid {pid}; still running after {waited:.1f}s")

    def gone_except(self, holder: int | None) -> None:
        """Every signalled pid other than `holder` has let go of the slot: say so, once."""
        for pid in [p for p in self._sent if p != holder and p in self._next_note]:
            waited = time.monotonic() - self._sent[pid]
            del self._next_note[pid]
            self.running.pop(pid, None)
            self._say(f"Walsender pid {pid} is gone, {waited:.1f}s after SIGTERM")


def _deadline_message(slot: str, holders: list[int], deadline: float, signals: _Signals) -> str:
    stuck = [pid for pid in holders if pid in signals.running]
    if len(holders) == 1 and stuck:
        pid = stuck[0]
        return (
            f"gave up after {format_duration(deadline)} (--deadline): walsender pid {pid} was "
            f"sent SIGTERM {signals.running[pid]:.1f}s ago and is still running; {slot} was NOT "
            "dropped. A walsender that does not act on SIGTERM is usually stopped (SIGSTOP, a "
            "debugger, a frozen container or host): it acts on the signal only once it is "
            f"continued. On the database host, `ps -o stat= -p {pid}` shows T for a stopped "
            f"process; continue it (kill -CONT {pid}) and it exits, then run the drop again"
        )
    who = (
        f"walsender pid {holders[0]} did not let go"
        if len(holders) == 1
        else f"the consumer kept reattaching (walsender pids {', '.join(map(str, holders))})"
    )
    return (
        f"gave up after {format_duration(deadline)} (--deadline): {who}; {slot} was "
        "NOT dropped. Stop PowerSync (or the consumer holding the slot) first, then run the "
        "drop again"
    )
