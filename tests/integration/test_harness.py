"""The sandbox behaves like the systems it stands in for, on PostgreSQL 15 and 18.

Every other database test trusts these behaviours: a streaming consumer confirms what it reads,
SIGSTOP freezes it with its slot still active, SIGCONT resumes it, SIGKILL or wal_sender_timeout
leaves the slot inactive, the liveness endpoint answers each mode as documented, and a snapshot
session shows in pg_stat_activity the way PowerSync's does.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from sandbox.cluster import MIB, Cluster
from sandbox.consumer import Consumer, create_slot, powersync_slot_name
from sandbox.installs import PgInstall, find_installs
from sandbox.liveness import HUGE_BODY_BYTES, REDIRECT_LOCATION, LivenessServer
from sandbox.osuser import SERVER_OS_USER
from sandbox.snapshot import SnapshotSession
from sandbox.waiting import wait_until

ISO_MILLIS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
# pg_recvlogical confirms within ~2 s (two status intervals, measured); give it room on a busy box.
CONFIRM_DEADLINE = 15.0
# Longer than it ever took a running consumer to confirm, so "no progress" here means frozen.
FROZEN_WINDOW = 3.0

ConsumerFactory = Callable[..., Consumer]


def confirmed(cluster: Cluster, slot: str) -> int:
    row = cluster.slot(slot)
    assert row is not None, f"slot {slot} vanished"
    return int(row["confirmed_flush_bytes"])


def holds_throughout(predicate: Callable[[], bool], seconds: float) -> bool:
    """True if ``predicate`` stays true for the whole window (checked every 0.1 s)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not predicate():
            return False
        time.sleep(0.1)
    return predicate()


def test_every_install_is_present_and_distinct() -> None:
    installs = find_installs()
    assert sorted(installs) == ["pg13", "pg15", "pg18"]
    assert {name: install.major for name, install in installs.items()} == {
        "pg13": 13,
        "pg15": 15,
        "pg18": 18,
    }


def test_cluster_is_a_powersync_source(cluster: Cluster, pg_install: PgInstall) -> None:
    assert cluster.start_seconds is not None
    assert cluster.start_seconds < 15, f"start took {cluster.start_seconds:.2f}s"
    version = int(cluster.scalar("SHOW server_version_num"))
    assert version // 10000 == pg_install.major
    assert cluster.scalar("SHOW wal_level") == "logical"
    assert int(cluster.scalar("SHOW wal_segment_size").removesuffix("MB")) == 1
    published = cluster.query(
        "SELECT tablename FROM pg_publication_tables WHERE pubname = 'powersync' ORDER BY 1"
    )
    assert published == [("lists",), ("todos",)]
    assert cluster.scalar("SHOW listen_addresses") == "127.0.0.1"


def test_write_and_push_wal_move_the_head(cluster: Cluster) -> None:
    start = cluster.current_lsn()
    after_write = cluster.write(rows=20, pad=50)
    assert after_write > start
    after_push = cluster.push_wal(3)
    assert after_push - after_write >= 3 * MIB


def test_restart_keeps_port_data_and_altered_settings(
    cluster_factory: Callable[..., Cluster],
) -> None:
    cluster = cluster_factory(wal_sender_timeout="60s")
    cluster.write(rows=7)
    cluster.set_config(wal_sender_timeout="5s")
    assert cluster.scalar("SHOW wal_sender_timeout") == "5s"
    port, pid = cluster.port, cluster.pid
    cluster.restart()
    assert cluster.port == port
    assert cluster.pid != pid
    assert cluster.scalar("SELECT count(*) FROM todos") == 7
    assert cluster.scalar("SHOW wal_sender_timeout") == "5s"


def test_small_wal_budget_loses_an_abandoned_slot(cluster_factory: Callable[..., Cluster]) -> None:
    cluster = cluster_factory(max_slot_wal_keep_size="2MB")
    slot = create_slot(cluster, powersync_slot_name(1))
    cluster.push_wal(6)

    def lost() -> bool:
        row = cluster.slot(slot)
        return row is not None and row["wal_status"] == "lost"

    wait_until(lost, 10, message="slot lost", interval=0.2)
    row = cluster.slot(slot)
    assert row is not None
    assert row["restart_lsn"] is None


def test_consumer_confirms_published_rows(
    cluster: Cluster, consumer_factory: ConsumerFactory, pg_install: PgInstall
) -> None:
    consumer = consumer_factory(cluster)
    assert re.fullmatch(r"powersync_selfhost1_[0-9a-f]{4}", consumer.slot_name)

    # The PID held is the real pg_recvlogical of this install, run as the server's OS user.
    assert consumer.pid is not None
    exe = Path(os.readlink(f"/proc/{consumer.pid}/exe"))
    assert exe == pg_install.binary("pg_recvlogical").resolve()
    if os.geteuid() == 0:
        assert Path(f"/proc/{consumer.pid}").stat().st_uid != 0, SERVER_OS_USER

    senders = cluster.query(
        "SELECT application_name, state FROM pg_stat_replication r"
        " JOIN pg_replication_slots s ON s.active_pid = r.pid WHERE s.slot_name = %s",
        (consumer.slot_name,),
    )
    assert senders == [("powersync/1.0", "streaming")]

    target = cluster.write(rows=50)
    wait_until(
        lambda: confirmed(cluster, consumer.slot_name) >= target,
        CONFIRM_DEADLINE,
        message="confirmed_flush_lsn reaches the written rows",
    )
    assert consumer.output_size() > 0, "pgoutput messages were written to the output file"


