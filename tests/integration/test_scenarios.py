"""Detection scenarios: a real consumer, a real `slotwatch run`, and what an operator reads.

Each test is one operator story on PostgreSQL 15 and 18 (through the ``pg_install`` fixture),
told with thresholds of seconds instead of minutes: a busy and an idle database stay healthy, a
frozen consumer reads ``wedged`` within the stall window, a cut-off or killed one ``inactive``
after the inactive window, a snapshot copy is ``snapshotting``, a slot running out of WAL budget
is ``at_risk`` with a shrinking ETA and then ``lost``, and two slots of a sync-rules redeploy are
tracked apart. Assertions read /metrics and /status of the daemon, its JSON log, and the exit
code and line of ``slotwatch check``.

Each test gets its own slot prefix (``powersync_selfhost<N>_``) and pattern, so tests sharing the
module's cluster never see each other's slots. The measured detection latencies are printed
(``pytest -n 0 -s``) and recorded as properties in the JUnit XML.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from slotwatch_proc import Metrics, SlotwatchFactory, SlotwatchProcess, run_cli

from sandbox.cluster import Cluster
from sandbox.consumer import Consumer, powersync_slot_name
from sandbox.installs import PgInstall
from sandbox.snapshot import SnapshotSession
from sandbox.waiting import wait_until
from sandbox.writer import Writer

TARGET = "default"
POLL = 0.5
STALL = 3.0
INACTIVE = 2.0
FLOOR = 64 * 1024
# Room for a scrape, a slow poll on a loaded 2-core box, and process scheduling.
SLACK = 1.5

ConsumerFactory = Callable[..., Consumer]

_prefix_numbers = itertools.count(1)


# --- the stage ------------------------------------------------------------------------------


@pytest.fixture
def source(cluster: Cluster) -> Cluster:
    """The module's cluster, reset to what most scenarios need: a hung consumer is never cut."""
    cluster.set_config(wal_sender_timeout="0", max_slot_wal_keep_size="-1")
    return cluster


@pytest.fixture
def prefix() -> str:
    """This test's own slot prefix, as PowerSync's `slot_name_prefix` would be configured."""
    return f"powersync_selfhost{next(_prefix_numbers)}_"


def slot_name(prefix: str, sync_rules_id: int = 1) -> str:
    return powersync_slot_name(sync_rules_id, prefix=prefix)


def settings(cluster: Cluster, prefix: str, **extra: str) -> dict[str, str]:
    env = {
        "SLOTWATCH_DSN": cluster.dsn(),
        "SLOTWATCH_SLOT_PATTERN": prefix + "%",
        "SLOTWATCH_LIVENESS_URL": "",
        "SLOTWATCH_POLL_INTERVAL": f"{POLL}s",
        "SLOTWATCH_STALL_AFTER": f"{STALL}s",
        "SLOTWATCH_INACTIVE_AFTER": f"{INACTIVE}s",
        "SLOTWATCH_LAG_FLOOR_BYTES": str(FLOOR),
    }
    env.update(extra)
    return env


# --- reading what the operator reads --------------------------------------------------------


def state(sw: SlotwatchProcess, slot: str) -> str | None:
    return sw.metrics().state(TARGET, slot)


def gauge(metrics: Metrics, name: str, slot: str) -> float | None:
    return metrics.value(name, target=TARGET, slot=slot)


def last_success(sw: SlotwatchProcess) -> float:
    value = sw.metrics().value("slotwatch_last_poll_success_timestamp_seconds", target=TARGET)
    return value or 0.0


def next_poll(sw: SlotwatchProcess, after: float) -> tuple[float, Metrics]:
    """Wait for a poll that succeeded after `after`; return its time and the metrics it made."""

    def fresh() -> tuple[float, Metrics] | None:
        metrics = sw.metrics()
        stamp = metrics.value("slotwatch_last_poll_success_timestamp_seconds", target=TARGET)
        return (stamp, metrics) if stamp is not None and stamp > after else None

    return wait_until(fresh, 10 * POLL + 5, interval=0.05, message="a fresh poll")


