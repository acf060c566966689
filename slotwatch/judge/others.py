"""Slots that do not match the pattern: who probably owns each, and which K hold the most WAL.

Pure. Other slots are watched lightly (no stall or forecast): a count, and for the top K by
retained WAL the bytes, whether a walsender holds it, how long it has not, and a guess at its
owner from one small table, so the on-call engineer reads "the WAL is held by debezium_orders,
inactive for 12 days, probably Debezium's" instead of a bare slot name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from slotwatch.model import OtherSlotRow, OtherSlots, OtherSlotView, ServerRow

# (owner, what its slot names look like), first match wins. A physical slot is `physical`
# whatever its name (a standby's, or pg_basebackup's). `powersync`: another PowerSync instance,
# or PowerSync Cloud, whose default prefix `powersync_` the self-hosted pattern does not match.
OWNERS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("supabase_realtime", re.compile(r"^supabase_realtime")),
    ("powersync", re.compile(r"^powersync")),
    ("debezium", re.compile(r"debezium")),
    ("airbyte", re.compile(r"airbyte")),
    ("electric", re.compile(r"^electric")),
)
OWNER_NAMES = ("physical", *(owner for owner, _ in OWNERS), "unknown")
# Debezium's own output plugin: its slots are Debezium's whatever they are called.
_PLUGIN_OWNERS = {"decoderbufs": "debezium"}


def owner_guess(row: OtherSlotRow) -> str:
    """A best guess at who made the slot, from its type, name and plugin."""
    if row.slot_type == "physical":
        return "physical"
    for owner, pattern in OWNERS:
        if pattern.search(row.name):
            return owner
    return _PLUGIN_OWNERS.get(row.plugin or "", "unknown")


def watch_others(
    rows: tuple[OtherSlotRow, ...],
    server: ServerRow,
    clocks: Mapping[str, float],
    at: float,
    top: int,
) -> tuple[OtherSlots, dict[str, float]]:
    """The other slots of one poll, and the inactivity clocks to keep for the next one.

    `clocks` maps a slot to the first poll that saw it inactive: slotwatch's own clock, used
    when the server has no inactive_since (before PostgreSQL 17). It is kept for every inactive
    slot, not only the top K, so a slot that climbs into the top K shows its whole idle time.
    """
    kept = {
        row.name: clocks.get(row.name, at)
        for row in rows
        if not row.active and row.server_inactive_seconds is None
    }
    views = [
        OtherSlotView(
            row=row,
            owner=owner_guess(row),
            retained_wal_bytes=(
                None if row.restart_lsn is None else max(0, server.current_lsn - row.restart_lsn)
            ),
            inactive_seconds=_inactive(row, kept, at),
        )
        for row in rows
    ]
    # Most WAL first, a slot holding none (restart_lsn NULL) last; ties by name.
    views.sort(
        key=lambda v: (-(-1 if v.retained_wal_bytes is None else v.retained_wal_bytes), v.row.name)
    )
    active = sum(1 for row in rows if row.active)
    return OtherSlots(active, len(rows) - active, tuple(views[: max(0, top)])), kept


def _inactive(row: OtherSlotRow, clocks: Mapping[str, float], at: float) -> float:
    if row.active:
        return 0.0
    if row.server_inactive_seconds is not None:
        return max(0.0, row.server_inactive_seconds)
    return max(0.0, at - clocks[row.name])
