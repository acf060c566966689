"""Detection next to a consumer that behaves like PowerSync: no false `wedged` on its normal life,
crash loops caught and held, a slow large transaction told from a frozen stream.

Each test is one operator story on PostgreSQL 15 and 18, told with a real `slotwatch run` and the
stand-ins that confirm the way PowerSync 1.25 does (``sandbox.replicator.Replicator``) and serve
PowerSync's own counters (``sandbox.powersync_metrics.PowerSyncMetrics``). A background reader
records the slot's state at every poll from /metrics, so each test asserts the whole sequence an
operator would have seen, not one moment of it. Latencies are printed (``pytest -n 0 -s``) and
kept as properties in the JUnit XML.

The clock is scaled down from PowerSync's and slotwatch's defaults:

=========================== ============ ===========
what                        real         here
=========================== ============ ===========
poll interval               15 s         0.5 s
stall window                5 min        3 s
attach grace (slotwatch's)  30 s         3 s (bounded by the stall window)
inactive window             2 min        2 s
first confirm after attach  ~10 s        1 s (a third of the grace, as 10 s of 30 s)
status reply interval       10 s         1 s
retry after an error        ~30 s        0.5 s (a quarter of the inactive window, as 30 s of 2 min)
=========================== ============ ===========
"""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from slotwatch_proc import Metrics, SlotwatchFactory, SlotwatchProcess

from sandbox.cluster import Cluster
from sandbox.consumer import create_slot, powersync_slot_name
from sandbox.powersync_metrics import PowerSyncMetrics
from sandbox.replicator import Replicator
from sandbox.snapshot import SnapshotSession
from sandbox.waiting import wait_until
from sandbox.writer import Writer

TARGET = "default"
POLL = 0.5
STALL = 3.0
INACTIVE = 2.0
FLOOR = 64 * 1024
# slotwatch's grace for a newly attached walsender: 30 s, never longer than the stall window.
GRACE = min(STALL, 30.0)
FIRST_CONFIRM = GRACE / 3
STATUS = 1.0
RETRY = INACTIVE / 4
# Room for a scrape, a slow poll on a loaded 2-core box, and process scheduling.
SLACK = 1.5

ReplicatorFactory = Callable[..., Replicator]
MetricsFactory = Callable[..., PowerSyncMetrics]
Measure = Callable[[str, float], None]

_prefix_numbers = itertools.count(1)


# --- the stage ------------------------------------------------------------------------------


@dataclass
class Stage:
    """One story's cast: the source database, a slot of its own, and the ways to start the rest."""

    source: Cluster
    prefix: str  # this test's own slot prefix: no other test's pattern matches its slot
    slot: str
    install: str
    replicator_factory: ReplicatorFactory
    slotwatch_factory: SlotwatchFactory
    metrics_factory: MetricsFactory
    properties: list[tuple[str, object]]
    timelines: list[Timeline] = field(default_factory=list)

    def replicator(self, **overrides: Any) -> Replicator:
        """A consumer of the slot with PowerSync's timing, scaled like the windows."""
        settings: dict[str, Any] = {
            "status_interval": STATUS,
            "first_confirm": FIRST_CONFIRM,
            "reconnect_after": RETRY,
            **overrides,
        }
        return self.replicator_factory(self.source, self.slot, **settings)

    def powersync_metrics(self, follow: Replicator | None = None) -> PowerSyncMetrics:
        """PowerSync's own endpoint, up with a lag of 0; its counters follow ``follow``, if any."""
        server = self.metrics_factory(lag_seconds=0.0)
        server.follow(follow)
        return server

    def watch(self, **extra: str) -> tuple[SlotwatchProcess, Timeline]:
        """`slotwatch run` over this slot with the short windows, and the timeline of its polls."""
        env = {
            "SLOTWATCH_DSN": self.source.dsn(),
            "SLOTWATCH_SLOT_PATTERN": self.prefix + "%",
            "SLOTWATCH_LIVENESS_URL": "",
            "SLOTWATCH_POLL_INTERVAL": f"{POLL}s",
            "SLOTWATCH_PROBE_INTERVAL": f"{POLL}s",
            "SLOTWATCH_STALL_AFTER": f"{STALL}s",
            "SLOTWATCH_INACTIVE_AFTER": f"{INACTIVE}s",
            "SLOTWATCH_LAG_FLOOR_BYTES": str(FLOOR),
            **extra,
        }
        sw = self.slotwatch_factory(env)
        timeline = Timeline(sw, self.slot)
        self.timelines.append(timeline)
        return sw, timeline

    def measure(self, name: str, seconds: float) -> None:
        """Print a latency (``pytest -n 0 -s``) and record it in the JUnit XML."""
        self.properties.append((f"{self.install} {name}", round(seconds, 2)))
        print(f"\n[{self.install}] {name}: {seconds:.2f}s")

    def tell(self, name: str, states: list[str | None]) -> None:
        """Print and record the story an operator would retell."""
        told = story(states)
        self.properties.append((f"{self.install} {name}", " -> ".join(map(str, told))))
        print(f"\n[{self.install}] {name}: {' -> '.join(map(str, told))} ({len(states)} polls)")


