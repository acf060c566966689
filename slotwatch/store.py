"""The latest snapshot of every target, plus the per-slot memory that classification needs.

Pollers call `record_poll` / `record_probe`; readers (the collector, /status, /healthz) call
`snapshot()`, which returns an immutable object swapped in whole under a lock, so a scrape never
sees half of a poll. Slot tracks are advanced here with the pure functions of `classify`.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from slotwatch.classify import classify, observe
from slotwatch.forecast import wal_rate
from slotwatch.model import (
    POLL_ERROR_REASONS,
    Assessment,
    PollResult,
    ProbeResult,
    ServerRow,
    SlotRow,
    SlotState,
    SlotTrack,
    Thresholds,
)

# Enough WAL positions for the rate over any sensible forecast window at a 1 s poll interval.
_WAL_POINTS = 1024


@dataclass(frozen=True, slots=True)
class SlotView:
    row: SlotRow
    assessment: Assessment


@dataclass(frozen=True, slots=True)
class StateChange:
    """A slot moved from one state to another (or appeared / vanished: None on that side)."""

    target: str
    slot: str
    before: SlotState | None
    after: SlotState | None
    assessment: Assessment | None


@dataclass(frozen=True, slots=True)
class TargetView:
    """What one target looks like right now. `slots` is empty unless the last poll succeeded."""

    name: str
    probe_name: str
    slot_pattern: str
    thresholds: Thresholds
    up: bool = False
    last_poll: PollResult | None = None
    last_success: float | None = None
    server: ServerRow | None = None  # from the last poll, only while up
    slots: tuple[SlotView, ...] = ()
    poll_errors: Mapping[str, int] = field(
        default_factory=lambda: MappingProxyType(dict.fromkeys(POLL_ERROR_REASONS, 0))
    )
    polls_skipped: int = 0
    wal_rate: float | None = None
    probe: ProbeResult | None = None
    probe_last_success: float | None = None
    probe_enabled: bool = True


@dataclass(frozen=True, slots=True)
class Snapshot:
    targets: tuple[TargetView, ...]


class Store:
    """Thread-safe holder of the snapshot and of the mutable memory behind it."""

    def __init__(self, views: list[TargetView], *, one_shot: bool = False) -> None:
        self._lock = threading.Lock()
        self._one_shot = one_shot
        # Replacing a view keeps its place: the snapshot lists targets in configured order.
        self._views = {view.name: view for view in views}
        self._tracks: dict[str, dict[str, SlotTrack]] = {view.name: {} for view in views}
        # Last known state per slot, kept across failed polls so an outage is not a "change".
        self._states: dict[str, dict[str, SlotState]] = {view.name: {} for view in views}
        self._wal: dict[str, deque[tuple[float, int]]] = {
            view.name: deque(maxlen=_WAL_POINTS) for view in views
        }
        self._snapshot = Snapshot(tuple(views))

    def snapshot(self) -> Snapshot:
        return self._snapshot

    def record_poll(self, result: PollResult) -> list[StateChange]:
        """Fold one poll into the snapshot; returns the slots whose state changed."""
        with self._lock:
            view = self._views[result.target]
            if result.error is not None or result.server is None:
                errors = dict(view.poll_errors)
                reason = result.error.reason if result.error else "other"
                errors[reason] = errors.get(reason, 0) + 1
                changes: list[StateChange] = []
                # Do not export the last-known slots as if fresh: they are dropped from the view
                # (their tracks are kept, so a stall keeps its start across a short outage).
                view = replace(
                    view,
                    up=False,
                    last_poll=result,
                    server=None,
                    slots=(),
                    poll_errors=MappingProxyType(errors),
                )
            else:
                view, changes = self._fold(view, result, result.server)
            self._publish(view)
            return changes

    def _fold(
        self, view: TargetView, result: PollResult, server: ServerRow
    ) -> tuple[TargetView, list[StateChange]]:
        at = result.started_at
        points = self._wal[view.name]
        if points and server.current_lsn < points[-1][1]:
            points.clear()  # the server was restored or replaced: old positions mean nothing
        points.append((at, server.current_lsn))
        window = [(t, lsn) for t, lsn in points if t >= at - view.thresholds.forecast_window]
        tracks = self._tracks[view.name]
        before = self._states[view.name]
        slots = []
        for row in result.slots:
            track = observe(tracks.get(row.name), row, server, at, view.thresholds)
            tracks[row.name] = track
            assessment = classify(row, server, track, view.thresholds, polled_once=self._one_shot)
            slots.append(SlotView(row, assessment))
        seen = {row.name for row in result.slots}
        for gone in set(tracks) - seen:
            del tracks[gone]
        changes = [
            StateChange(
                view.name, s.row.name, before.get(s.row.name), s.assessment.state, s.assessment
            )
            for s in slots
            if before.get(s.row.name) != s.assessment.state
        ]
        changes += [
            StateChange(view.name, name, state, None, None)
            for name, state in before.items()
            if name not in seen
        ]
        self._states[view.name] = {s.row.name: s.assessment.state for s in slots}
        folded = replace(
            view,
            up=True,
            last_poll=result,
            last_success=at + result.duration,
            server=server,
            slots=tuple(slots),
            wal_rate=wal_rate(window),
        )
        return folded, changes

    def record_probe(self, target: str, result: ProbeResult) -> None:
        with self._lock:
            view = self._views[target]
            last_success = result.checked_at if result.up else view.probe_last_success
            self._publish(replace(view, probe=result, probe_last_success=last_success))

    def record_skipped_poll(self, target: str) -> None:
        with self._lock:
            view = self._views[target]
            self._publish(replace(view, polls_skipped=view.polls_skipped + 1))

    def _publish(self, view: TargetView) -> None:
        """Swap in a snapshot with `view` replacing its target's (the caller holds the lock)."""
        self._views[view.name] = view
        self._snapshot = Snapshot(tuple(self._views.values()))
