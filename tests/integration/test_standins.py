"""The PowerSync-like stand-ins do what PowerSync does, on PostgreSQL 15 and 18.

The fidelity scenarios (test_fidelity.py) trust these behaviours of ``Replicator`` and
``PowerSyncMetrics``, each read here from the server's own views or from the endpoint as a
scraper parses it: the first confirm comes one delay after attaching, never before; a large
transaction is confirmed only once applied while the walsender has sent it all; a crash loop
attaches and leaves without ever moving ``confirmed_flush_lsn``; a frozen client keeps its slot
active and confirms nothing; an idle stream follows unrelated WAL through keepalive positions;
the metrics endpoint serves PowerSync's counters, rising with the client and flat when it stops.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sandbox.cluster import Cluster
from sandbox.powersync_metrics import PowerSyncMetrics
from sandbox.replicator import Replicator
from sandbox.waiting import wait_until

ReplicatorFactory = Callable[..., Replicator]
MetricsFactory = Callable[..., PowerSyncMetrics]

STATUS = 0.5
FIRST_CONFIRM = 2.0
# Room for a loaded 2-core box between "the client sent it" and "the view shows it".
SLACK = 1.5


@pytest.fixture
def source(cluster: Cluster) -> Cluster:
    """The module's cluster with ``wal_sender_timeout = 0``: a stopped client is never cut off."""
    cluster.set_config(wal_sender_timeout="0")
    return cluster


def confirmed(cluster: Cluster, slot: str) -> int:
    row = cluster.slot(slot)
    assert row is not None, f"slot {slot} vanished"
    return int(row["confirmed_flush_bytes"])


def walsender(cluster: Cluster, slot: str) -> dict[str, object] | None:
    """The slot's walsender as pg_stat_replication shows it (sent LSN as bytes), or None."""
    rows = cluster.query(
        "SELECT r.application_name, (r.sent_lsn - '0/0')::bigint, r.state"
        " FROM pg_stat_replication r JOIN pg_replication_slots s ON s.active_pid = r.pid"
        " WHERE s.slot_name = %s",
        (slot,),
    )
    if not rows:
        return None
    name, sent, state = rows[0]
    return {"application_name": name, "sent": int(sent), "state": state}