@pytest.fixture
def stage(
    cluster: Cluster,
    replicator_factory: ReplicatorFactory,
    slotwatch: SlotwatchFactory,
    powersync_metrics: MetricsFactory,
    request: pytest.FixtureRequest,
) -> Iterator[Stage]:
    # A stopped consumer is never cut off: "wedged but active" needs wal_sender_timeout = 0.
    cluster.set_config(wal_sender_timeout="0", max_slot_wal_keep_size="-1")
    prefix = f"powersync_selfhost{next(_prefix_numbers)}_"
    cast = Stage(
        source=cluster,
        prefix=prefix,
        slot=powersync_slot_name(1, prefix=prefix),
        install=cluster.install.name,
        replicator_factory=replicator_factory,
        slotwatch_factory=slotwatch,
        metrics_factory=powersync_metrics,
        properties=request.node.user_properties,
    )
    yield cast
    for timeline in cast.timelines:
        timeline.stop()


# --- what the operator sees, poll by poll ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Poll:
    at: float  # when the poll succeeded, on the monotonic clock the stand-ins report in
    state: str | None
    active: float | None
    stall: float | None
    consumer_up: float | None
    progress_age: float | None


class Timeline:
    """Every poll's state of one slot, read from /metrics by a thread until :meth:`stop`."""

    def __init__(self, sw: SlotwatchProcess, slot: str) -> None:
        self.sw = sw
        self.slot = slot
        self.polls: list[Poll] = []
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        # A poll's timestamp is wall time; the stand-ins' events are monotonic.
        self._offset = time.time() - time.monotonic()
        self._thread = threading.Thread(target=self._run, name="timeline", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        stamp = 0.0
        try:
            while not self._stop.wait(0.05):
                metrics = self.sw.metrics()
                fresh = metrics.value(
                    "slotwatch_last_poll_success_timestamp_seconds", target=TARGET
                )
                if fresh is None or fresh <= stamp:
                    continue
                stamp = fresh
                poll = self._poll(metrics, fresh - self._offset)
                with self._lock:
                    self.polls.append(poll)
        except Exception as exc:  # noqa: BLE001 - raised in the test's thread by stop()
            self.error = exc

    def _poll(self, metrics: Metrics, at: float) -> Poll:
        def slot_value(name: str) -> float | None:
            return metrics.value(name, target=TARGET, slot=self.slot)

        return Poll(
            at=at,
            state=metrics.state(TARGET, self.slot),
            active=slot_value("slotwatch_slot_active"),
            stall=slot_value("slotwatch_slot_flush_stall_seconds"),
            consumer_up=metrics.value("slotwatch_consumer_up", target=TARGET),
            progress_age=metrics.value("slotwatch_consumer_progress_age_seconds", target=TARGET),
        )

    def stop(self) -> None:
        """Stop reading (again is fine); raise what made the reader fail, if anything did."""
        self._stop.set()
        self._thread.join(10)
        if self.error is not None:
            raise RuntimeError(f"reading /metrics failed: {self.error!r}")

    def between(self, start: float = 0.0, end: float = float("inf")) -> list[Poll]:
        with self._lock:
            return [poll for poll in self.polls if start <= poll.at < end]

    def states(self, start: float = 0.0, end: float = float("inf")) -> list[str | None]:
        return [poll.state for poll in self.between(start, end)]

    def wait_for(self, state: str, *, after: float, timeout: float) -> Poll:
        """The first poll after ``after`` that read ``state`` (waiting up to ``timeout``)."""

        def found() -> Poll | None:
            if self.error is not None:
                raise RuntimeError(f"reading /metrics failed: {self.error!r}")
            return next((p for p in self.between(after) if p.state == state), None)

        return wait_until(found, timeout, interval=0.05, message=f"{self.slot} {state}")

    def wait_polls(self, count: int, *, after: float) -> None:
        wait_until(
            lambda: len(self.between(after)) >= count,
            count * POLL * 4 + 10,
            message=f"{count} polls",
        )


def story(states: list[str | None]) -> list[str | None]:
    """The states in order with repeats collapsed: what an operator would retell."""
    return [state for state, _ in itertools.groupby(states)]


def confirmed(cluster: Cluster, slot: str) -> int:
    row = cluster.slot(slot)
    assert row is not None, f"slot {slot} vanished"
    return int(row["confirmed_flush_bytes"])


def first_confirm_after(cluster: Cluster, slot: str, position: int, timeout: float) -> float:
    """When (monotonic) the server first showed ``confirmed_flush_lsn`` past ``position``."""
    return wait_until(
        lambda: time.monotonic() if confirmed(cluster, slot) > position else None,
        timeout,
        interval=0.02,
        message=f"{slot} confirmed past {position}",
    )


def reasons(sw: SlotwatchProcess, slot: str) -> list[str]:
    doc = sw.slot_status(slot)
    assert doc is not None, f"{slot} missing from /status"
    return list(doc["reasons"])


# --- (a) re-attach after an outage or a snapshot longer than the stall window -----------------


def test_reattach_after_an_outage_waits_for_the_first_confirm_instead_of_paging(
    stage: Stage,
) -> None:
    # PowerSync restarts (or loses its connection) while the application keeps writing: the slot
    # has no walsender for longer than the stall window, then one attaches with a backlog and
    # confirms for the first time ~10 s (here 1 s) later.
    source, slot = stage.source, stage.slot
    replicator = stage.replicator()
    _, timeline = stage.watch()
    with Writer(source):
        timeline.wait_for("healthy", after=0, timeout=10)
        replicator.detach()
        left_at = time.monotonic()
        timeline.wait_for("inactive", after=left_at, timeout=INACTIVE + 2 * POLL + 10)
        wait_until(lambda: time.monotonic() - left_at > STALL + 1, STALL + 5)
        stuck = confirmed(source, slot)
        attached = replicator.attach().at
        confirmed_at = first_confirm_after(source, slot, stuck, FIRST_CONFIRM + STATUS + 10)
        healthy = timeline.wait_for("healthy", after=confirmed_at, timeout=2 * POLL + 10)
        timeline.wait_polls(4, after=healthy.at)
    timeline.stop()

    during_grace = timeline.between(attached, confirmed_at)
    stage.measure("outage: first confirm after re-attach", confirmed_at - attached)
    stage.measure("outage: healthy after first confirm", healthy.at - confirmed_at)
    stage.tell("outage story", timeline.states())
    assert confirmed_at - attached >= FIRST_CONFIRM * 0.9, "the stand-in confirmed too early"
    assert during_grace, "no poll fell between the attach and the first confirm"
    assert "wedged" not in timeline.states(), story(timeline.states())
    assert {p.state for p in during_grace} <= {"inactive", "healthy"}, during_grace
    assert story(timeline.states()) == ["healthy", "inactive", "healthy"]
    # The stall clock kept its meaning: it ran through the outage, past the window.
    assert max(p.stall or 0.0 for p in during_grace) >= STALL, during_grace


def test_reattach_after_a_snapshot_longer_than_the_stall_window_reads_healthy(
    stage: Stage, snapshot_session: Callable[..., SnapshotSession]
) -> None:
    # A new slot: PowerSync copies the tables (slot inactive) while the application writes, then
    # its walsender attaches with everything written meanwhile behind it.
    source, slot = stage.source, stage.slot
    replicator = stage.replicator(start=False)
    session = snapshot_session(source)
    _, timeline = stage.watch()
    with Writer(source):
        began = timeline.wait_for("snapshotting", after=0, timeout=10).at
        wait_until(lambda: time.monotonic() - began > STALL + 1, STALL + 5)
        stuck = confirmed(source, slot)
        replicator.start()
        attached = replicator.events("attached")[0].at
        session.stop()
        confirmed_at = first_confirm_after(source, slot, stuck, FIRST_CONFIRM + STATUS + 10)
        healthy = timeline.wait_for("healthy", after=confirmed_at, timeout=2 * POLL + 10)
        timeline.wait_polls(4, after=healthy.at)
    timeline.stop()

    during_grace = timeline.between(attached, confirmed_at)
    stage.measure("snapshot: first confirm after attach", confirmed_at - attached)
    stage.measure("snapshot: healthy after first confirm", healthy.at - confirmed_at)
    stage.tell("snapshot story", timeline.states())
    assert during_grace, "no poll fell between the attach and the first confirm"
    assert "wedged" not in timeline.states(), story(timeline.states())
    assert story(timeline.states()) == ["snapshotting", "healthy"]
    assert max(p.stall or 0.0 for p in during_grace) >= STALL, during_grace


# --- (b) crash loop ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "hold",
    [1.0, GRACE + 1.0],
    ids=["leaves-within-the-grace", "holds-past-the-grace"],
)
def test_crash_loop_reads_wedged_and_stays_wedged_until_the_consumer_confirms(
    stage: Stage, hold: float
) -> None:
    # PowerSync fails after attaching, before its first confirm, and retries: attached for
    # `hold` (shorter or longer than the grace a new walsender gets), away 0.5 s, again and
    # again, never moving confirmed_flush_lsn.
    source, slot = stage.source, stage.slot
    replicator = stage.replicator(
        create=False, drop=True, start=False, confirming=False, session_seconds=hold
    )
    sw, timeline = stage.watch()
    timeline.wait_polls(1, after=0)
    # The slot is made just before the loop starts: PostgreSQL 17+ counts a slot never held as
    # inactive since its creation, and this story is about the loop, not the wait before it.
    create_slot(source, slot)
    created = timeline.wait_for("healthy", after=0, timeout=10).at
    with Writer(source):
        replicator.start()
        began = replicator.events("attached")[0].at
        wedged = timeline.wait_for("wedged", after=began, timeout=STALL + GRACE + 2 * POLL + 10)
        # Hold it through several attach/detach cycles.
        cycles = len(replicator.events("detached"))
        wait_until(lambda: len(replicator.events("detached")) >= cycles + 3, 8 * (hold + RETRY))
        said = reasons(sw, slot)  # by now, about the loop rather than one walsender
        recovered_at = time.monotonic()
        replicator.recover()
        healthy = timeline.wait_for(
            "healthy", after=recovered_at, timeout=RETRY + FIRST_CONFIRM + STATUS + 2 * POLL + 10
        )
        timeline.wait_polls(4, after=healthy.at)
    timeline.stop()

    latency = wedged.at - began
    held = timeline.states(wedged.at, recovered_at)
    detaches = [e for e in replicator.events("detached") if wedged.at <= e.at < recovered_at]
    stage.measure(f"crash loop, {hold:g}s attached: wedged after the loop began", latency)
    stage.measure(
        f"crash loop, {hold:g}s attached: healthy after it recovered", healthy.at - recovered_at
    )
    stage.tell(f"crash loop, {hold:g}s attached: story", timeline.states(created))
    print(f"[{stage.install}] {len(detaches)} detaches over {len(held)} polls read wedged")
    assert latency <= STALL + GRACE + 2 * POLL + SLACK, f"wedged only after {latency:.2f}s"
    assert len(detaches) >= 2, replicator.log()
    assert set(held) == {"wedged"}, held
    before = timeline.states(created, wedged.at)
    assert set(before) <= {"healthy"}, before
    assert story(timeline.states(created)) == ["healthy", "wedged", "healthy"]
    assert any("re-attached" in r or "earlier walsender" in r for r in said), said


