"""What the daemon and the one-shot verbs build alike: target views, connections, one poll.

Neutral ground between `service` (the daemon) and the one-shot verbs (status, check, drop), so a
one-shot verb never loads the daemon's scheduler.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from functools import partial

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

    run_all([(f"poll {t.name}", partial(one, t)) for t in targets])
    return store.snapshot()


# A step short enough that a second Ctrl-C feels immediate, long enough to cost nothing.
SIGNAL_STEP = 0.2


def run_all(calls: Sequence[tuple[str, Callable[[], object]]]) -> None:
    """Run each call in a daemon thread of its own, named as given, and wait for all of them;
    raise the first call's exception, if any, in the caller's thread.

    The wait is in short timed joins, never an untimed one. The kernel may hand a signal sent to
    the process (Ctrl-C, systemd's SIGTERM) to any of its threads; Python runs the handler in
    the main thread, and only once that thread runs again. An untimed join sleeps until the
    thread ends, so Ctrl-C, or a second stop signal, waited for a connect in flight (up to its
    timeout); a timed one wakes every `SIGNAL_STEP` and lets the handler run. Daemon threads:
    an interrupted wait does not then wait at exit for the threads it left.
    """
    failures: dict[int, BaseException] = {}

    def run(index: int, call: Callable[[], object]) -> None:
        try:
            call()
        except BaseException as exc:  # noqa: BLE001 - raised again below, in the caller's thread
            failures[index] = exc

    threads = [
        threading.Thread(target=run, args=(i, call), name=name, daemon=True)
        for i, (name, call) in enumerate(calls)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():
            thread.join(SIGNAL_STEP)
    if failures:
        raise failures[min(failures)]  # the first call's, as a pool's map raises it
