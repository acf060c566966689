"""What a target remembers between polls, and the judgement of each new poll.

The policy of a poll lives here, not in the store: each slot's track is advanced with
`classify.observe`, judged with `classify.classify`, the target's WAL rate is taken from
its recent positions with `forecast.wal_rate` (once per poll, and handed to every slot's verdict),
and the slots that do not match the pattern are counted and ranked by `others.watch_others` (with
their own inactivity clocks). One `Memory` per target, used by that target's poll job (the
scheduler never runs two at once) and, for the consumer's own account, by its probe job: that job
only swaps in a new immutable account, which a poll reads once, so neither needs a lock.
"""

from __future__ import annotations

from collections import deque

from slotwatch.judge import consumer
from slotwatch.judge.classify import ConsumerEvidence, classify, observe
from slotwatch.judge.forecast import wal_rate
from slotwatch.judge.others import watch_others
from slotwatch.model import (
    ConsumerAccount,
    ConsumerReading,
    Judgement,
    PollResult,
    ServerRow,
    SlotRow,
    SlotState,
    SlotTrack,
    SlotView,
    StateChange,
    Thresholds,
)

# Enough WAL positions for the rate over any sensible forecast window at a 1 s poll interval.
_WAL_POINTS = 1024


# How many of the other busy slots a reason names; the rest are counted.
SHARED_NAMED = 3


def busy_slots(rows: tuple[SlotRow, ...]) -> list[tuple[str, str]]:
    """(name, what it is doing) of every slot that streams or is copied: listed once a poll,
    for the consumer evidence of every slot to name."""
    return [
        (row.name, f"{row.name} is {'streaming' if row.active else 'snapshotting'}")
        for row in rows
        if row.active or row.consumer_busy
    ]


class Memory:
    """Slot tracks, last known states and recent WAL positions of one target."""

    def __init__(
        self,
        target: str,
        thresholds: Thresholds,
        *,
        one_shot: bool = False,
        consumer_fresh_for: float = 0.0,
    ) -> None:
        self.target = target
        self.thresholds = thresholds
        self._one_shot = one_shot
        # How old the consumer's latest reading may be and still speak for a poll.
        self._consumer_fresh_for = consumer_fresh_for
        self._consumer: ConsumerAccount | None = None
        self._tracks: dict[str, SlotTrack] = {}
        # Last known state per slot, kept across failed polls so an outage is not a "change".
        self._states: dict[str, SlotState] = {}
        self._wal: deque[tuple[float, int]] = deque(maxlen=_WAL_POINTS)
        # Other slots: since when each has been seen inactive (when the server cannot say).
        self._other_clocks: dict[str, float] = {}

    def record_consumer(self, reading: ConsumerReading) -> ConsumerAccount:
        """Fold a reading of the consumer's own metrics in; the next polls judge with it."""
        account = consumer.advance(self._consumer, reading)
        self._consumer = account
        return account

    def judge(self, result: PollResult) -> Judgement | None:
        """Judge a poll; None for a failed one (the memory is kept for the next success)."""
        if result.error is not None or result.server is None:
            return None
        return self._judge(result, result.server)

    def _judge(self, result: PollResult, server: ServerRow) -> Judgement:
        at = result.started_at
        points = self._wal
        if points and server.current_lsn < points[-1][1]:
            points.clear()  # the server was restored or replaced: old positions mean nothing
        points.append((at, server.current_lsn))
        window = [(t, lsn) for t, lsn in points if t >= at - self.thresholds.forecast_window]
        rate = wal_rate(window)
        account = self._consumer
        tracks = self._tracks
        before = self._states
        busy = busy_slots(result.slots) if account is not None else []
        slots = []
        for row in result.slots:
            track = observe(tracks.get(row.name), row, server, at, self.thresholds)
            tracks[row.name] = track
            assessment = classify(
                row,
                server,
                track,
                self.thresholds,
                polled_once=self._one_shot,
                wal_rate=rate,
                consumer=self._evidence(account, row, busy, at),
            )
            slots.append(SlotView(row, assessment))
        seen = {row.name for row in result.slots}
        for gone in set(tracks) - seen:
            del tracks[gone]
        changes = [
            StateChange(
                self.target, s.row.name, before.get(s.row.name), s.assessment.state, s.assessment
            )
            for s in slots
            if before.get(s.row.name) != s.assessment.state
        ]
        changes += [
            StateChange(self.target, name, state, None, None)
            for name, state in before.items()
            if name not in seen
        ]
        self._states = {s.row.name: s.assessment.state for s in slots}
        others, self._other_clocks = watch_others(
            result.others, server, self._other_clocks, at, self.thresholds.other_slots_top
        )
        return Judgement(tuple(slots), changes, rate, others)

    def _evidence(
        self,
        account: ConsumerAccount | None,
        row: SlotRow,
        busy: list[tuple[str, str]],
        at: float,
    ) -> ConsumerEvidence | None:
        if account is None:
            return None
        fresh = at - account.reading.checked_at <= self._consumer_fresh_for
        # The counters are the whole process's: while another matched slot streams or is
        # copied, a rise may be that slot's, and cannot clear this one.
        count = len(busy) - (1 if row.active or row.consumer_busy else 0)
        others = [text for name, text in busy[: SHARED_NAMED + 1] if name != row.name]
        others = others[:SHARED_NAMED]
        if count > len(others):
            others.append(f"{count - len(others)} more")
        shared = (
            "; ".join(others) + " (the counters are the whole process's, not one slot's)"
            if others
            else None
        )
        return ConsumerEvidence(account, fresh, shared)