def states_over(sw: SlotwatchProcess, slot: str, seconds: float) -> list[str | None]:
    """The slot's state at every poll during the next `seconds`."""
    seen: list[str | None] = []
    stamp = last_success(sw)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        stamp, metrics = next_poll(sw, stamp)
        seen.append(metrics.state(TARGET, slot))
    return seen


def wait_state(sw: SlotwatchProcess, slot: str, wanted: str, timeout: float) -> float:
    """Wait until /metrics shows the slot `wanted`; return when (monotonic clock)."""

    def reached() -> float | None:
        return time.monotonic() if state(sw, slot) == wanted else None

    return wait_until(reached, timeout, interval=0.05, message=f"{slot} {wanted}")


def transitions(sw: SlotwatchProcess, slot: str) -> list[tuple[str | None, str | None]]:
    """The slot's logged story: (from, to) per change, to None once it is gone."""
    events = sw.events("slot state changed") + sw.events("slot gone")
    events.sort(key=lambda event: str(event.get("timestamp", "")))
    return [(e["state_from"], e["state_to"]) for e in events if e["slot"] == slot]


def assert_logged_once_each(sw: SlotwatchProcess, slot: str) -> list[dict[str, Any]]:
    """Every change is one event that continues the last: no repeats, no gaps, full figures."""
    events = [e for e in sw.events("slot state changed") if e["slot"] == slot]
    assert events, f"no state change logged for {slot}"
    previous: str | None = None
    for event in events:
        assert event["target"] == TARGET
        assert event["state_from"] == previous, f"broken story: {events}"
        assert event["state_to"] != event["state_from"]
        assert event["reasons"], event
        assert isinstance(event["reasons"], list)
        for figure in (
            "lag_bytes",
            "retained_wal_bytes",
            "flush_stall_seconds",
            "inactive_seconds",
            "sent_lag_bytes",
            "wal_budget_ratio",
        ):
            assert figure in event, f"{figure} missing from {event}"
        assert "invalidation_eta_seconds" in event
        # A state that pages is logged as a WARNING, the rest as INFO.
        paging = event["state_to"] in {"wedged", "inactive", "at_risk", "lost"}
        assert event["level"] == ("warning" if paging else "info"), event
        previous = event["state_to"]
    return events


Measure = Callable[[str, float], None]


@pytest.fixture
def measure(pg_install: PgInstall, request: pytest.FixtureRequest) -> Measure:
    """``measure(name, seconds)``: print a latency (``pytest -n 0 -s``) and record it in the XML."""

    def record(name: str, seconds: float) -> None:
        request.node.user_properties.append((f"{pg_install.name} {name}", round(seconds, 2)))
        print(f"\n[{pg_install.name}] {name}: {seconds:.2f}s")

    return record


def check(env: dict[str, str]) -> tuple[int, str]:
    done = run_cli("check", env=env)
    lines = done.stdout.splitlines()
    assert len(lines) == 1, f"check printed {done.stdout!r} (stderr {done.stderr!r})"
    return done.returncode, lines[0]


# --- the stories ----------------------------------------------------------------------------


def test_busy_database_with_a_healthy_consumer_stays_healthy(
    source: Cluster, prefix: str, consumer_factory: ConsumerFactory, slotwatch: SlotwatchFactory
) -> None:
    consumer = consumer_factory(source, slot_name(prefix))
    env = settings(source, prefix)
    sw = slotwatch(env)
    with Writer(source):
        seen = states_over(sw, consumer.slot_name, 3 * STALL)
        doc = sw.slot_status(consumer.slot_name)
        code, line = check(env)
    assert len(seen) >= 3 * STALL / POLL * 0.7, f"too few polls: {seen}"
    assert set(seen) == {"healthy"}, seen
    assert doc is not None
    assert doc["state"] == "healthy"
    assert doc["active"] is True
    # The writer really kept WAL moving and the consumer really followed it.
    assert doc["wal_rate_bytes_per_second"]
    assert doc["wal_rate_bytes_per_second"] > FLOOR
    assert doc["flush_stall_seconds"] < STALL
    assert code == 0, line
    assert line.startswith("SLOTWATCH OK - "), line
    perfdata = line.split(" | ", 1)[1]
    assert f"'{consumer.slot_name}_lag'=" in perfdata
    assert "'default_matched_slots'=1" in perfdata
    assert transitions(sw, consumer.slot_name) == [(None, "healthy")]