# --- (c) one large transaction, applied slowly ------------------------------------------------

BIG_ROWS = 16_000
APPLY_RATE = 2_000.0  # rows per second: 8 s to apply, well past the stall window


def application_writes(source: Cluster) -> Writer:
    """The application's own traffic while the backfill is applied: 400 small rows a second.

    It keeps WAL piling up behind the position the consumer is stuck at. Without it, that
    position can sit within a few KiB of the large commit (PowerSync, like the stand-in, confirms
    a keepalive's position received before the transaction began, and the walsender sends one
    whenever it has caught up with the WAL still being written), under any lag floor.
    """
    return Writer(source, rows=20, pad=400, every=0.05)


def _large_transaction(
    stage: Stage, replicator: Replicator, sw: SlotwatchProcess, timeline: Timeline
) -> tuple[float, float, dict[str, list[str]]]:
    """Commit one large transaction the stand-in applies slowly.

    Returns when it was committed and when the server showed it confirmed, and the reasons
    /status gave for each state seen in between.
    """
    source, slot = stage.source, stage.slot
    replicator.set_rate(APPLY_RATE)
    settled = source.write(rows=1)
    wait_until(lambda: confirmed(source, slot) >= settled, 10, message="settled")
    timeline.wait_polls(2, after=time.monotonic())
    before = confirmed(source, slot)
    commit = source.write(rows=BIG_ROWS, pad=100)
    committed = time.monotonic()
    said: dict[str, list[str]] = {}

    def applied() -> bool:
        doc = sw.slot_status(slot)
        if doc is not None:
            said.setdefault(doc["state"], list(doc["reasons"]))
        return confirmed(source, slot) >= commit

    wait_until(
        applied,
        BIG_ROWS / APPLY_RATE + STATUS + 15,
        interval=0.2,
        message="large transaction confirmed",
    )
    done = time.monotonic()
    assert before < commit
    assert done - committed >= BIG_ROWS / APPLY_RATE * 0.9, "applied faster than its rate"
    return committed, done, said