def holds_throughout(predicate: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not predicate():
            return False
        time.sleep(0.05)
    return predicate()


def scrape(server: PowerSyncMetrics) -> dict[str, float]:
    response = httpx.get(server.url, timeout=5)
    response.raise_for_status()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_first_confirm_comes_one_delay_after_attaching_never_before(
    source: Cluster, replicator_factory: ReplicatorFactory
) -> None:
    replicator = replicator_factory(
        source, start=False, status_interval=STATUS, first_confirm=FIRST_CONFIRM
    )
    slot = replicator.slot_name
    before = confirmed(source, slot)
    # WAL waits behind the slot before the client attaches, as after an outage.
    head = source.write(rows=500)
    replicator.start()
    attached = replicator.events("attached")[0].at
    shown = walsender(source, slot)
    assert shown is not None
    assert shown["application_name"] == "powersync/1.0"

    moved_at = wait_until(
        lambda: time.monotonic() if confirmed(source, slot) >= head else None,
        FIRST_CONFIRM + STATUS + 10,
        interval=0.02,
        message="first confirm",
    )
    delay = moved_at - attached
    print(f"\n[{source.install.name}] first confirm {delay:.2f}s after attach")
    assert delay >= FIRST_CONFIRM, f"confirmed after {delay:.2f}s, before its first reply"
    assert delay <= FIRST_CONFIRM + SLACK, f"first confirm only after {delay:.2f}s"
    assert before < head
    # The client reports a reply after sending it, and that line is read here on its own thread:
    # the server may show the confirm a moment before this process has read the report.
    statuses = wait_until(
        lambda: replicator.events("status") or None, 5, message="the first reply's report"
    )
    assert statuses[0].at - attached >= FIRST_CONFIRM
    # Then a reply every status interval.
    wait_until(lambda: len(replicator.events("status")) >= 4, 10, message="status replies")
    gaps = [b.at - a.at for a, b in zip(statuses, replicator.events("status")[1:4], strict=False)]
    assert all(STATUS * 0.8 <= gap <= STATUS + SLACK for gap in gaps), gaps


def test_large_transaction_is_confirmed_only_once_applied(
    source: Cluster, replicator_factory: ReplicatorFactory
) -> None:
    rate = 4000.0
    rows = 12_000  # three seconds to apply
    replicator = replicator_factory(source, status_interval=STATUS, first_confirm=STATUS)
    slot = replicator.slot_name
    settled = source.write(rows=1)
    wait_until(lambda: confirmed(source, slot) >= settled, 10, message="settled")
    replicator.set_rate(rate)
    before = confirmed(source, slot)
    rows_before = replicator.progress.rows

    committed_at = time.monotonic()
    commit = source.write(rows=rows, pad=100)
    # The walsender decodes the whole transaction at its commit and sends it out at once.
    wait_until(
        lambda: (shown := walsender(source, slot)) is not None and int(shown["sent"]) >= commit,
        10,
        message="transaction sent",
    )
    samples: list[tuple[int, int]] = []
    while (position := confirmed(source, slot)) < commit:
        samples.append((position, replicator.progress.rows))
        assert time.monotonic() - committed_at < rows / rate + 15, samples[-3:]
        time.sleep(0.25)
    applied_in = time.monotonic() - committed_at
    print(f"\n[{source.install.name}] {rows} rows at {rate:g}/s confirmed after {applied_in:.2f}s")

    assert applied_in >= rows / rate, f"confirmed after {applied_in:.2f}s, before it was applied"
    assert len(samples) >= 4, samples
    # Meanwhile confirmed_flush_lsn stayed before the commit (a keepalive received before the
    # transaction may still have moved it within the transaction's WAL), while the applied rows
    # kept rising.
    assert all(before <= position < commit for position, _ in samples), samples
    applied = [count for _, count in samples]
    assert applied == sorted(applied)
    assert applied[-1] - applied[0] >= rate, applied
    wait_until(
        lambda: replicator.progress.rows - rows_before == rows,
        5,
        message=f"{rows} rows counted",
    )


def test_crash_loop_attaches_and_leaves_without_ever_confirming(
    source: Cluster, replicator_factory: ReplicatorFactory
) -> None:
    replicator = replicator_factory(
        source,
        status_interval=STATUS,
        first_confirm=STATUS,
        confirming=False,
        session_seconds=1.0,
        reconnect_after=1.0,
    )
    slot = replicator.slot_name
    stuck = confirmed(source, slot)
    seen_active: list[bool] = []
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        source.write(rows=20)
        row = source.slot(slot)
        assert row is not None
        seen_active.append(bool(row["active"]))
        assert int(row["confirmed_flush_bytes"]) == stuck
        time.sleep(0.1)
    attaches = replicator.events("attached")
    assert len(attaches) >= 3, replicator.log()
    assert len(replicator.events("detached")) >= 2
    assert not replicator.events("status")
    assert True in seen_active
    assert False in seen_active
    # It read what it was sent all along: only the confirm is missing.
    assert replicator.progress.rows > 0

    # The loop ends when the consumer stays and confirms again.
    replicator.recover()
    head = source.write(rows=1)
    wait_until(lambda: confirmed(source, slot) >= head, 10, message="confirm after the loop")


def test_frozen_client_keeps_its_slot_active_and_confirms_nothing(
    source: Cluster, replicator_factory: ReplicatorFactory
) -> None:
    replicator = replicator_factory(source, status_interval=STATUS, first_confirm=STATUS)
    slot = replicator.slot_name
    settled = source.write(rows=1)
    wait_until(lambda: confirmed(source, slot) >= settled, 10, message="settled")
    replicator.freeze()
    stuck = confirmed(source, slot)
    progress = replicator.progress
    head = source.write(rows=200)

    def still_frozen() -> bool:
        row = source.slot(slot)
        return bool(row and row["active"] and row["confirmed_flush_bytes"] == stuck)

    assert holds_throughout(still_frozen, 4 * STATUS + 1)
    assert replicator.progress == progress
    replicator.thaw()
    wait_until(lambda: confirmed(source, slot) >= head, 10, message="confirm after thaw")


def test_idle_stream_follows_unrelated_wal_through_keepalives(
    source: Cluster, replicator_factory: ReplicatorFactory
) -> None:
    replicator = replicator_factory(source, status_interval=STATUS, first_confirm=STATUS)
    slot = replicator.slot_name
    settled = source.write(rows=1)
    wait_until(lambda: confirmed(source, slot) >= settled, 10, message="settled")
    chunks = replicator.progress.chunks
    rows = replicator.progress.rows
    # WAL only from an unpublished table: nothing to apply, only keepalive positions to confirm.
    head = source.push_wal(3, checkpoint=False)
    wait_until(lambda: confirmed(source, slot) >= head, 10, message="confirm at a keepalive")
    assert replicator.progress.rows == rows
    assert replicator.progress.chunks > chunks


def test_metrics_endpoint_serves_the_clients_counters_as_powersync_names_them(
    source: Cluster, replicator_factory: ReplicatorFactory, powersync_metrics: MetricsFactory
) -> None:
    server = powersync_metrics()
    first = scrape(server)
    assert first == {
        "powersync_data_replicated_bytes_total": 0,
        "powersync_rows_replicated_total": 0,
        "powersync_transactions_replicated_total": 0,
        "powersync_chunks_replicated_total": 0,
    }, "no lag gauge before the first stream is live"

    replicator = replicator_factory(source, status_interval=STATUS, first_confirm=STATUS)
    server.follow(replicator)
    server.lag_seconds = 0.0
    source.write(rows=30)
    wait_until(lambda: scrape(server)["powersync_rows_replicated_total"] >= 30, 10, message="rows")
    served = scrape(server)
    assert served["powersync_transactions_replicated_total"] >= 1
    assert served["powersync_data_replicated_bytes_total"] > 0
    assert served["powersync_chunks_replicated_total"] >= 1
    assert served["powersync_replication_lag_seconds"] == 0

    # Frozen: its counters stay flat while its lag gauge says what PowerSync's says, 0.
    replicator.freeze()
    flat = scrape(server)
    source.write(rows=30)
    assert holds_throughout(lambda: scrape(server) == flat, 1.5)

    # Unfollowed, counters keep what they had and move only by hand.
    server.follow(None)
    server.add(rows=5, bytes=50)
    later = scrape(server)
    assert later["powersync_rows_replicated_total"] == flat["powersync_rows_replicated_total"] + 5
    assert later["powersync_chunks_replicated_total"] == flat["powersync_chunks_replicated_total"]

    server.set_mode("fail")
    assert httpx.get(server.url, timeout=5).status_code == 503
    server.set_mode("hang")
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(server.url, timeout=0.5)
    server.set_mode("ok")
    assert scrape(server) == later