def test_sigstop_freezes_the_slot_and_sigcont_resumes_it(
    cluster: Cluster, consumer_factory: ConsumerFactory
) -> None:
    consumer = consumer_factory(cluster)
    slot = consumer.slot_name
    # Pause only once the client has confirmed all it was sent, so no confirmation is in flight.
    wait_until(
        lambda: cluster.scalar(
            "SELECT r.flush_lsn >= r.sent_lsn FROM pg_stat_replication r"
            " JOIN pg_replication_slots s ON s.active_pid = r.pid WHERE s.slot_name = %s",
            (slot,),
        ),
        CONFIRM_DEADLINE,
        message="consumer idle",
    )

    consumer.pause()
    frozen_at = confirmed(cluster, slot)
    head = cluster.write(rows=200, pad=200)
    head = max(head, cluster.write(rows=200, pad=200))
    assert holds_throughout(lambda: confirmed(cluster, slot) == frozen_at, FROZEN_WINDOW)
    row = cluster.slot(slot)
    assert row is not None
    assert row["active"], "a frozen consumer keeps its slot active (wal_sender_timeout is 60s)"
    assert consumer.running

    consumer.resume()
    wait_until(
        lambda: confirmed(cluster, slot) >= head,
        CONFIRM_DEADLINE,
        message="the resumed consumer catches up",
    )


def test_sigkill_leaves_the_slot_inactive(
    cluster: Cluster, consumer_factory: ConsumerFactory
) -> None:
    consumer = consumer_factory(cluster)
    consumer.kill()
    assert not consumer.running

    def inactive() -> bool:
        row = cluster.slot(consumer.slot_name)
        return row is not None and not row["active"] and row["active_pid"] is None

    wait_until(inactive, 10, message="slot inactive after SIGKILL")


def test_wal_sender_timeout_cuts_a_paused_consumer(
    cluster: Cluster, consumer_factory: ConsumerFactory
) -> None:
    cluster.set_config(wal_sender_timeout="1s")
    try:
        consumer = consumer_factory(cluster)
        consumer.pause()
        cluster.write(rows=10)

        def inactive() -> bool:
            row = cluster.slot(consumer.slot_name)
            return row is not None and not row["active"]

        wait_until(inactive, 15, message="walsender cut by wal_sender_timeout")
        assert consumer.running, "the frozen client itself is still there"
        assert "replication timeout" in cluster.log_text()
    finally:
        # The module's cluster is shared: put back the default the other tests rely on.
        cluster.set_config(wal_sender_timeout="60s")


def _get(url: str, timeout: float = 5.0) -> httpx.Response:
    return httpx.get(url, timeout=timeout, follow_redirects=False)


def _touched_age(response: httpx.Response) -> float:
    body = json.loads(response.content)
    assert body["ready"] is True
    assert body["started"] is True
    assert ISO_MILLIS.match(body["touched_at"]), body["touched_at"]
    touched = datetime.strptime(body["touched_at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    return (datetime.now(UTC) - touched).total_seconds()


def test_liveness_modes_answer_as_documented(
    liveness_server: Callable[..., LivenessServer],
) -> None:
    server = liveness_server()
    assert server.url.startswith("http://127.0.0.1:")
    assert server.url.endswith("/probes/liveness")

    ok = _get(server.url)
    assert ok.status_code == 200
    assert 0 <= _touched_age(ok) < 5

    server.set_mode("stale")
    stale = _get(server.url)
    assert stale.status_code == 400
    assert 29 <= _touched_age(stale) < 35

    server.set_mode("fail")
    assert _get(server.url).status_code == 500

    server.set_mode("garbage")
    garbage = _get(server.url)
    assert garbage.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(garbage.content)

    server.set_mode("redirect")
    redirect = _get(server.url)
    assert redirect.status_code == 302
    assert redirect.headers["location"] == REDIRECT_LOCATION
    assert httpx.URL(REDIRECT_LOCATION).host != "127.0.0.1"

    server.set_mode("huge")
    with httpx.stream("GET", server.url, timeout=5) as huge:
        assert huge.status_code == 200
        assert int(huge.headers["content-length"]) == HUGE_BODY_BYTES
        received = sum(len(chunk) for chunk in huge.iter_bytes())
    assert received == HUGE_BODY_BYTES

    server.set_mode("ok")
    assert _get(server.url).status_code == 200
    assert server.hits == 7


def test_liveness_hang_times_out_and_stop_does_not_hang(
    liveness_server: Callable[..., LivenessServer],
) -> None:
    server = liveness_server("hang")
    with pytest.raises(httpx.ReadTimeout):
        _get(server.url, timeout=0.5)

    errors: list[BaseException] = []

    def held_request() -> None:
        try:
            _get(server.url, timeout=30)
        except httpx.HTTPError as exc:
            errors.append(exc)

    client = threading.Thread(target=held_request)
    client.start()
    wait_until(lambda: server.hits >= 2, 5, interval=0.02, message="second request held")
    began = time.monotonic()
    server.stop()
    assert time.monotonic() - began < 3
    client.join(5)
    assert not client.is_alive()
    assert errors, "the held request ends without an answer once the server stops"


def test_snapshot_session_looks_like_powersync_copying(
    cluster: Cluster, snapshot_session: Callable[..., SnapshotSession]
) -> None:
    session = snapshot_session(cluster)
    rows = cluster.query(
        "SELECT application_name, state, datname FROM pg_stat_activity WHERE pid = %s",
        (session.pid,),
    )
    assert rows == [("powersync/1.0", "active", "app")]
    pid = session.pid

    began = time.monotonic()
    session.stop()
    assert time.monotonic() - began < 3
    wait_until(
        lambda: cluster.scalar("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)) == 0,
        5,
        message="snapshot session gone",
    )
