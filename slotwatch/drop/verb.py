"""The guarded drop of a slot (docs/contract.md §5 `drop`): read, judge, confirm, drop, audit.

The order is the safety argument:
1. Refusals that need no history (pattern, missing, standby, another database than the target's
   slot_database, synced/failover, active without `--terminate`) come from one poll, before any
   observation window.
2. The state comes from the running daemon's /status when it answers (it has the history a wedge
   needs); otherwise an active slot is watched for `--observe`, and an inactive one is judged
   from one poll (evidence.py).
3. Nothing changes without `--confirm`: the operator types the slot name at a terminal, or
   repeats it exactly as `--confirm=SLOT`. Never a pattern.
4. On the admin connection (execute.py): a per-slot advisory lock, one drop statement that
   re-checks the slot is still there, matching, in the target's database and free, and with
   `--terminate` terminate and retry until `--deadline`. Every round trip, from the first read
   on, has the poll's answer deadline: a silent server ends the drop (69), it never hangs it.
5. Every confirmed attempt leaves one audit record, whatever its outcome (audit.py).
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import replace
from typing import TextIO

from slotwatch.config.settings import Settings, Target
from slotwatch.drop import evidence
from slotwatch.drop import text as droptext
from slotwatch.drop.audit import Attempt, audited
from slotwatch.drop.evidence import Reading, Vanished
from slotwatch.drop.execute import AdminConnection, DeadlinePassed, OutcomeUnknown
from slotwatch.drop.guard import (
    PROTECTED_STATES,
    DropRequest,
    SlotFacts,
    Verdict,
    evaluate,
    fast_checks,
)
from slotwatch.errors import Refused, UsageError
from slotwatch.model import ServerRow, SlotRow
from slotwatch.poll.fetch import parse_http_url
from slotwatch.units import parse_duration

# What PostgreSQL accepts as a replication slot name (NAMEDATALEN - 1 characters).
SLOT_NAME = re.compile(r"[a-z0-9_]{1,63}")
# Longer waits than this are typos: an operator at a terminal does not wait hours for a drop.
MAX_WAIT = 3600.0


def check_arguments(args: argparse.Namespace) -> tuple[float, float]:
    """Refuse operator input that is not what it must be, as a usage error (64) that shows it
    escaped: a newline or an escape sequence typed into an argument must not forge output.
    Returns the --observe and --deadline seconds."""
    if args.slot is not None and not SLOT_NAME.fullmatch(args.slot):
        raise UsageError(
            f"SLOT {droptext.shown(args.slot)} is not a slot name (1 to 63 of a-z, 0-9 and _)"
        )
    if args.confirm is not None and args.confirm != "":
        if "%" in args.confirm:
            raise UsageError("--confirm takes one exact slot name, never a pattern")
        if not SLOT_NAME.fullmatch(args.confirm):
            raise UsageError(
                f"--confirm={droptext.shown(args.confirm)} is not a slot name "
                "(1 to 63 of a-z, 0-9 and _)"
            )
    if args.reason is not None and not args.reason.isprintable():
        raise UsageError("--reason must be one line of printable text (no control characters)")
    if args.daemon_url is not None:
        try:
            parse_http_url(args.daemon_url)
        except (ValueError, TypeError):
            raise UsageError(
                f"--daemon-url {droptext.shown(args.daemon_url)} is not an http:// URL "
                "(e.g. http://127.0.0.1:9847)"
            ) from None
    return _duration(args.observe, "--observe"), _duration(args.deadline, "--deadline")


def run_drop(args: argparse.Namespace, settings: Settings, target: Target) -> int:
    """The `drop` verb; returns 0 or raises a SlotwatchError carrying the exit code."""
    observe, deadline = check_arguments(args)
    interactive = sys.stdin.isatty()
    if args.confirm == "" and not interactive:
        raise UsageError(
            "--confirm without a slot name needs a terminal to type the name at; "
            "without one, repeat the name exactly: --confirm=SLOT"
        )
    if args.confirm is None:
        return DropRun(
            args, settings, target, observe=observe, deadline=deadline, attempt=None
        ).run()

    attempt = Attempt(
        target=target.name,
        slot=args.slot,
        reason=args.reason,
        flags={
            "confirm": "prompt" if args.confirm == "" else "argument",
            "terminate": bool(args.terminate),
            "force": bool(args.force),
            "observe_seconds": observe,
            "deadline_seconds": deadline,
        },
    )
    with audited(settings.audit_log, attempt):
        return DropRun(
            args, settings, target, observe=observe, deadline=deadline, attempt=attempt
        ).run()


def _duration(text: str, option: str) -> float:
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None
    if seconds > MAX_WAIT:
        raise UsageError(f"{option}: must be at most 1h")
    return seconds


class DropRun:
    """One run of the verb against one target; `attempt` is None for a dry run."""

    def __init__(
        self,
        args: argparse.Namespace,
        settings: Settings,
        target: Target,
        *,
        observe: float,
        deadline: float,
        attempt: Attempt | None,
        out: TextIO | None = None,
    ) -> None:
        self.args = args
        self.settings = settings
        self.target = target
        self.observe = observe
        self.deadline = deadline
        self.attempt = attempt
        self.out = out or sys.stdout
        self.admin = AdminConnection(
            target.admin_dsn or target.dsn,
            target,
            connect_timeout=settings.connect_timeout,
            statement_timeout=settings.statement_timeout,
            say=self._print,
        )

    def run(self) -> int:
        try:
            return self._run()
        finally:
            self.admin.close()

    def _run(self) -> int:
        slot: str | None = self.args.slot
        if slot is not None:
            # The pattern needs no database: refuse a typo before connecting anywhere.
            verdict = fast_checks(self._request(slot), SlotFacts())
            if not verdict.checks[0].passed:
                self._refuse(slot, verdict)
            if self.args.confirm and self.args.confirm != slot:
                self._mismatch(slot, self.args.confirm)

        server, rows = self.admin.read()
        if slot is None:
            slot = self._propose(server, rows)
            if self.args.confirm and self.args.confirm != slot:
                self._mismatch(slot, self.args.confirm)
        if self.attempt is not None:
            self.attempt.slot = slot
            self.attempt.server_version_num = server.version_num if server else None

        row = next((r for r in rows if r.name == slot), None)
        facts = evidence.facts(server, row)
        fast = fast_checks(self._request(slot), facts)
        if not fast.allowed:
            self._refuse(slot, fast)
        if server is None or row is None:  # pragma: no cover - the fast checks refused it
            raise Refused(f"refused to drop {slot}: it could not be read")
        try:
            reading = self._reading(server, row)
        except Vanished:
            return self._gone(slot)
        verdict = evaluate(self._request(slot), replace(facts, state=reading.state))
        self._print_lines(
            droptext.slot_report(
                slot,
                target=self.target.name,
                pattern=self.target.slot_pattern,
                server_version_num=server.version_num,
                reading=reading,
                verdict=verdict,
                deadline=self.deadline,
            )
        )
        if self.attempt is not None:
            self.attempt.state = reading.state.value
            self.attempt.state_source = reading.source
            self.attempt.note_figures(reading.document, reading.liveness)
            self.attempt.note_guard(verdict)
        if not verdict.allowed:
            raise Refused(f"refused to drop {slot}: " + "; ".join(verdict.reasons))
        if self.attempt is None:
            self._print(
                droptext.dry_run(
                    slot, terminate=bool(self.args.terminate), force=bool(self.args.force)
                )
            )
            return 0

        self.admin.check_privileges(terminate=bool(self.args.terminate) and bool(row.active))
        self._confirm(slot)
        return self._execute(slot)

    def _request(self, slot: str) -> DropRequest:
        return DropRequest(
            slot=slot,
            pattern=self.target.slot_pattern,
            terminate=bool(self.args.terminate),
            force=bool(self.args.force),
            reason=self.args.reason,
            slot_database=self.target.slot_database,
        )

    def _refuse(self, slot: str, verdict: Verdict) -> None:
        if self.attempt is not None:
            self.attempt.note_guard(verdict)
        self._print_lines(droptext.refusal(slot, self.target.name, verdict))
        raise Refused(f"refused to drop {slot}: " + "; ".join(verdict.reasons))

    def _mismatch(self, slot: str, confirm: str) -> None:
        raise Refused(
            f"--confirm={confirm} does not name the slot {slot}: it must repeat the slot name "
            "exactly; nothing was dropped"
        )

    # --- reading ----------------------------------------------------------------------------

    def _propose(self, server: ServerRow | None, rows: tuple[SlotRow, ...]) -> str:
        """No SLOT given: the one droppable slot, else refuse listing the candidates."""
        if server is None:
            raise Refused("the server is a standby (in recovery): drop slots on the primary")
        # Slots of another database than the target's slot_database are not its own: never
        # judged, never offered (the guard refuses them by name too).
        outside = [row for row in rows if not self.admin.in_scope(row)]
        rows = tuple(row for row in rows if self.admin.in_scope(row))
        notes = [droptext.outside_database(outside, self.target.slot_database)] if outside else []
        if not rows:
            self._print_lines(notes)
            scope = (
                f" in slot_database {droptext.shown(self.target.slot_database)}"
                if self.target.slot_database is not None
                else ""
            )
            raise Refused(
                f"no slot matches the pattern '{self.target.slot_pattern}'{scope} on target "
                f"{self.target.name}: nothing to drop"
            )
        daemon = evidence.daemon_view(self._daemon_url(), self.target.name)
        lines, droppable = [], []
        for row in rows:
            reading = evidence.daemon_reading(daemon, row.name) or self._one_poll(server, row)
            ok = (
                reading.state not in PROTECTED_STATES
                and not row.synced
                and not row.failover
                and (not row.active or self.args.terminate)
            )
            if ok:
                droppable.append(row.name)
            lines.append(droptext.candidate(row, reading, ok))
        if len(droppable) == 1:
            self._print(f"No SLOT given; candidates matching '{self.target.slot_pattern}':")
            self._print_lines([*lines, *notes])
            self._print(f"Proposing the only droppable one: {droppable[0]}")
            return droppable[0]
        self._print(f"Candidates matching '{self.target.slot_pattern}':")
        self._print_lines([*lines, *notes])
        raise Refused(
            f"{len(droppable)} of {len(rows)} matching slots are droppable: name the slot "
            "(slotwatch drop SLOT)"
        )

    def _reading(self, server: ServerRow, row: SlotRow) -> Reading:
        daemon = evidence.daemon_view(self._daemon_url(), self.target.name)
        reading = evidence.daemon_reading(daemon, row.name)
        if reading is not None:
            return reading
        if row.active:
            self._print(droptext.watching(self._daemon_url(), self.observe))
            return evidence.observed_reading(
                self.target, row.name, self.observe, self.admin.poll_result, self._liveness
            )
        return self._one_poll(server, row)

    def _daemon_url(self) -> str:
        return evidence.daemon_url(self.args.daemon_url, self.settings.listen)

    def _one_poll(self, server: ServerRow, row: SlotRow) -> Reading:
        return evidence.one_poll_reading(self.target, server, row, self._liveness())

    def _liveness(self) -> str:
        return evidence.probe_text(self.target, self.settings.probe_timeout)

    # --- acting -----------------------------------------------------------------------------

    def _confirm(self, slot: str) -> None:
        if self.args.confirm != "":
            return  # --confirm=SLOT was checked against the slot already
        self.out.write(droptext.prompt(slot))
        self.out.flush()
        try:
            typed = sys.stdin.readline()
        except (OSError, ValueError):
            typed = ""
        if typed.strip() != slot:
            if self.attempt is not None:
                self.attempt.outcome = "aborted"
            raise Refused(f"aborted: the name typed does not match {slot}; nothing was dropped")

    def _execute(self, slot: str) -> int:
        try:
            outcome = self.admin.drop(
                slot, terminate=bool(self.args.terminate), deadline=self.deadline
            )
        except DeadlinePassed:
            if self.attempt is not None:
                self.attempt.outcome = "deadline"
            raise
        except OutcomeUnknown:
            if self.attempt is not None:
                self.attempt.outcome = "unknown"  # the slot may be gone: never "unreachable"
            raise
        finally:
            if self.attempt is not None:
                self.attempt.drop_attempts = self.admin.drop_attempts
                self.attempt.terminated_pids = list(self.admin.terminated_pids)
        if outcome == "already_gone":
            return self._gone(slot)
        if self.attempt is not None:
            self.attempt.outcome = "dropped"
        self._print_lines(droptext.dropped(slot, self.target.name))
        return 0

    def _gone(self, slot: str) -> int:
        if self.attempt is not None:
            self.attempt.outcome = "already_gone"
        self._print(droptext.already_gone(slot))
        return 0

    # --- showing ----------------------------------------------------------------------------

    def _print(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def _print_lines(self, lines: list[str]) -> None:
        for line in lines:
            self._print(line)
