"""What `slotwatch drop` tells the operator, as plain lines: pure, no I/O."""

from __future__ import annotations

from slotwatch.drop import guard
from slotwatch.drop.evidence import Reading
from slotwatch.drop.guard import Verdict
from slotwatch.model import SlotRow
from slotwatch.units import format_bytes, format_duration

NEXT_STEPS = (
    "What happens next: the WAL this slot held is freed at the next checkpoint "
    "(run CHECKPOINT to hurry it). PowerSync notices the slot is missing, creates a new one "
    "and copies every synced table again (an initial snapshot: expect load on the database and "
    "stale data for clients until it catches up); `slotwatch run` will show the new slot as "
    "snapshotting, then healthy."
)

# Text from outside as it may be echoed; the guard escapes what it names with it too.
shown = guard.shown


def checks(verdict: Verdict) -> list[str]:
    """The guard's checks, one line each, failures in capitals."""
    return ["Guard:"] + [
        f"  [{'pass' if check.passed else 'FAIL'}] {check.detail}" for check in verdict.checks
    ]


def refusal(slot: str, target: str, verdict: Verdict) -> list[str]:
    return [f"slot {slot} on target {target}:", *checks(verdict)]


def candidate(row: SlotRow, reading: Reading, droppable: bool) -> str:
    """One line of the list shown when no SLOT is given."""
    return (
        f"  {row.name}: {reading.state.value}{', active' if row.active else ''}"
        f" ({reading.source}){'  <- droppable' if droppable else ''}"
    )


def outside_database(rows: list[SlotRow], slot_database: str | None) -> str:
    """The matching slots of other databases, named once and never offered."""
    where = ", ".join(
        f"{row.name} (database {shown(row.database) if row.database else 'none: physical'})"
        for row in rows
    )
    return (
        f"Not offered: {len(rows)} matching slot{'s' if len(rows) != 1 else ''} outside the "
        f"target's slot_database {shown(slot_database or '')}: {where}"
    )


def slot_report(
    slot: str,
    *,
    target: str,
    pattern: str,
    server_version_num: int,
    reading: Reading,
    verdict: Verdict,
    deadline: float,
) -> list[str]:
    """The slot's state, figures and guard, and what --confirm would do."""
    d = reading.document
    major = server_version_num // 10000
    lines = [f"Slot {slot} on target {target} (PostgreSQL {major})"]
    lines.append(f"  state: {d['state']}  ({reading.source})")
    lines.extend(f"    - {reason}" for reason in d["reasons"])
    pid = d.get("walsender_pid")
    sender = (
        f"pid {pid} ({d.get('walsender_application_name') or 'no application_name'})"
        if pid
        else "none"
    )
    lines.append(
        f"  lag {format_bytes(d.get('lag_bytes'))}, retained WAL "
        f"{format_bytes(d.get('retained_wal_bytes'))}, wal_status {d.get('wal_status') or '-'}"
        f", safe_wal_size {format_bytes(d.get('safe_wal_size_bytes'))}, invalidation ETA "
        f"{format_duration(d.get('invalidation_eta_seconds'))}"
    )
    lines.append(f"  walsender: {sender}; liveness: {reading.liveness}")
    lines.extend(checks(verdict))
    if verdict.allowed:
        action = (
            f"terminate the walsender holding the slot (now {sender}) with SIGTERM, then drop "
            "the slot once it has let go, retrying with a back-off for up to "
            f"{format_duration(deadline)} if the consumer reattaches or the walsender is slow "
            "to exit"
            if d.get("active")
            else "drop the slot"
        )
        lines.append(
            f"Action with --confirm: {action}, with one statement that drops it only if "
            f"it still exists, still matches '{pattern}' and no walsender holds it."
        )
    return lines


def watching(url: str, window: float) -> str:
    return (
        f"No daemon answered at {url}; watching the slot for "
        f"{format_duration(window)} (--observe)..."
    )


def dry_run(slot: str, *, terminate: bool, force: bool) -> str:
    return (
        f"Dry run: nothing was changed. To do it: slotwatch drop {slot} --confirm"
        f"{' --terminate' if terminate else ''}"
        f"{' --force --reason ...' if force else ''}"
        " (you will type the slot name), or --confirm=SLOT without a terminal."
    )


def prompt(slot: str) -> str:
    return f"Type the slot name to drop it ({len(slot)} characters), or anything else to abort: "


def dropped(slot: str, target: str) -> list[str]:
    return [f"Dropped slot {slot} on target {target}.", NEXT_STEPS]


def already_gone(slot: str) -> str:
    return (
        f"Slot {slot} is already gone: something else dropped it meanwhile (another "
        "slotwatch drop, or its consumer). Nothing was dropped by this run."
    )
