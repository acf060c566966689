"""Human and machine views of a snapshot: the /status document, the status table, check's line."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import Any

from slotwatch import __version__
from slotwatch.errors import escaped
from slotwatch.model import INF, OtherSlotView, SlotState, SlotView
from slotwatch.serve.store import Snapshot, TargetView
from slotwatch.units import format_bytes, format_duration


def lsn_text(value: int | None) -> str | None:
    """An LSN as PostgreSQL prints it (`16/B374D848`)."""
    if value is None:
        return None
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def _finite(value: float | None) -> float | None:
    # JSON has no Infinity: null means "not shrinking / unlimited / unknown".
    if value is None or math.isinf(value) or math.isnan(value):
        return None
    return round(value, 3)


def slot_document(view: SlotView) -> dict[str, Any]:
    row, a = view.row, view.assessment
    return {
        "slot": row.name,
        "state": a.state.value,
        "reasons": list(a.reasons),
        "active": row.active,
        "walsender_pid": row.sender_pid or row.active_pid,
        "walsender_application_name": row.sender_application_name,
        "plugin": row.plugin,
        "database": row.database,
        "slot_type": row.slot_type,
        "wal_status": row.wal_status,
        "lag_bytes": a.lag_bytes,
        "retained_wal_bytes": a.retained_wal_bytes,
        "safe_wal_size_bytes": row.safe_wal_size,
        "wal_budget_bytes": a.wal_budget_bytes,
        "wal_budget_ratio": _finite(a.wal_budget_ratio),
        "flush_stall_seconds": _finite(a.flush_stall_seconds),
        "inactive_seconds": _finite(a.inactive_seconds),
        "invalidation_eta_seconds": _finite(a.invalidation_eta_seconds),
        "wal_rate_bytes_per_second": _finite(a.wal_rate_bytes_per_second),
        "sent_lag_bytes": a.sent_lag_bytes,
        "catalog_xmin_age": row.catalog_xmin_age,
        "confirmed_flush_lsn": lsn_text(row.confirmed_flush_lsn),
        "restart_lsn": lsn_text(row.restart_lsn),
        "invalidation_reason": row.invalidation_reason,
        "synced": row.synced,
        "failover": row.failover,
        "temporary": row.temporary,
        "consumer_busy": row.consumer_busy,
    }


def other_slot_document(view: OtherSlotView) -> dict[str, Any]:
    row = view.row
    return {
        "slot": row.name,
        "owner": view.owner,
        "slot_type": row.slot_type,
        "plugin": row.plugin,
        "database": row.database,
        "active": row.active,
        "wal_status": row.wal_status,
        "retained_wal_bytes": view.retained_wal_bytes,
        "inactive_seconds": _finite(view.inactive_seconds),
        "restart_lsn": lsn_text(row.restart_lsn),
    }


def target_document(view: TargetView) -> dict[str, Any]:
    poll = view.last_poll
    server = view.server
    probe = view.probe
    return {
        "target": view.name,
        "up": view.up,
        "slot_pattern": view.slot_pattern,
        "last_poll_at": _iso(poll.started_at) if poll else None,
        "last_success_at": _iso(view.last_success),
        "poll_duration_seconds": _finite(poll.duration) if poll else None,
        "error": (
            {"reason": poll.error.reason, "message": poll.error.message}
            if poll is not None and poll.error is not None
            else None
        ),
        "server": (
            {
                "version_num": server.version_num,
                "current_lsn": lsn_text(server.current_lsn),
                "max_slot_wal_keep_size_bytes": server.max_slot_wal_keep_size,
                "wal_directory_bytes": server.wal_directory_bytes,
                "wal_sender_timeout_seconds": server.wal_sender_timeout,
                "wal_rate_bytes_per_second": _finite(view.wal_rate),
                "wal_retained_bytes": server.wal_retained_bytes,
                "wal_retained_by": server.oldest_restart_slot,
            }
            if server is not None
            else None
        ),
        "slot_database": view.slot_database,
        "matched_slots": len(view.slots) if view.up else None,
        "liveness": (
            {
                "probe": view.probe_name,
                "url": probe.url,
                "up": probe.up,
                "status_code": probe.status_code,
                "error": probe.error,
                "touched_age_seconds": _finite(probe.touched_age),
                "checked_at": _iso(probe.checked_at),
            }
            if probe is not None
            else None
        ),
        "consumer": consumer_document(view) if view.consumer_enabled else None,
        "slots": [slot_document(slot) for slot in view.slots],
        # Slots not matching the pattern: counted, and the top K by retained WAL listed.
        "other_slots": (
            {
                "active": view.others.active,
                "inactive": view.others.inactive,
                "top": [other_slot_document(other) for other in view.others.top],
            }
            if view.up
            else None
        ),
    }


def consumer_document(view: TargetView) -> dict[str, Any] | None:
    """The consumer's own account (its metrics endpoint), as the last reading left it."""
    account = view.consumer
    if account is None:
        return None
    r = account.reading
    age = max(0.0, r.checked_at - account.progress_at) if account.progress_at is not None else None
    return {
        "url": r.url,
        "up": r.up,
        "error": r.error,
        "checked_at": _iso(r.checked_at),
        "duration_seconds": _finite(r.duration),
        "rows_replicated_total": r.rows,
        "data_replicated_bytes_total": r.data_bytes,
        "transactions_replicated_total": r.transactions,
        "chunks_replicated_total": r.chunks,
        "replication_lag_seconds": r.lag_seconds,
        "applying_rows": account.rising,
        "progress_age_seconds": _finite(age),
    }


