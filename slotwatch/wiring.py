"""What the daemon and the one-shot verbs build alike: target views, connections, one poll.

Neutral ground between `service` (the daemon) and the one-shot verbs (status, check, drop), so a
one-shot verb never loads the daemon's scheduler.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from slotwatch.config.settings import Settings, Target
from slotwatch.judge.memory import Memory
from slotwatch.model import PollResult, StateChange
from slotwatch.poll.db import TargetConnection
from slotwatch.poll.probe import Prober
from slotwatch.serve.store import Snapshot, Store, TargetView


def target_views(targets: tuple[Target, ...]) -> list[TargetView]:
    return [
        TargetView(
            name=t.name,
            probe_name=t.probe_name,
            slot_pattern=t.slot_pattern,
            thresholds=t.thresholds,
            probe_enabled=t.liveness_url is not None,
        )
        for t in targets
    ]


def connections(settings: Settings, targets: tuple[Target, ...]) -> dict[str, TargetConnection]:
    return {
        t.name: TargetConnection(
            t.name,
            t.dsn,
            t.slot_pattern,
            t.consumer_app,
            connect_timeout=settings.connect_timeout,
            statement_timeout=settings.statement_timeout,
        )
        for t in targets
    }


class Recorder:
    """The one path from a poll result to the snapshot: judged by each target's memory, then
    handed to the store, which only holds it."""

    def __init__(self, views: list[TargetView], *, one_shot: bool = False) -> None:
        self.store = Store(views)
        self._memory = {v.name: Memory(v.name, v.thresholds, one_shot=one_shot) for v in views}

    def record_poll(self, result: PollResult) -> list[StateChange]:
        return self.store.record_poll(result, self._memory[result.target].judge(result))


def poll_once(settings: Settings, targets: tuple[Target, ...]) -> Snapshot:
    """Poll and probe every target at once; a one-shot store knows it has no stall window."""
    recorder = Recorder(target_views(targets), one_shot=True)
    store = recorder.store
    conns = connections(settings, targets)

    def one(target: Target) -> None:
        try:
            recorder.record_poll(conns[target.name].poll())
        finally:
            conns[target.name].close()
        if target.liveness_url is not None:
            prober = Prober(target.liveness_url, settings.probe_timeout)
            try:
                store.record_probe(target.name, prober.probe())
            finally:
                prober.close()

    with ThreadPoolExecutor(max_workers=max(1, len(targets))) as pool:
        list(pool.map(one, targets))
    return store.snapshot()
