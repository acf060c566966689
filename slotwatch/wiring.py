"""What the daemon and the one-shot verbs build alike: target views, connections, one poll.

Neutral ground between `service` (the daemon) and the one-shot verbs (status, check, drop), so a
one-shot verb never loads the daemon's scheduler.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

from slotwatch.config.settings import Settings, Target
from slotwatch.judge.memory import Memory
from slotwatch.logs import get_logger
from slotwatch.model import ConsumerReading, PollResult, StateChange
from slotwatch.poll import consumer
from slotwatch.poll.db import TargetConnection
from slotwatch.poll.probe import Prober
from slotwatch.serve.store import Snapshot, Store, TargetView

log = get_logger(__name__)


def target_views(targets: tuple[Target, ...]) -> list[TargetView]:
    return [
        TargetView(
            name=t.name,
            probe_name=t.probe_name,
            slot_pattern=t.slot_pattern,
            thresholds=t.thresholds,
            probe_enabled=t.liveness_url is not None,
            slot_database=t.slot_database,
            consumer_enabled=t.consumer_metrics_url is not None,
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
            slot_database=t.slot_database,
        )
        for t in targets
    }


def same_slots(
    clusters: Mapping[str, tuple[int, str | None]], name: str
) -> list[tuple[str, str | None]]:
    """The other targets that report slots `name` reports too: the same cluster
    (system_identifier) and database scopes that overlap (None is every database)."""
    if name not in clusters:
        return []
    system, database = clusters[name]
    return [
        (other, their_db)
        for other, (their_system, their_db) in clusters.items()
        if other != name
        and their_system == system
        and (database is None or their_db is None or database == their_db)
    ]


def consumer_fresh_for(settings: Settings) -> float:
    """How old a reading of the consumer's metrics may be and still speak for a poll: two probe
    intervals (one late or failed reading) plus the time a reading may take."""
    return 2 * settings.probe_interval + settings.probe_timeout


# Pairs of overlapping targets logged one by one; past them, one line says the rest are not.
OVERLAP_WARNINGS = 20


class Recorder:
    """The one path from a poll result (or a reading of the consumer's metrics) to the snapshot:
    judged by each target's memory, then handed to the store, which only holds it."""

    def __init__(
        self, views: list[TargetView], *, one_shot: bool = False, consumer_fresh_for: float = 0.0
    ) -> None:
        self.store = Store(views)
        self._memory = {
            v.name: Memory(
                v.name, v.thresholds, one_shot=one_shot, consumer_fresh_for=consumer_fresh_for
            )
            for v in views
        }
        self._scopes = {v.name: v.slot_database for v in views}
        self._clusters: dict[str, tuple[int, str | None]] = {}
        self._warned: set[frozenset[str]] = set()
        self._overlaps_silenced = False

    def record_poll(self, result: PollResult) -> list[StateChange]:
        changes = self.store.record_poll(result, self._memory[result.target].judge(result))
        if result.server is not None and result.server.system_identifier is not None:
            self._check_cluster(result.target, result.server.system_identifier)
        return changes

    def _check_cluster(self, name: str, system_identifier: int) -> None:
        self._clusters[name] = (system_identifier, self._scopes[name])
        if self._overlaps_silenced:
            return
        for other, their_db in same_slots(self._clusters, name):
            pair = frozenset((name, other))
            if pair in self._warned:
                continue
            if len(self._warned) == OVERLAP_WARNINGS:
                # A fleet of N targets on one cluster has N*(N-1)/2 pairs (about 100,000 for
                # 450): logging each kept the poll threads busy for a whole interval.
                self._overlaps_silenced = True
                log.warning(
                    "more targets watch the same cluster and report the same slots twice;"
                    " further overlaps are not logged",
                    target=name,
                    other_target=other,
                    logged=OVERLAP_WARNINGS,
                )
                return
            self._warned.add(pair)
            scope = self._scopes[name] or their_db
            log.warning(
                "two targets watch the same cluster and report the same slots twice; give"
                " each its own slot_database, or keep one",
                target=name,
                other_target=other,
                system_identifier=str(system_identifier),
                slot_database=scope or "every database",
            )

    def record_consumer(self, target: str, reading: ConsumerReading) -> None:
        self.store.record_consumer(target, self._memory[target].record_consumer(reading))


def poll_once(settings: Settings, targets: tuple[Target, ...]) -> Snapshot:
    """Poll and probe every target at once; a one-shot store knows it has no stall window."""
    recorder = Recorder(
        target_views(targets), one_shot=True, consumer_fresh_for=consumer_fresh_for(settings)
    )
    store = recorder.store
    conns = connections(settings, targets)

    def one(target: Target) -> None:
        if target.consumer_metrics_url is not None:
            recorder.record_consumer(
                target.name, consumer.read(target.consumer_metrics_url, settings.probe_timeout)
            )
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

    # Daemon threads, joined here: Ctrl-C ends the verb at once, where a pool's workers were
    # waited for at exit, each until its connect attempt timed out.
    failures: dict[int, BaseException] = {}

    def run(index: int, target: Target) -> None:
        try:
            one(target)
        except BaseException as exc:  # noqa: BLE001 - raised again below, in the caller's thread
            failures[index] = exc

    threads = [
        threading.Thread(target=run, args=(i, t), name=f"poll {t.name}", daemon=True)
        for i, t in enumerate(targets)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[min(failures)]  # the first target's, as the pool's map raised it
    return store.snapshot()