def test_idle_database_stays_healthy_for_several_stall_windows(
    source: Cluster, prefix: str, consumer_factory: ConsumerFactory, slotwatch: SlotwatchFactory
) -> None:
    consumer = consumer_factory(source, slot_name(prefix))
    sw = slotwatch(settings(source, prefix))
    seen = states_over(sw, consumer.slot_name, 3 * STALL)
    assert set(seen) == {"healthy"}, seen
    doc = sw.slot_status(consumer.slot_name)
    assert doc is not None
    assert doc["lag_bytes"] < FLOOR
    assert doc["flush_stall_seconds"] == 0
    assert transitions(sw, consumer.slot_name) == [(None, "healthy")]


def test_frozen_consumer_reads_wedged_within_the_stall_window_and_recovers(
    source: Cluster,
    prefix: str,
    consumer_factory: ConsumerFactory,
    slotwatch: SlotwatchFactory,
    measure: Measure,
) -> None:
    consumer = consumer_factory(source, slot_name(prefix))
    slot = consumer.slot_name
    sw = slotwatch(settings(source, prefix))
    with Writer(source):
        wait_state(sw, slot, "healthy", 10)
        paused_at = time.monotonic()
        consumer.pause()
        wedged_at = wait_state(sw, slot, "wedged", STALL + 2 * POLL + 10)
        latency = wedged_at - paused_at
        measure("wedge detection latency", latency)
        doc = sw.slot_status(slot)
        metrics = sw.metrics()
        # A hung consumer keeps its connection: `active` alone would have said healthy.
        assert gauge(metrics, "slotwatch_slot_active", slot) == 1
        stall = gauge(metrics, "slotwatch_slot_flush_stall_seconds", slot)
        assert stall is not None
        assert stall >= STALL
        assert doc is not None
        assert doc["state"] == "wedged"
        assert doc["lag_bytes"] >= FLOOR
        assert any("wal_sender_timeout is 0" in reason for reason in doc["reasons"]), doc
        assert any("has not advanced" in reason for reason in doc["reasons"]), doc
        # Its socket buffers swallowed what was sent: "it reads" would be a false lead.
        assert not any("but does not confirm" in reason for reason in doc["reasons"]), doc

        consumer.resume()
        resumed_at = time.monotonic()
        wait_state(sw, slot, "healthy", 15)
        measure("recovery after SIGCONT", time.monotonic() - resumed_at)
    # Not bounded below by the pause: the last confirmation came up to a status interval
    # earlier. The event's own stall figure is what must not be short of the window.
    assert latency <= STALL + 2 * POLL + SLACK, f"wedged only after {latency:.2f}s"
    events = assert_logged_once_each(sw, slot)
    assert [(e["state_from"], e["state_to"]) for e in events] == [
        (None, "healthy"),
        ("healthy", "wedged"),
        ("wedged", "healthy"),
    ]
    assert events[1]["flush_stall_seconds"] >= STALL
    assert events[1]["lag_bytes"] >= FLOOR


