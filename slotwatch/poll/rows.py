"""The poll statement's rows turned into plain data: the server, its slots, their counters (pure).

The statement's columns carry the model's own field names, so rows are built by position; a
logical slot whose decoding counters were not read this poll keeps the last ones known.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from operator import itemgetter
from typing import Any, NamedTuple

from slotwatch.errors import SlotwatchError, UnsupportedServer
from slotwatch.model import OtherSlotRow, ServerRow, SlotRow

Counters = tuple[int | None, int | None, int | None]  # spill, stream, total bytes
_UNREAD: Counters = (None, None, None)
_COUNTERS = ("spill_bytes", "stream_bytes", "total_bytes")
# The statement's columns carry the fields' own names: rows are built by position from these.
_SLOT_FIELDS = SlotRow._fields
_OTHER_FIELDS = OtherSlotRow._fields
_SLOT_TYPE_AT = _SLOT_FIELDS.index("slot_type")
# The counters are SlotRow's last fields (a unit test holds it): carrying them swaps the tail.
_READ_AT = len(_SLOT_FIELDS) - len(_COUNTERS)
# Texts every poll repeats for every slot (the driver makes them anew each time): a slot's row
# shares them with the last poll's and with the render's caches instead of holding copies.
_REPEATED = tuple(
    _SLOT_FIELDS.index(f)
    for f in ("name", "plugin", "slot_type", "database", "wal_status", "sender_state")
)


class ParsedPoll(NamedTuple):
    """One poll's rows as plain data, and what the next poll needs to know of its counters."""

    server: ServerRow
    slots: tuple[SlotRow, ...]
    others: tuple[OtherSlotRow, ...]
    # Every matched slot's decoding counters, read this poll or carried from `last`: the
    # `last` of the next poll.
    counters: dict[str, Counters]
    # A logical slot's counters were neither read nor known: the next poll should read them all.
    unknown: bool


def read_poll(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    last: Mapping[str, Counters] | None = None,
) -> ParsedPoll:
    """Turn the poll statement's rows, by column name, into plain data (pure).

    The server's figures come from the first row that has them (`version_num` not NULL), the
    slots from the rows whose `name` is not NULL: the statement sends the figures once, in a row
    of their own, while hand-made rows may carry both. Slots matching the pattern become SlotRows,
    the others in scope (the target's database, or every database) OtherSlotRows; the oldest
    restart_lsn is taken over every slot of the server, in scope or not, because that is what
    pins pg_wal.

    A logical slot whose counters were not read this poll (all NULL) takes its values from
    `last`, the `counters` of the previous poll.
    """
    at = {column: i for i, column in enumerate(columns)}
    version_at, name_at, lsn_at = at["version_num"], at["name"], at["restart_lsn"]
    first = next((r for r in rows if r[version_at] is not None), None)
    if first is None:
        raise SlotwatchError("the poll statement returned no server row")
    if first[at["in_recovery"]]:
        raise UnsupportedServer(
            "the server is a standby (in recovery): slotwatch watches the primary"
        )
    present = sorted((r for r in rows if r[name_at] is not None), key=itemgetter(name_at))
    holding = [r for r in present if r[lsn_at] is not None]
    oldest = min(holding, key=itemgetter(lsn_at, name_at)) if holding else None
    server = ServerRow(
        version_num=first[version_at],
        in_recovery=False,
        current_lsn=first[at["current_lsn"]],
        max_slot_wal_keep_size=first[at["max_slot_wal_keep_size"]],
        wal_segment_size=first[at["wal_segment_size"]],
        wal_directory_bytes=first[at["wal_directory_bytes"]],
        wal_sender_timeout=first[at["wal_sender_timeout_ms"]] / 1000.0,
        server_epoch=first[at["server_epoch"]],
        system_identifier=_int(first[at["system_identifier"]]),
        oldest_restart_lsn=oldest[lsn_at] if oldest else None,
        oldest_restart_slot=oldest[name_at] if oldest else None,
    )
    slot_values = itemgetter(*(at[f] for f in _SLOT_FIELDS))
    other_values = itemgetter(*(at[f] for f in _OTHER_FIELDS))
    matched_at, in_scope_at = at["matched"], at["in_scope"]
    known = last or {}
    counters: dict[str, Counters] = {}
    unknown = False
    slots: list[SlotRow] = []
    others: list[OtherSlotRow] = []
    for row in present:
        if not row[in_scope_at]:
            continue
        if not row[matched_at]:
            others.append(OtherSlotRow(*other_values(row)))
            continue
        values = _shared(slot_values(row))
        name = values[0]
        read = values[_READ_AT:]
        now = _carried(read, values[_SLOT_TYPE_AT], known.get(name))
        if now is None:
            unknown = True
        else:
            counters[name] = now
            if now is not read:
                values = values[:_READ_AT] + now
        slots.append(SlotRow._make(values))
    return ParsedPoll(server, tuple(slots), tuple(others), counters, unknown)


def _shared(values: tuple[Any, ...]) -> tuple[Any, ...]:
    texts = list(values)
    for at in _REPEATED:
        if type(texts[at]) is str:
            texts[at] = sys.intern(texts[at])
    return tuple(texts)


def _carried(read: Counters, slot_type: str, known: Counters | None) -> Counters | None:
    """A slot's counters this poll: those read, else the last known ones; None if neither.

    Only a logical slot has counters: a physical one's NULLs are its reading.
    """
    if read != _UNREAD or slot_type != "logical":
        return read
    return known


def parse_poll(
    rows: Sequence[Mapping[str, Any]],
) -> tuple[ServerRow, tuple[SlotRow, ...], tuple[OtherSlotRow, ...]]:
    """`read_poll` over rows given as mappings of column name to value (pure)."""
    columns = tuple(rows[0])
    parsed = read_poll(columns, [tuple(r[c] for c in columns) for r in rows])
    return parsed.server, parsed.slots, parsed.others


def _int(value: Any) -> int | None:
    return None if value is None else int(value)