def test_large_transaction_applied_slowly_with_rising_counters_reads_lagging_not_wedged(
    stage: Stage,
) -> None:
    # A backfill: one UPDATE that takes PowerSync longer than the stall window to apply. From
    # PostgreSQL's views it looks frozen; PowerSync's own counters rise all along.
    replicator = stage.replicator()
    metrics = stage.powersync_metrics(follow=replicator)
    sw, timeline = stage.watch(SLOTWATCH_CONSUMER_METRICS_URL=metrics.url)
    timeline.wait_for("healthy", after=0, timeout=10)
    with application_writes(stage.source):
        committed, done, said = _large_transaction(stage, replicator, sw, timeline)
        healthy = timeline.wait_for("healthy", after=done, timeout=STATUS + 2 * POLL + 10)
        timeline.wait_polls(2, after=healthy.at)
    timeline.stop()

    stage.measure("rising counters: confirmed after commit", done - committed)
    stage.tell("rising counters story", timeline.states())
    lagging = next((p for p in timeline.between(committed) if p.state == "lagging"), None)
    assert lagging is not None, (story(timeline.states()), said)
    stage.measure("rising counters: lagging after commit", lagging.at - committed)
    stage.measure("rising counters: healthy after the confirm", healthy.at - done)
    assert "wedged" not in timeline.states(), story(timeline.states())
    assert story(timeline.states()) == ["healthy", "lagging", "healthy"]
    apply = timeline.between(committed, done)
    assert max(p.stall or 0.0 for p in apply) >= STALL, "the stall never passed the window"
    assert all(p.consumer_up == 1 for p in apply), "consumer metrics not read"
    assert any("powersync_rows_replicated_total" in r for r in said.get("lagging", [])), said


