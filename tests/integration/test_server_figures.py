"""Figures slotwatch passes on from the server, held to PostgreSQL's own answer on a real one.

The decoding counters of `pg_stat_replication_slots` (14+), the age of a slot's `catalog_xmin`,
and the size of `pg_wal` once a slot that pinned it is dropped: docs/contract.md §3 names them,
docs/runbook.md tells an operator to act on them. Each is read from PostgreSQL just before and
just after a poll, and slotwatch's figure must lie between (or equal both, when nothing moves).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from slotwatch_proc import SlotwatchProcess

from sandbox.cluster import Cluster
from sandbox.consumer import Consumer, create_slot, powersync_slot_name
from sandbox.installs import PgInstall
from sandbox.waiting import wait_until

POLL = 0.5
# Decoding spills a transaction to disk past this much memory: 64kB is PostgreSQL's least.
WORK_MEM = "64kB"
COUNTERS = {  # slotwatch's family: pg_stat_replication_slots' column
    "slotwatch_slot_spill_bytes_total": "spill_bytes",
    "slotwatch_slot_stream_bytes_total": "stream_bytes",
    "slotwatch_slot_decoded_bytes_total": "total_bytes",
}


@pytest.fixture(scope="module")
def small_work_mem(pg_install: PgInstall) -> Iterator[Cluster]:
    """A cluster whose decoding spills any transaction bigger than 64 kB."""
    with Cluster(pg_install, settings={"logical_decoding_work_mem": WORK_MEM}) as cluster:
        yield cluster


def settings_for(cluster: Cluster, slot: str) -> dict[str, str]:
    return {
        "SLOTWATCH_DSN": cluster.dsn(),
        "SLOTWATCH_POLL_INTERVAL": f"{POLL}s",
        "SLOTWATCH_LIVENESS_URL": "",
        "SLOTWATCH_SLOT_PATTERN": slot,
    }


def decoding_stats(cluster: Cluster, slot: str) -> dict[str, int] | None:
    rows = cluster.query(
        "SELECT spill_bytes, stream_bytes, total_bytes FROM pg_stat_replication_slots"
        " WHERE slot_name = %s",
        (slot,),
    )
    if not rows:
        return None
    return dict(zip(("spill_bytes", "stream_bytes", "total_bytes"), rows[0], strict=True))


def test_decoding_counters_are_pg_stat_replication_slots(
    small_work_mem: Cluster, consumer_factory: Callable[..., Consumer], tmp_path: Path
) -> None:
    """A transaction bigger than logical_decoding_work_mem spills while PowerSync's stand-in
    decodes it: slotwatch's spill, stream and decoded counters are the server's, once the
    consumer has confirmed past it. PostgreSQL 13 has no such view: the families are absent."""
    cluster = small_work_mem
    consumer = consumer_factory(cluster)
    slot = consumer.slot_name
    with cluster.connect() as conn:
        for _ in range(20):  # small transactions: decoded in memory, never spilled
            conn.execute("INSERT INTO ballast (pad) VALUES ('small')")
        with conn.transaction():
            conn.execute(
                "INSERT INTO ballast (pad) SELECT repeat('x', 1000) FROM generate_series(1, 2000)"
            )
    end = cluster.scalar("SELECT (pg_current_wal_lsn() - '0/0')::bigint")
    wait_until(
        lambda: (cluster.slot(slot) or {}).get("confirmed_flush_bytes", 0) >= end,
        20,
        message="the consumer confirmed past the big transaction",
    )
    major = cluster.install.major
    if major >= 14:
        wait_until(
            lambda: (decoding_stats(cluster, slot) or {}).get("spill_bytes", 0) > 0,
            10,
            message="the server counted the spill",
        )
    with SlotwatchProcess(settings_for(cluster, slot), tmp_path / "slotwatch.log") as daemon:
        before = decoding_stats(cluster, slot) if major >= 14 else None
        m = daemon.metrics_after(time.time())
        after = decoding_stats(cluster, slot) if major >= 14 else None
    assert m.state("default", slot) == "healthy"
    for family, column in COUNTERS.items():
        value = m.value(family, target="default", slot=slot)
        if before is None or after is None:
            assert value is None, f"{family} on PostgreSQL {major}"
            continue
        assert value is not None, family
        assert before[column] <= value <= after[column], (family, before, value, after)
    if before is not None:
        spilled = m.value("slotwatch_slot_spill_bytes_total", target="default", slot=slot)
        decoded = m.value("slotwatch_slot_decoded_bytes_total", target="default", slot=slot)
        assert spilled is not None
        assert decoded is not None
        assert 2000 * 1000 <= spilled < decoded  # the big one spilled whole, the small ones not


def test_catalog_xmin_age_is_postgresqls_age(small_work_mem: Cluster, tmp_path: Path) -> None:
    """docs/runbook.md PowerSyncCatalogXminOld: `slotwatch_slot_catalog_xmin_age` is
    age(catalog_xmin). A slot nobody reads holds its catalog_xmin while 200 transactions
    take IDs; the gauge grows by them, between the server's readings."""
    cluster = small_work_mem
    slot = create_slot(cluster, powersync_slot_name(2))
    try:
        age = "SELECT age(catalog_xmin) FROM pg_replication_slots WHERE slot_name = %s"
        start = cluster.scalar(age, (slot,))
        with cluster.connect() as conn:
            for _ in range(200):
                conn.execute("SELECT txid_current()")  # autocommit: one ID each
        with SlotwatchProcess(settings_for(cluster, slot), tmp_path / "slotwatch.log") as daemon:
            before = cluster.scalar(age, (slot,))
            m = daemon.metrics_after(time.time())
            after = cluster.scalar(age, (slot,))
    finally:
        cluster.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
    value = m.value("slotwatch_slot_catalog_xmin_age", target="default", slot=slot)
    assert before - start >= 200
    assert value is not None
    assert before <= value <= after


