"""What a target remembers between polls, and the judgement of each new poll.

The policy of a poll lives here, not in the store: each slot's track is advanced with
`classify.observe`, judged with `classify.classify`, the target's WAL rate is taken from
its recent positions with `forecast.wal_rate`, and the slots that do not match the pattern are
counted and ranked by `others.watch_others` (with their own inactivity clocks). One `Memory`
per target, used only by that target's poll job (the scheduler never runs two at once), so it
needs no lock.
"""

from __future__ import annotations

from collections import deque

from slotwatch.judge.classify import classify, observe
from slotwatch.judge.forecast import wal_rate
from slotwatch.judge.others import watch_others
from slotwatch.model import (
    Judgement,
    PollResult,
    ServerRow,
    SlotState,
    SlotTrack,
    SlotView,
    StateChange,
    Thresholds,
)

# Enough WAL positions for the rate over any sensible forecast window at a 1 s poll interval.
_WAL_POINTS = 1024


class Memory:
    """Slot tracks, last known states and recent WAL positions of one target."""

    def __init__(self, target: str, thresholds: Thresholds, *, one_shot: bool = False) -> None:
        self.target = target
        self.thresholds = thresholds
        self._one_shot = one_shot
        self._tracks: dict[str, SlotTrack] = {}
        # Last known state per slot, kept across failed polls so an outage is not a "change".
        self._states: dict[str, SlotState] = {}
        self._wal: deque[tuple[float, int]] = deque(maxlen=_WAL_POINTS)
        # Other slots: since when each has been seen inactive (when the server cannot say).
        self._other_clocks: dict[str, float] = {}

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
        tracks = self._tracks
        before = self._states
        slots = []
        for row in result.slots:
            track = observe(tracks.get(row.name), row, server, at, self.thresholds)
            tracks[row.name] = track
            assessment = classify(row, server, track, self.thresholds, polled_once=self._one_shot)
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
        return Judgement(tuple(slots), changes, wal_rate(window), others)