def test_large_transaction_with_flat_counters_reads_wedged_within_the_stall_window(
    stage: Stage,
) -> None:
    # The same transaction, but the consumer's account shows no progress: nothing tells it from
    # a frozen consumer, and PowerSync's own lag gauge says 0 (upstream issue #700).
    replicator = stage.replicator()
    metrics = stage.powersync_metrics()  # up, its counters never move
    sw, timeline = stage.watch(SLOTWATCH_CONSUMER_METRICS_URL=metrics.url)
    timeline.wait_for("healthy", after=0, timeout=10)
    with application_writes(stage.source):
        committed, done, said = _large_transaction(stage, replicator, sw, timeline)
        healthy = timeline.wait_for("healthy", after=done, timeout=STATUS + 2 * POLL + 10)
        timeline.wait_polls(2, after=healthy.at)
    timeline.stop()

    stage.tell("flat counters story", timeline.states())
    wedged = next((p for p in timeline.between(committed) if p.state == "wedged"), None)
    assert wedged is not None, (story(timeline.states()), said)
    latency = wedged.at - committed
    stage.measure("flat counters: wedged after commit", latency)
    assert latency <= STALL + 2 * POLL + SLACK, f"wedged only after {latency:.2f}s"
    assert story(timeline.states()) == ["healthy", "wedged", "healthy"]
    assert all(p.consumer_up == 1 for p in timeline.between(committed, done))
    ages = [p.progress_age for p in timeline.between(committed, done) if p.progress_age]
    assert ages
    assert max(ages) >= STALL
    # The #700 blindness, made visible: the reasons quote PowerSync's own lag gauge.
    assert any("lag" in r and "0" in r for r in said.get("wedged", [])), said