def test_frozen_consumer_cut_off_by_wal_sender_timeout_reads_inactive(
    source: Cluster,
    prefix: str,
    consumer_factory: ConsumerFactory,
    slotwatch: SlotwatchFactory,
    measure: Measure,
) -> None:
    # 2s stands in for the default 60s: the real-world path of a hung PowerSync process.
    source.set_config(wal_sender_timeout="2s")
    consumer = consumer_factory(source, slot_name(prefix))
    slot = consumer.slot_name
    sw = slotwatch(settings(source, prefix))
    with Writer(source):
        wait_state(sw, slot, "healthy", 10)
        paused_at = time.monotonic()
        consumer.pause()

        def cut_off() -> bool:
            return gauge(sw.metrics(), "slotwatch_slot_active", slot) == 0

        wait_until(cut_off, 15, interval=0.05, message="walsender cut off")
        inactive_at = wait_state(sw, slot, "inactive", INACTIVE + 2 * POLL + 10)
    measure("hung consumer -> inactive", inactive_at - paused_at)
    doc = sw.slot_status(slot)
    assert doc is not None
    assert doc["state"] == "inactive"
    assert doc["active"] is False
    assert doc["inactive_seconds"] >= INACTIVE
    assert doc["sent_lag_bytes"] is None
    assert "inactive" in [to for _, to in transitions(sw, slot)]
    assert_logged_once_each(sw, slot)


def test_killed_consumer_reads_inactive_after_the_inactive_window(
    source: Cluster,
    prefix: str,
    consumer_factory: ConsumerFactory,
    slotwatch: SlotwatchFactory,
    measure: Measure,
) -> None:
    consumer = consumer_factory(source, slot_name(prefix), reconnect=False)
    slot = consumer.slot_name
    env = settings(source, prefix)
    sw = slotwatch(env)
    wait_state(sw, slot, "healthy", 10)
    killed_at = time.monotonic()
    consumer.kill()
    # Until the window has passed, no walsender is a reconnect in progress, not an outage.
    stamp = last_success(sw)
    before: list[str | None] = []
    while (current := state(sw, slot)) != "inactive":
        stamp, metrics = next_poll(sw, stamp)
        before.append(metrics.state(TARGET, slot))
        assert time.monotonic() - killed_at < INACTIVE + 2 * POLL + 10, before
    latency = time.monotonic() - killed_at
    measure("killed consumer -> inactive", latency)
    assert set(before) <= {"healthy", "inactive"}, before
    assert current == "inactive"
    assert latency >= INACTIVE, f"inactive after {latency:.2f}s, inside the reconnect window"
    assert latency <= INACTIVE + 2 * POLL + SLACK, f"inactive only after {latency:.2f}s"
    metrics = sw.metrics()
    seconds = gauge(metrics, "slotwatch_slot_inactive_seconds", slot)
    assert seconds is not None
    assert seconds >= INACTIVE
    assert gauge(metrics, "slotwatch_slot_active", slot) == 0
    doc = sw.slot_status(slot)
    assert doc is not None
    source_of_clock = (
        "PostgreSQL reports inactive_since" if source.install.major >= 17 else "seen by slotwatch"
    )
    assert any(source_of_clock in reason for reason in doc["reasons"]), doc["reasons"]
    events = assert_logged_once_each(sw, slot)
    assert [e["state_to"] for e in events] == ["healthy", "inactive"], events
    assert events[-1]["inactive_seconds"] >= INACTIVE
    assert events[-1]["sent_lag_bytes"] is None

    code, line = check(env)
    if source.install.major >= 17:
        # The server's own inactive_since lets one poll judge the slot.
        assert code == 2, line
        assert line.startswith("SLOTWATCH CRITICAL - "), line
        assert f"{slot} inactive" in line, line
    else:
        # One poll of PostgreSQL 15 cannot tell a reconnect from an outage: it says so.
        assert code == 1, line
        assert line.startswith("SLOTWATCH WARNING - "), line
        assert "no walsender" in line, line

    # slotwatch restarts: the server's inactive_since survives it, a local clock starts over.
    assert sw.stop() == 0
    restarted = slotwatch(env)
    _, metrics = next_poll(restarted, 0.0)
    first = metrics.state(TARGET, slot)
    if source.install.major >= 17:
        assert first == "inactive"
    else:
        assert first == "healthy"
        doc = restarted.slot_status(slot)
        assert doc is not None
        assert any("under the" in reason for reason in doc["reasons"]), doc["reasons"]
        wait_state(restarted, slot, "inactive", INACTIVE + 2 * POLL + SLACK)