def test_wal_directory_shrinks_to_max_wal_size_after_the_drop_and_a_checkpoint(
    cluster_factory: Callable[..., Cluster], tmp_path: Path
) -> None:
    """docs/runbook.md, after a drop: the WAL a slot pinned is freed at the next checkpoint and
    `slotwatch_wal_directory_bytes` shows it. PostgreSQL removes what lies beyond about
    max_wal_size and keeps the rest as recycled segments, so pg_wal falls to that, not to its
    size before the incident: slotwatch's figure is pg_ls_waldir's at every step."""
    max_wal = 16 * 1024 * 1024
    cluster = cluster_factory(max_wal_size="16MB")
    slot = create_slot(cluster, powersync_slot_name(1))
    cluster.push_wal(40)
    waldir = "SELECT sum(size)::bigint FROM pg_ls_waldir()"
    with SlotwatchProcess(settings_for(cluster, "powersync%"), tmp_path / "slotwatch.log") as d:
        before = cluster.scalar(waldir)
        pinned = d.metrics_after(time.time()).value(
            "slotwatch_wal_directory_bytes", target="default"
        )
        assert pinned is not None
        assert before <= pinned <= cluster.scalar(waldir)
        assert pinned >= 40 * 1024 * 1024
        cluster.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
        cluster.execute("CHECKPOINT")
        before = cluster.scalar(waldir)
        freed = d.metrics_after(time.time()).value(
            "slotwatch_wal_directory_bytes", target="default"
        )
        after = cluster.scalar(waldir)
    assert freed is not None
    print(f"pg_wal: {pinned / 2**20:.0f} MiB pinned, {freed / 2**20:.0f} MiB after drop+checkpoint")
    assert before <= freed <= after
    assert freed <= max_wal + 2 * 1024 * 1024, f"{freed} bytes left in pg_wal"
    assert freed < pinned / 2