def consumer_text(view: TargetView) -> str | None:
    """One line for `slotwatch status`: what the consumer's own metrics say."""
    if not view.consumer_enabled:
        return None
    account = view.consumer
    if account is None:
        return "consumer metrics: not read yet"
    r = account.reading
    if not r.up:
        return f"consumer metrics: down ({r.error})"
    if r.rows is None:
        rows = "no powersync_rows_replicated_total"
    elif account.rising:
        rows = (
            f"rows_replicated {r.rows:.0f}, rose by {account.rose_by:.0f} in "
            f"{format_duration(account.rose_over)}: applying changes"
        )
    else:
        rows = f"rows_replicated {r.rows:.0f}, not seen rising"
    lag = (
        f"; PowerSync's own replication lag {format_duration(r.lag_seconds)}"
        if r.lag_seconds is not None
        else ""
    )
    return f"consumer metrics: up, {rows}{lag}"


def status_document(snapshot: Snapshot) -> dict[str, Any]:
    return {
        "slotwatch_version": __version__,
        "generated_at": _iso(time.time()),
        "targets": [target_document(view) for view in snapshot.targets],
    }


def status_table(snapshot: Snapshot) -> str:
    """One line per slot, for a terminal; reasons follow indented."""
    header = (
        "TARGET",
        "SLOT",
        "STATE",
        "LAG",
        "RETAINED",
        "WAL_STATUS",
        "SAFE_WAL",
        "ETA",
        "PROBE",
    )
    rows: list[tuple[str, ...]] = []
    notes: list[str] = []
    for view in snapshot.targets:
        probe = _probe_text(view)
        consumer = consumer_text(view)
        if consumer is not None:
            notes.append(f"  {view.name}: {consumer}")
        if not view.up:
            error = view.last_poll.error if view.last_poll else None
            message = f"{error.reason}: {error.message}" if error else "not polled yet"
            rows.append((view.name, "-", "DOWN", "-", "-", "-", "-", "-", probe))
            notes.append(f"  {view.name}: {message}")
            continue
        if not view.slots:
            rows.append((view.name, "-", "MISSING", "-", "-", "-", "-", "-", probe))
            notes.append(f"  {view.name}: no slot matches {view.slot_pattern!r}")
        for slot in view.slots:
            a = slot.assessment
            rows.append(
                (
                    view.name,
                    slot.row.name,
                    a.state.value,
                    format_bytes(a.lag_bytes),
                    format_bytes(a.retained_wal_bytes),
                    slot.row.wal_status or "-",
                    format_bytes(slot.row.safe_wal_size),
                    format_duration(a.invalidation_eta_seconds),
                    probe,
                )
            )
            notes.extend(f"  {slot.row.name}: {reason}" for reason in a.reasons)
    return "\n".join([*_aligned(header, rows), *notes, *_other_slots_table(snapshot)])


def _aligned(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *rows]
    ]


def _other_inactive(other: OtherSlotView) -> str:
    if other.row.active:
        return "-"
    if other.row.server_inactive_seconds is None and other.inactive_seconds == 0:
        return "unknown"  # before PostgreSQL 17 one poll cannot tell; the daemon's clock can
    return format_duration(other.inactive_seconds)