# --- (d) frozen stream --------------------------------------------------------------------------


@pytest.mark.parametrize("frozen", ["consumer", "walsender"])
def test_frozen_stream_reads_wedged_within_the_stall_window(stage: Stage, frozen: str) -> None:
    # PowerSync's process hangs (or its walsender does): the connection stays, nothing moves,
    # and PowerSync's own metrics stay flat with a lag of 0 while liveness would stay green.
    source, slot = stage.source, stage.slot
    replicator = stage.replicator()
    metrics = stage.powersync_metrics(follow=replicator)
    sw, timeline = stage.watch(SLOTWATCH_CONSUMER_METRICS_URL=metrics.url)
    walsender_pid = int(replicator.events("attached")[-1].fields["pid"])
    with Writer(source):
        timeline.wait_for("healthy", after=0, timeout=10)
        frozen_at = time.monotonic()
        if frozen == "consumer":
            replicator.freeze()
        else:
            os.kill(walsender_pid, signal.SIGSTOP)
        try:
            wedged = timeline.wait_for("wedged", after=frozen_at, timeout=STALL + 2 * POLL + 10)
            said = reasons(sw, slot)
        finally:
            if frozen == "consumer":
                replicator.thaw()
            else:
                os.kill(walsender_pid, signal.SIGCONT)
        thawed_at = time.monotonic()
        healthy = timeline.wait_for("healthy", after=thawed_at, timeout=STATUS + 2 * POLL + 10)
    timeline.stop()

    latency = wedged.at - frozen_at
    stage.measure(f"frozen {frozen}: wedged after the freeze", latency)
    stage.measure(f"frozen {frozen}: healthy after it resumed", healthy.at - thawed_at)
    stage.tell(f"frozen {frozen} story", timeline.states())
    assert latency <= STALL + 2 * POLL + SLACK, f"wedged only after {latency:.2f}s"
    # Once it resumes, the consumer applies its backlog before its next confirm: its rows counter
    # rises while the position has not moved yet, and a poll in that moment truthfully reads
    # `lagging` (busy), never `healthy` in the middle of the wedge.
    assert story(timeline.states()) in (
        ["healthy", "wedged", "healthy"],
        ["healthy", "wedged", "lagging", "healthy"],
    )
    assert any("has not advanced" in reason for reason in said), said
    # A hung consumer keeps its connection all along: `active` alone would say healthy.
    assert all(p.active == 1 for p in timeline.between(frozen_at, thawed_at))


# --- (e) idle ---------------------------------------------------------------------------------

IDLE_STALL = 2.0


def test_idle_publication_over_ten_stall_windows_never_reads_wedged(stage: Stage) -> None:
    # Nothing published is written; other applications write WAL now and then, PowerSync sends
    # its heartbeat message, and it confirms keepalive positions as the WAL head moves.
    source, slot = stage.source, stage.slot
    replicator = stage.replicator(status_interval=0.5)
    metrics = stage.powersync_metrics(follow=replicator)
    _, timeline = stage.watch(
        SLOTWATCH_CONSUMER_METRICS_URL=metrics.url, SLOTWATCH_STALL_AFTER=f"{IDLE_STALL}s"
    )
    timeline.wait_for("healthy", after=0, timeout=10)
    began = time.monotonic()
    rows = replicator.progress.rows
    end = began + 10 * IDLE_STALL
    beat = 0
    while (now := time.monotonic()) < end:
        source.push_wal(1, checkpoint=False)  # unrelated traffic: a fresh 1 MiB segment
        if beat % 3 == 0:
            source.execute("SELECT pg_logical_emit_message(false, 'powersync', 'ping')")
        beat += 1
        time.sleep(max(0.0, min(1.5, end - now)))
    timeline.stop()

    seen = timeline.states(began, end)
    stage.tell("idle story", seen)
    assert len(seen) >= 10 * IDLE_STALL / POLL * 0.7, f"too few polls: {len(seen)}"
    assert set(seen) == {"healthy"}, story(seen)
    assert replicator.progress.rows == rows, "something published was written"
    assert confirmed(source, slot) > 0
