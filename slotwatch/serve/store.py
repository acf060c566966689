"""The latest snapshot of every target, swapped in whole.

Pollers call `record_poll` (with the judgement `judge.memory` made of it) and
`record_probe`; readers (the collector, /status, /healthz) call `snapshot()`, which returns an
immutable object swapped in whole under a lock, so a scrape never sees half of a poll. The store
decides nothing: it only holds what it is given.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from slotwatch.model import (
    POLL_ERROR_REASONS,
    ConsumerAccount,
    Judgement,
    OtherSlots,
    PollResult,
    ProbeResult,
    ServerRow,
    SlotView,
    StateChange,
    Thresholds,
)


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
    slot_database: str | None = None  # only this database's slots; None: every database
    others: OtherSlots = field(default_factory=OtherSlots)  # slots not matching, while up
    consumer: ConsumerAccount | None = None  # the consumer's own account, when its metrics are read
    consumer_enabled: bool = False


@dataclass(frozen=True, slots=True, weakref_slot=True)
class Snapshot:
    # Weakly referable: what is rendered of a snapshot names it without keeping it (and the
    # poll's rows and judgements in it) alive once the store has swapped in the next.
    targets: tuple[TargetView, ...]


class Store:
    """Thread-safe holder of the snapshot and of the mutable memory behind it."""

    def __init__(self, views: list[TargetView]) -> None:
        self._lock = threading.Lock()
        # Replacing a view keeps its place: the snapshot lists targets in configured order.
        self._views = {view.name: view for view in views}
        self._snapshot = Snapshot(tuple(views))

    def snapshot(self) -> Snapshot:
        return self._snapshot

    def record_poll(self, result: PollResult, judgement: Judgement | None) -> list[StateChange]:
        """Fold one poll (and its judgement, None when it failed) into the snapshot.

        Returns the slots whose state changed.
        """
        with self._lock:
            view = self._views[result.target]
            if judgement is None or result.error is not None or result.server is None:
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
                    others=OtherSlots(),
                    poll_errors=MappingProxyType(errors),
                )
            else:
                changes = judgement.changes
                view = replace(
                    view,
                    up=True,
                    last_poll=result,
                    last_success=result.started_at + result.duration,
                    server=result.server,
                    slots=judgement.slots,
                    others=judgement.others,
                    wal_rate=judgement.wal_rate,
                )
            self._publish(view)
            return changes

    def record_probe(self, target: str, result: ProbeResult) -> None:
        with self._lock:
            view = self._views[target]
            last_success = result.checked_at if result.up else view.probe_last_success
            self._publish(replace(view, probe=result, probe_last_success=last_success))

    def record_consumer(self, target: str, account: ConsumerAccount) -> None:
        with self._lock:
            self._publish(replace(self._views[target], consumer=account))

    def record_skipped_poll(self, target: str) -> None:
        with self._lock:
            view = self._views[target]
            self._publish(replace(view, polls_skipped=view.polls_skipped + 1))

    def _publish(self, view: TargetView) -> None:
        """Swap in a snapshot with `view` replacing its target's (the caller holds the lock)."""
        self._views[view.name] = view
        self._snapshot = Snapshot(tuple(self._views.values()))
