"""One watchdog thread keeps every poll's answer deadline (slotwatch.poll.deadline): a poll still
running at its deadline is cut, in deadline order; a poll done by then is left alone."""

from __future__ import annotations

import threading
import time

from sandbox.waiting import wait_until
from slotwatch.poll.deadline import Watchdog


class _Poll:
    def __init__(self, name: str, cuts: list[str]) -> None:
        self.name = name
        self.done = False
        self._cuts = cuts

    def cut(self) -> None:
        self._cuts.append(self.name)


def test_polls_running_at_their_deadline_are_cut_in_deadline_order() -> None:
    watchdog = Watchdog()
    cuts: list[str] = []
    late, done, early = _Poll("late", cuts), _Poll("done", cuts), _Poll("early", cuts)
    now = time.monotonic()
    watchdog.watch(now + 0.6, late)  # type: ignore[arg-type]
    watchdog.watch(now + 0.2, done)  # type: ignore[arg-type]
    done.done = True  # its answer came in time
    # Added while the watchdog waits for a later deadline: still cut first.
    watchdog.watch(now + 0.3, early)  # type: ignore[arg-type]
    wait_until(lambda: len(cuts) == 2, 5, message="both running polls cut")
    assert cuts == ["early", "late"]
    assert time.monotonic() - now >= 0.6


def test_one_thread_keeps_every_deadline() -> None:
    watchdog = Watchdog()
    cuts: list[str] = []
    before = threading.active_count()
    polls = [_Poll(str(k), cuts) for k in range(200)]
    for poll in polls:
        watchdog.watch(time.monotonic() + 30, poll)  # type: ignore[arg-type]
    assert threading.active_count() == before + 1
    for poll in polls:
        poll.done = True
    watchdog.watch(time.monotonic(), _Poll("now", cuts))  # type: ignore[arg-type]
    wait_until(lambda: cuts == ["now"], 5, message="the one due poll cut")