def test_snapshot_copy_reads_snapshotting_not_inactive(
    source: Cluster,
    prefix: str,
    consumer_factory: ConsumerFactory,
    slotwatch: SlotwatchFactory,
    snapshot_session: Callable[..., SnapshotSession],
) -> None:
    # PowerSync creates its slot, then copies the tables with the slot inactive the whole time.
    consumer = consumer_factory(source, slot_name(prefix), start=False)
    slot = consumer.slot_name
    session = snapshot_session(source)
    sw = slotwatch(settings(source, prefix))
    seen = states_over(sw, slot, INACTIVE + 4 * POLL)
    assert set(seen) == {"snapshotting"}, seen
    doc = sw.slot_status(slot)
    assert doc is not None
    assert doc["active"] is False
    assert doc["consumer_busy"] is True
    assert doc["inactive_seconds"] >= INACTIVE
    assert any("snapshot" in reason for reason in doc["reasons"]), doc["reasons"]

    session.stop()
    wait_state(sw, slot, "inactive", INACTIVE + 2 * POLL + 5)
    assert transitions(sw, slot) == [(None, "snapshotting"), ("snapshotting", "inactive")]
    assert_logged_once_each(sw, slot)


def test_slot_running_out_of_wal_budget_reads_at_risk_then_lost(
    source: Cluster,
    prefix: str,
    consumer_factory: ConsumerFactory,
    slotwatch: SlotwatchFactory,
    measure: Measure,
) -> None:
    budget_mib = 16
    source.set_config(max_slot_wal_keep_size=f"{budget_mib}MB")
    consumer = consumer_factory(source, slot_name(prefix), reconnect=False)
    slot = consumer.slot_name
    window = 6.0
    env = settings(
        source, prefix, SLOTWATCH_FORECAST_WINDOW=f"{window}s", SLOTWATCH_AT_RISK_ETA="1h"
    )
    sw = slotwatch(env)
    wait_state(sw, slot, "healthy", 10)
    consumer.kill()

    stop = threading.Event()
    errors: list[BaseException] = []

    def push() -> None:
        # Unrelated application traffic at about 1.5 MiB/s, with no checkpoint of our own.
        try:
            while not stop.wait(0.6):
                source.push_wal(1, checkpoint=False)
        except BaseException as exc:  # noqa: BLE001 -- reported below in the test's thread
            errors.append(exc)

    pusher = threading.Thread(target=push, name="wal-pusher", daemon=True)
    started = time.monotonic()
    pusher.start()
    try:
        at_risk_at = wait_state(sw, slot, "at_risk", window + 20)
        measure("WAL push -> at_risk", at_risk_at - started)
        etas: list[float] = []
        stamp = last_success(sw)
        for _ in range(4):
            stamp, metrics = next_poll(sw, stamp)
            eta = gauge(metrics, "slotwatch_slot_invalidation_eta_seconds", slot)
            assert eta is not None
            etas.append(eta)
        doc = sw.slot_status(slot)
    finally:
        stop.set()
        pusher.join(10)
    assert not errors, errors
    assert all(math.isfinite(eta) and eta > 0 for eta in etas), etas
    assert etas[-1] < etas[0], f"the ETA did not shrink: {etas}"
    assert doc is not None
    assert doc["state"] in ("at_risk", "lost"), doc
    if doc["state"] == "at_risk":
        assert doc["wal_budget_bytes"] == budget_mib * 1024 * 1024
        assert 0 < doc["invalidation_eta_seconds"] < 3600
        assert doc["wal_budget_ratio"] is not None
        assert doc["wal_budget_ratio"] < 1
    ratio = sw.metrics().value("slotwatch_max_slot_wal_keep_size_bytes", target=TARGET)
    assert ratio == budget_mib * 1024 * 1024

    # Past the limit, the next checkpoint removes the WAL and PostgreSQL invalidates the slot.
    source.push_wal(budget_mib + 4, checkpoint=True)

    def invalidated() -> bool:
        row = source.slot(slot)
        if row is not None and row["wal_status"] == "lost":
            return True
        source.execute("CHECKPOINT")
        return False

    wait_until(invalidated, 20, interval=0.2, message="slot invalidated")
    wait_state(sw, slot, "lost", 10)
    metrics = sw.metrics()
    lost = metrics.value("slotwatch_slot_wal_status", target=TARGET, slot=slot, wal_status="lost")
    assert lost == 1
    assert gauge(metrics, "slotwatch_slot_invalidation_eta_seconds", slot) == 0
    doc = sw.slot_status(slot)
    assert doc is not None
    assert doc["restart_lsn"] is None
    if source.install.major >= 17:
        assert doc["invalidation_reason"] == "wal_removed"
    events = assert_logged_once_each(sw, slot)
    story = [e["state_to"] for e in events]
    # The forecast, not only the last-minute budget ratio, raised it: there was time to act.
    first_at_risk = next(e for e in events if e["state_to"] == "at_risk")
    assert any("forecast to exhaust" in r for r in first_at_risk["reasons"]), first_at_risk
    assert first_at_risk["invalidation_eta_seconds"] is not None
    assert story[0] == "healthy", story
    assert story[-1] == "lost", story
    assert "at_risk" in story, story

    code, line = check(env)
    assert code == 2, line
    assert line.startswith("SLOTWATCH CRITICAL - "), line
    assert f"{slot} lost" in line, line


