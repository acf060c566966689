"""A fleet in one process, and a fleet split across replicas.

Stories:
- 50 targets on one cluster, 5 of them black holes (a listener that never answers): every other
  target is polled within one poll interval, all the time; the black holes read down, as
  timeouts, and /metrics keeps answering. The first polls start ten at a time, 200 ms apart.
- Two replicas share one targets file with SLOTWATCH_SHARD=0/2 and 1/2: each target is polled by
  exactly one of them, and together they poll them all.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox import Cluster, get_install
from sandbox.fleet import BlackHole, create_databases, fleet_targets, write_targets_file
from sandbox.waiting import wait_until
from slotwatch import __version__
from slotwatch.config.shard import Shard, share
from tests.slotwatch_proc import Metrics, SlotwatchProcess

INTERVAL = 4.0  # poll interval of the fleet test, seconds
CONNECT_TIMEOUT = 10  # a black-holed poll holds its worker this long: beyond two intervals
SLACK = 2.0  # scheduling and the poll's own duration, on a loaded 2-core machine
BATCH_JITTER = 0.1  # how much later than its peers the first batch's earliest poll may start


@pytest.fixture(scope="module")
def fleet_cluster() -> Iterator[Cluster]:
    with Cluster(get_install("pg15"), settings={"max_connections": 200}) as cluster:
        yield cluster


def _up(proc: SlotwatchProcess) -> dict[str, float]:
    return _ups(proc.metrics())


def _ups(metrics: Metrics) -> dict[str, float]:
    return {labels["target"]: value for labels, value in metrics.find("slotwatch_up")}


def _poll_start(metrics: Metrics, target: str) -> float:
    """When the target's last successful poll started, to the microsecond."""
    ended = metrics.value("slotwatch_last_poll_success_timestamp_seconds", target=target)
    took = metrics.value("slotwatch_poll_duration_seconds", target=target)
    assert ended is not None, target
    assert took is not None, target
    return ended - took