def _other_slots_table(snapshot: Snapshot) -> list[str]:
    """Slots that do not match the pattern, in their own section, and who holds the WAL."""
    header = ("TARGET", "OTHER_SLOT", "OWNER", "TYPE", "ACTIVE", "RETAINED", "INACTIVE")
    rows: list[tuple[str, ...]] = []
    notes: list[str] = []
    for view in snapshot.targets:
        if not view.up or view.server is None:
            continue
        others = view.others
        for other in others.top:
            rows.append(
                (
                    view.name,
                    other.row.name,
                    other.owner,
                    other.row.slot_type,
                    "yes" if other.row.active else "no",
                    format_bytes(other.retained_wal_bytes),
                    _other_inactive(other),
                )
            )
        count = others.active + others.inactive
        shown = f"; {len(others.top)} shown" if count > len(others.top) else ""
        if count:
            notes.append(
                f"  {view.name}: {count} other slots ({others.active} active,"
                f" {others.inactive} inactive){shown}"
            )
        if view.server.oldest_restart_slot is not None:
            notes.append(
                f"  {view.name}: the oldest WAL ({format_bytes(view.server.wal_retained_bytes)})"
                f" is held by {view.server.oldest_restart_slot}"
            )
    if not rows and not notes:
        return []
    return ["", *(_aligned(header, rows) if rows else []), *notes]


def _probe_text(view: TargetView) -> str:
    if not view.probe_enabled:
        return "off"
    if view.probe is None:
        return "-"
    return "up" if view.probe.up else f"down ({view.probe.error})"


WARNING_STATES = {SlotState.LAGGING}
CRITICAL_STATES = {SlotState.WEDGED, SlotState.INACTIVE, SlotState.AT_RISK, SlotState.LOST}


def check_result(snapshot: Snapshot) -> tuple[int, str]:
    """Nagios plugin semantics: (exit code 0/1/2/3, one line with perfdata)."""
    worst = 0
    problems: list[str] = []
    perf: list[str] = []
    for view in snapshot.targets:
        if not view.up:
            error = view.last_poll.error if view.last_poll else None
            problems.append(
                f"{view.name}: database unreachable ({error.message if error else '?'})"
            )
            worst = max(worst, 3)
            continue
        count = len(view.slots)
        perf.append(f"'{view.name}_matched_slots'={count};;1:2")
        if count == 0:
            problems.append(f"{view.name}: no slot matches {view.slot_pattern!r}")
            worst = max(worst, 2)
        elif count > 1:
            problems.append(f"{view.name}: {count} slots match (an old generation left behind?)")
            worst = max(worst, 1)
        for slot in view.slots:
            a = slot.assessment
            name = slot.row.name
            if a.state in CRITICAL_STATES:
                worst = max(worst, 2)
                problems.append(f"{name} {a.state.value}: {'; '.join(a.reasons[:2])}")
            elif a.state in WARNING_STATES:
                worst = max(worst, 1)
                problems.append(f"{name} {a.state.value}: {'; '.join(a.reasons[:2])}")
            elif (
                a.state is SlotState.HEALTHY
                and not slot.row.active
                and slot.row.server_inactive_seconds is None
            ):
                # Before PostgreSQL 17 one poll cannot tell a reconnect from a dead consumer;
                # OK would hide a dead one for good, CRITICAL would page on every reconnect.
                worst = max(worst, 1)
                problems.append(
                    f"{name} has no walsender; for how long cannot be told from one poll "
                    "(PostgreSQL before 17 has no inactive_since)"
                )
            perf.append(f"'{name}_lag'={a.lag_bytes or 0}B")
            if a.retained_wal_bytes is not None:
                perf.append(f"'{name}_retained'={a.retained_wal_bytes}B")
            if a.invalidation_eta_seconds != INF:
                perf.append(f"'{name}_eta'={a.invalidation_eta_seconds:.0f}s")
        if view.probe is not None and not view.probe.up:
            problems.append(f"{view.name}: liveness probe down ({view.probe.error})")
            worst = max(worst, 2)
    label = ("OK", "WARNING", "CRITICAL", "UNKNOWN")[worst]
    summary = plugin_text("; ".join(problems) if problems else _ok_summary(snapshot))
    note = " (one poll: a stall cannot be judged without a window; `slotwatch run` can)"
    return worst, f"SLOTWATCH {label} - {summary}{note} | {' '.join(perf)}".rstrip(" |")


def plugin_text(text: str) -> str:
    """Text for a monitoring plugin's line: one line, and no `|`, which would start the perfdata
    (a slot pattern or a server's message may hold one; `¦` reads the same)."""
    return escaped(text).replace("|", "\u00a6")


def _ok_summary(snapshot: Snapshot) -> str:
    parts = []
    for view in snapshot.targets:
        for slot in view.slots:
            parts.append(
                f"{slot.row.name} {slot.assessment.state.value},"
                f" lag {format_bytes(slot.assessment.lag_bytes)}"
            )
    return "; ".join(parts) or "nothing to report"