def test_two_slots_of_a_redeploy_are_tracked_apart(
    source: Cluster,
    prefix: str,
    consumer_factory: ConsumerFactory,
    slotwatch: SlotwatchFactory,
    snapshot_session: Callable[..., SnapshotSession],
) -> None:
    old = consumer_factory(source, slot_name(prefix, 1))
    env = settings(source, prefix)
    sw = slotwatch(env)
    wait_state(sw, old.slot_name, "healthy", 10)

    # A sync-rules deploy: a new slot copies its snapshot while the old one still streams.
    new = consumer_factory(source, slot_name(prefix, 2), start=False)
    session = snapshot_session(source)
    wait_state(sw, new.slot_name, "snapshotting", 10)
    metrics = sw.metrics()
    assert metrics.value("slotwatch_matched_slots", target=TARGET) == 2
    assert metrics.state(TARGET, old.slot_name) == "healthy"
    assert gauge(metrics, "slotwatch_slot_active", old.slot_name) == 1
    assert gauge(metrics, "slotwatch_slot_active", new.slot_name) == 0
    code, line = check(env)
    assert code == 1, line
    assert line.startswith("SLOTWATCH WARNING - "), line
    assert "2 slots match" in line, line
    assert "'default_matched_slots'=2" in line

    # The new generation streams as its copy commits; the old one's consumer stops.
    new.start()
    session.stop()
    old.kill()
    wait_state(sw, new.slot_name, "healthy", 10)
    wait_state(sw, old.slot_name, "inactive", INACTIVE + 2 * POLL + 10)
    assert state(sw, new.slot_name) == "healthy"

    # The old slot is dropped: its series go with it, the new one's stay.
    source.execute("SELECT pg_drop_replication_slot(%s)", (old.slot_name,))

    def dropped() -> bool:
        return sw.metrics().value("slotwatch_matched_slots", target=TARGET) == 1

    wait_until(dropped, 10, interval=0.05, message="old slot gone from /metrics")
    metrics = sw.metrics()
    assert not [s for s in metrics.samples if s[1].get("slot") == old.slot_name]
    assert metrics.state(TARGET, new.slot_name) == "healthy"
    assert sw.slot_status(old.slot_name) is None
    old_story = transitions(sw, old.slot_name)
    assert old_story[0] == (None, "healthy"), old_story
    assert old_story[-1] == ("inactive", None), old_story
    new_story = [e["state_to"] for e in assert_logged_once_each(sw, new.slot_name)]
    assert new_story == ["snapshotting", "healthy"], new_story


def test_check_is_critical_when_no_slot_matches(source: Cluster, prefix: str) -> None:
    code, line = check(settings(source, prefix))
    assert code == 2, line
    assert line.startswith("SLOTWATCH CRITICAL - "), line
    assert "no slot matches" in line, line
    assert "'default_matched_slots'=0" in line