def test_fifty_targets_with_black_holes_are_each_polled_within_one_interval(
    fleet_cluster: Cluster, tmp_path: Path
) -> None:
    databases = create_databases(fleet_cluster, 5)
    holes = [BlackHole() for _ in range(5)]
    try:
        targets = fleet_targets(fleet_cluster, databases, 50, holes)
        config = write_targets_file(tmp_path / "fleet.toml", targets)
        settings = {
            "SLOTWATCH_CONFIG": str(config),
            "SLOTWATCH_POLL_INTERVAL": f"{INTERVAL}s",
            "SLOTWATCH_CONNECT_TIMEOUT": f"{CONNECT_TIMEOUT}s",
        }
        good = {t.name for t in targets if not t.black_hole}
        bad = {t.name for t in targets if t.black_hole}
        with SlotwatchProcess(settings, tmp_path / "slotwatch.log") as proc:
            started = time.time()

            # The first round: every good target answers within one interval of the start. Read
            # on the daemon's clock (a target's first success is no later than its last one in
            # the scrape that shows them all up), not by when a scrape on a loaded machine
            # returned: that measured the scrape too, and once read 7.4 s for a 6 s bound.
            def all_up() -> Metrics | None:
                metrics = proc.metrics()
                ups = _ups(metrics)
                return metrics if all(ups.get(name) == 1 for name in good) else None

            shown = wait_until(
                all_up,
                INTERVAL + SLACK,
                message="not every reachable target was polled within one interval",
            )
            latest = max(
                shown.value("slotwatch_last_poll_success_timestamp_seconds", target=name) or 0.0
                for name in good
            )
            assert latest - started <= INTERVAL + SLACK, f"last first success {latest - started}s"
            # The first polls start ten at a time, 200 ms apart, in the file's order, so the
            # fleet's connects never arrive in one instant, and each target keeps that phase.
            # Whichever round the metrics show (a poll started at its success stamp less its
            # duration), a target's phase behind the earliest of the first batch is its
            # batch's turn or later. Good targets share the first batch with black holes.
            metrics = proc.metrics()
            began = {name: _poll_start(metrics, name) for name in good}
            turn = {t.name: (i // 10) * 0.2 for i, t in enumerate(targets) if t.name in good}
            anchor = next(iter(began))

            def phase(name: str) -> float:  # seconds after the anchor's, within an interval
                return (began[name] - began[anchor] + INTERVAL / 2) % INTERVAL - INTERVAL / 2

            first = min(phase(name) for name in good if turn[name] == 0)
            early = {
                name: round(phase(name) - first, 3)
                for name in good
                if phase(name) - first < turn[name] - BATCH_JITTER
            }
            assert not early, f"polled before their batch's turn: {early}"
            # Then for three intervals, while the black holes hold their workers past each
            # interval, no good target's last success is ever older than one interval.
            worst = 0.0
            until = time.time() + 3 * INTERVAL + CONNECT_TIMEOUT
            while time.time() < until:
                metrics = proc.metrics()
                now = time.time()
                for name in good:
                    last = metrics.value(
                        "slotwatch_last_poll_success_timestamp_seconds", target=name
                    )
                    assert last is not None, name
                    worst = max(worst, now - last)
                time.sleep(0.25)  # the pace of the observation, not a wait for a condition
            assert worst <= INTERVAL + SLACK, f"a target waited {worst:.1f}s for its poll"
            # The black holes are down, as timeouts, and counted; the rest stayed up.
            wait_until(
                lambda: all(
                    proc.metrics().value(
                        "slotwatch_poll_errors_total", target=name, reason="timeout"
                    )
                    for name in bad
                ),
                CONNECT_TIMEOUT + INTERVAL + SLACK,
                message="a black-holed target was not reported as a timeout",
            )
            up = _up(proc)
            assert {name for name, value in up.items() if value == 0} == bad
            assert {name for name, value in up.items() if value == 1} == good
    finally:
        for hole in holes:
            hole.close()


def test_two_replicas_split_a_shared_targets_file_without_overlap(
    fleet_cluster: Cluster, tmp_path: Path
) -> None:
    databases = create_databases(fleet_cluster, 2, prefix="shard")
    targets = fleet_targets(fleet_cluster, databases, 12, [])
    config = write_targets_file(tmp_path / "fleet.toml", targets)
    names = {t.name for t in targets}
    expected = [{t.name for t in share(targets, Shard(i, 2))} for i in range(2)]
    assert all(expected), "the fixed names must give each replica some targets"
    replicas = [
        SlotwatchProcess(
            {
                "SLOTWATCH_CONFIG": str(config),
                "SLOTWATCH_SHARD": f"{i}/2",
                "SLOTWATCH_POLL_INTERVAL": "1s",
            },
            tmp_path / f"replica{i}.log",
        )
        for i in range(2)
    ]
    try:
        for replica in replicas:
            replica.wait_ready()
        for replica, mine in zip(replicas, expected, strict=True):
            wait_until(
                lambda r=replica, m=mine: set(_up(r)) == m and all(_up(r).values()),  # type: ignore[misc]
                10,
                message="a replica did not poll exactly its share",
            )
        polled = [set(_up(replica)) for replica in replicas]
        assert polled[0].isdisjoint(polled[1])
        assert polled[0] | polled[1] == names
        started = replicas[0].events("slotwatch started")[0]
        assert started["shard"] == "0/2"
        assert set(started["targets"]) == expected[0]
    finally:
        for replica in replicas:
            replica.stop()


def test_a_replica_whose_shard_holds_no_target_says_so_and_serves_process_metrics(
    fleet_cluster: Cluster, tmp_path: Path
) -> None:
    # docs/fleet.md: a shard that holds no target logs a warning and serves only process
    # metrics; it is not an error (a fleet smaller than its replicas).
    (database,) = create_databases(fleet_cluster, 1, prefix="lonely")
    targets = fleet_targets(fleet_cluster, [database], 1, [])
    config = write_targets_file(tmp_path / "fleet.toml", targets)
    empty = next(i for i in range(2) if not share(targets, Shard(i, 2)))
    settings = {"SLOTWATCH_CONFIG": str(config), "SLOTWATCH_SHARD": f"{empty}/2"}
    with SlotwatchProcess(settings, tmp_path / "slotwatch.log") as proc:
        wait_until(
            lambda: proc.events("no target to poll: this replica's shard holds none"),
            10,
            message="no warning for an empty shard",
        )
        metrics = proc.metrics()
        assert metrics.value("slotwatch_build_info", version=__version__) == 1
        assert metrics.find("slotwatch_up") == []
        assert proc.get("/healthz").status_code == 200
