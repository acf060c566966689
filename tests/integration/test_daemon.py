"""`slotwatch run` against real PostgreSQL 15 and 18, read the way an operator reads it.

Every test starts the real daemon as a subprocess and looks only at /metrics, /healthz, /status,
its exit code and its log. Polls run every half second so that "within two polls" is quick.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from slotwatch_proc import Metrics, SlotwatchProcess, run_cli, signal_a_worker_thread

from sandbox.cluster import Cluster
from sandbox.consumer import Consumer, create_slot, powersync_slot_name
from sandbox.installs import PgInstall
from sandbox.liveness import LivenessServer
from sandbox.waiting import wait_until
from slotwatch.poll.db import ANSWER_GRACE

POLL = 0.5
KEEP_SIZE = 64 * 1024 * 1024
DECOY = "powersyncxselfhost1_0000"  # would match if `_` were LIKE's one-character wildcard
FOREIGN = "debezium_orders"  # someone else's slot on the same server
PROMTOOL = Path("/usr/bin/promtool")
HTTP_TIMEOUT = 2.0


@pytest.fixture(scope="module")
def budget_cluster(pg_install: PgInstall) -> Iterator[Cluster]:
    """A cluster with max_slot_wal_keep_size set (so safe_wal_size is not NULL), the decoy and a
    foreign slot. Tests add and remove their own PowerSync slots."""
    with Cluster(pg_install, max_slot_wal_keep_size=f"{KEEP_SIZE // (1024 * 1024)}MB") as cluster:
        create_slot(cluster, DECOY)
        create_slot(cluster, FOREIGN)
        yield cluster


@pytest.fixture
def own_slots(budget_cluster: Cluster) -> Iterator[Callable[[int], str]]:
    """``make(sync_rules_id) -> slot name``: an inactive PowerSync slot, dropped after the test."""
    made: list[str] = []

    def make(sync_rules_id: int = 1) -> str:
        made.append(create_slot(budget_cluster, powersync_slot_name(sync_rules_id)))
        return made[-1]

    yield make
    for name in made:
        budget_cluster.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
            " WHERE slot_name = %s AND NOT active",
            (name,),
        )


def settings_for(cluster: Cluster, **extra: str) -> dict[str, str]:
    return {
        "SLOTWATCH_DSN": cluster.dsn(),
        "SLOTWATCH_POLL_INTERVAL": f"{POLL}s",
        "SLOTWATCH_LIVENESS_URL": "",
        **extra,
    }


@dataclass(frozen=True)
class ServerSlot:
    lag: int | None
    retained: int | None
    wal_status: str | None
    safe_wal_size: int | None
    confirmed: int | None
    current: int


def server_slots(cluster: Cluster) -> dict[str, ServerSlot]:
    """What PostgreSQL itself says, computed with pg_wal_lsn_diff as an operator would."""
    rows = cluster.query(
        "SELECT slot_name,"
        " pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint,"
        " pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint,"
        " wal_status, safe_wal_size,"
        " pg_wal_lsn_diff(confirmed_flush_lsn, '0/0')::bigint,"
        " pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint"
        " FROM pg_replication_slots"
    )
    return {r[0]: ServerSlot(*r[1:]) for r in rows}


def slot_names(m: Metrics) -> set[str]:
    """The slots of the per-slot families: the matched ones, judged."""
    return {
        labels["slot"]
        for name, labels, _ in m.samples
        if "slot" in labels and name.startswith("slotwatch_slot_")
    }


# --- the figures ---------------------------------------------------------------------------


def test_figures_equal_what_postgresql_reports(
    budget_cluster: Cluster,
    own_slots: Callable[[int], str],
    consumer_factory: Callable[..., Consumer],
    tmp_path: Path,
) -> None:
    """An inactive slot with WAL behind it, and a streaming one: lag, retained WAL, wal_status,
    safe_wal_size and max_slot_wal_keep_size are PostgreSQL's own numbers."""
    idle = own_slots(1)
    budget_cluster.push_wal(3)  # 3 MiB behind `idle`: a lag worth comparing
    streaming = consumer_factory(budget_cluster, sync_rules_id=2).slot_name
    wait_until(
        lambda: (budget_cluster.slot(streaming) or {}).get("active"), 10, message="streaming"
    )
    with SlotwatchProcess(settings_for(budget_cluster), tmp_path / "slotwatch.log") as daemon:
        before = server_slots(budget_cluster)
        mark = time.time()
        m = daemon.metrics_after(mark)
        after = server_slots(budget_cluster)
        # A DBA finds slotwatch in pg_stat_activity by name and by the marker on its statement.
        sessions = budget_cluster.query(
            "SELECT query FROM pg_stat_activity WHERE application_name = 'slotwatch'"
        )
    assert len(sessions) == 1, sessions
    assert sessions[0][0].startswith("/* slotwatch: poll")

    # The bound is the WAL written between the two reads: on an idle server, a few bytes.
    written = after[idle].current - before[idle].current
    assert 0 <= written < 64 * 1024, f"{written} bytes of WAL between the reads: bound too loose"
    label = {"target": "default"}
    wal_written = m.value("slotwatch_wal_written_bytes_total", **label)
    assert wal_written is not None
    assert before[idle].current <= wal_written <= after[idle].current

    lag = m.value("slotwatch_slot_lag_bytes", slot=idle, **label)
    retained = m.value("slotwatch_slot_retained_wal_bytes", slot=idle, **label)
    b, a = before[idle], after[idle]
    assert b.lag is not None
    assert a.lag is not None
    assert b.retained is not None
    assert b.lag >= 3 * 1024 * 1024
    assert lag is not None
    assert b.lag <= lag <= a.lag
    assert retained is not None
    assert b.retained <= retained <= (a.retained or 0)
    # safe_wal_size only shrinks as WAL is written.
    safe = m.value("slotwatch_slot_safe_wal_size_bytes", slot=idle, **label)
    assert b.safe_wal_size is not None
    assert a.safe_wal_size is not None
    assert safe is not None
    assert a.safe_wal_size <= safe <= b.safe_wal_size
    assert b.wal_status == a.wal_status == "reserved"
    statuses = {
        lbl["wal_status"]: value
        for lbl, value in m.find("slotwatch_slot_wal_status", slot=idle, **label)
    }
    assert statuses == {"reserved": 1.0, "extended": 0.0, "unreserved": 0.0, "lost": 0.0}
    keep = budget_cluster.scalar("SELECT pg_size_bytes(current_setting('max_slot_wal_keep_size'))")
    assert keep == KEEP_SIZE
    assert m.value("slotwatch_max_slot_wal_keep_size_bytes", **label) == keep
    ratio = m.value("slotwatch_slot_wal_budget_ratio", slot=idle, **label)
    assert ratio == pytest.approx(min(1.0, safe / keep))  # clamped: docs/contract.md §3
    assert m.value("slotwatch_slot_active", slot=idle, **label) == 0
    assert m.find("slotwatch_slot_sent_lag_bytes", slot=idle) == []

    # The streaming slot moves under us; PostgreSQL's figures still bracket slotwatch's.
    s_lag = m.value("slotwatch_slot_lag_bytes", slot=streaming, **label)
    assert before[streaming].confirmed is not None
    assert s_lag is not None
    assert 0 <= s_lag <= after[streaming].current - before[streaming].confirmed
    assert m.value("slotwatch_slot_active", slot=streaming, **label) == 1
    assert m.value("slotwatch_slot_sent_lag_bytes", slot=streaming, **label) is not None
    info = m.find("slotwatch_slot_info", slot=streaming, **label)
    assert [lbl for lbl, _ in info] == [
        {
            **label,
            "slot": streaming,
            "plugin": "pgoutput",
            "database": "app",
            "slot_type": "logical",
        }
    ]
    version = budget_cluster.scalar("SELECT current_setting('server_version_num')::int")
    assert m.value("slotwatch_server_version_num", **label) == version

    # Only PowerSync's slots are judged, never the decoy or the foreign one: those are watched
    # lightly, as other slots, with their owner guessed from the name.
    assert m.value("slotwatch_matched_slots", **label) == 2
    assert slot_names(m) == {idle, streaming}
    owners = {lbl["slot"]: lbl["owner"] for lbl, _ in m.find("slotwatch_other_slot_info")}
    assert owners == {DECOY: "powersync", FOREIGN: "debezium"}


def test_pattern_treats_underscore_literally(
    budget_cluster: Cluster, own_slots: Callable[[int], str]
) -> None:
    """`%` is the only wildcard: `_` in a pattern is an underscore, wherever it stands."""
    real = create_slot(budget_cluster, "powersync_selfhost7_0000")
    near = create_slot(budget_cluster, "powersync_selfhost7x0000")  # `_` as a wildcard would match
    try:
        cases = {
            "powersync_selfhost%": {real, near},
            "powersync_selfhost%_0000": {real},
            "powersync_selfhost7_0000": {real},
            # The decoy is a real match for a looser pattern: it is excluded by the `_`, not lost.
            "powersync%": {real, near, DECOY},
        }
        for pattern, expected in cases.items():
            env = settings_for(budget_cluster, SLOTWATCH_SLOT_PATTERN=pattern)
            done = run_cli("status", "--json", env=env)
            assert done.returncode == 0, done.stderr
            (target,) = json.loads(done.stdout)["targets"]
            assert {s["slot"] for s in target["slots"]} == expected, pattern
            assert target["matched_slots"] == len(expected)
    finally:
        for name in (real, near):
            budget_cluster.execute("SELECT pg_drop_replication_slot(%s)", (name,))


def test_dropped_slot_vanishes_from_metrics(
    budget_cluster: Cluster, own_slots: Callable[[int], str], tmp_path: Path
) -> None:
    """An operator (or PowerSync) drops the slot: its series go, matched_slots reads 0."""
    slot = own_slots(1)
    with SlotwatchProcess(settings_for(budget_cluster), tmp_path / "slotwatch.log") as daemon:
        m = daemon.metrics_after(time.time())
        assert m.value("slotwatch_matched_slots", target="default") == 1
        assert slot in slot_names(m)

        budget_cluster.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
        m = daemon.metrics_after(time.time())
        assert m.value("slotwatch_matched_slots", target="default") == 0
        assert slot_names(m) == set()
        assert slot not in m.text
        assert daemon.status()["targets"][0]["slots"] == []
        gone = [e for e in daemon.events("slot gone") if e.get("slot") == slot]
        assert len(gone) == 1


# --- outages ------------------------------------------------------------------------------


def test_database_outage_and_recovery(
    cluster_factory: Callable[..., Cluster], tmp_path: Path
) -> None:
    """PostgreSQL stops: within two polls slotwatch_up is 0 and the endpoints still answer at
    once; it starts again on the same port: slotwatch_up is 1 again, same slotwatch process."""
    cluster = cluster_factory()
    slot = create_slot(cluster, powersync_slot_name(1))
    settings = settings_for(cluster, SLOTWATCH_CONNECT_TIMEOUT="1s")
    with (
        SlotwatchProcess(settings, tmp_path / "slotwatch.log") as daemon,
        httpx.Client(timeout=HTTP_TIMEOUT) as client,
    ):
        m = daemon.metrics_after(time.time())
        assert m.value("slotwatch_up", target="default") == 1
        connect_errors = m.value("slotwatch_poll_errors_total", target="default", reason="connect")
        pid = daemon.proc.pid

        cluster.stop("fast")
        stopped = time.monotonic()
        wait_until(
            lambda: daemon.metrics().value("slotwatch_up", target="default") == 0,
            2 * POLL + 1.0,
            interval=0.05,
            message="slotwatch_up 0 within two polls",
        )
        down_after = time.monotonic() - stopped
        # Keep scraping through a few failed polls: every answer comes within the client's
        # timeout (a request that waited on the database would raise).
        until = time.monotonic() + 3 * POLL
        while time.monotonic() < until:
            metrics = client.get(daemon.url + "/metrics")
            health = client.get(daemon.url + "/healthz")
            assert metrics.status_code == 200
            # Polling goes on, so the daemon is healthy: slotwatch_up tells the outage.
            assert health.status_code == 200, health.text
        m = Metrics(metrics.text)
        errors = m.value("slotwatch_poll_errors_total", target="default", reason="connect")
        assert connect_errors is not None
        assert errors is not None
        assert errors > connect_errors
        # No stale figures exported as if fresh, and no false "slot missing" either.
        assert slot_names(m) == set()
        assert m.value("slotwatch_matched_slots", target="default") is None
        status = daemon.status()["targets"][0]
        assert status["up"] is False
        assert status["error"]["reason"] == "connect"

        cluster.start()
        m = daemon.metrics_after(time.time())
        assert m.value("slotwatch_up", target="default") == 1
        assert slot in slot_names(m)
        assert daemon.proc.pid == pid
        assert daemon.proc.poll() is None
        print(f"slotwatch_up 0 after {down_after:.2f}s (poll interval {POLL}s)")
        # One warning for the outage, however many polls failed, and one line for the recovery.
        warnings = [e for e in daemon.events("poll failed") if e["level"] == "warning"]
        assert len(warnings) <= 2, warnings
        assert daemon.events("poll succeeded again")


@dataclass
class Blackhole:
    """A TCP listener that accepts and never answers: a connect to it hangs until timeout."""

    port: int
    accepted: list[socket.socket]

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=slotwatch dbname=app"


@pytest.fixture
def blackhole() -> Iterator[Blackhole]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    hole = Blackhole(listener.getsockname()[1], [])

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            hole.accepted.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield hole
    # shutdown() wakes the blocked accept(); close() alone would not.
    listener.shutdown(socket.SHUT_RDWR)
    listener.close()
    thread.join(5)
    for conn in hole.accepted:
        conn.close()


def write_config(path: Path, targets: dict[str, str]) -> Path:
    entries = [
        f'[[targets]]\nname = "{name}"\ndsn = "{dsn}"\nliveness_url = ""\n'
        for name, dsn in targets.items()
    ]
    path.write_text("\n".join(entries))
    return path


def stuck_beside_a(
    cluster: Cluster, blackhole: Blackhole, tmp_path: Path, connect_timeout: float
) -> dict[str, str]:
    """Settings of a daemon with two targets: `a`, a real server, and `stuck`, whose connect
    hangs for `connect_timeout` at every poll."""
    config = write_config(tmp_path / "slotwatch.toml", {"a": cluster.dsn(), "stuck": blackhole.dsn})
    return {
        "SLOTWATCH_CONFIG": str(config),
        "SLOTWATCH_POLL_INTERVAL": f"{POLL}s",
        "SLOTWATCH_CONNECT_TIMEOUT": f"{connect_timeout:g}s",
    }


def test_sigterm_exits_zero_while_a_poll_is_in_flight(
    budget_cluster: Cluster, blackhole: Blackhole, tmp_path: Path
) -> None:
    """systemd stops slotwatch while one target's connect hangs: the poll in flight finishes
    (bounded by the connect timeout), then slotwatch exits 0."""
    connect_timeout = 3.0
    settings = stuck_beside_a(budget_cluster, blackhole, tmp_path, connect_timeout)
    daemon = SlotwatchProcess(settings, tmp_path / "slotwatch.log")
    try:
        daemon.wait_ready()
        wait_until(lambda: blackhole.accepted, 10, interval=0.02, message="a connect in flight")
        code, elapsed = daemon.elapsed_stop()
    finally:
        if daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait()
    print(f"SIGTERM to exit with a connect in flight: {elapsed:.2f}s")
    log_text = daemon.log_path.read_text()
    assert code == 0, log_text
    assert elapsed < connect_timeout + 3
    # The poll in flight was finished, not abandoned: its failure is logged before the stop.
    log_events = [json.loads(line) for line in log_text.splitlines() if line.startswith("{")]
    order = [e["event"] for e in log_events if e.get("target") in ("stuck", None)]
    assert "poll failed" in order
    assert "slotwatch stopped" in order
    assert order.index("poll failed") < order.index("slotwatch stopped")


def test_a_poll_that_cannot_start_while_the_last_still_runs_is_counted_as_skipped(
    budget_cluster: Cluster, blackhole: Blackhole, tmp_path: Path
) -> None:
    """docs/fleet.md: a black-holed target's connect outlasts several intervals; each poll due
    meanwhile is skipped and counted, and a target that answers skips none."""
    connect_timeout = 3.0
    settings = stuck_beside_a(budget_cluster, blackhole, tmp_path, connect_timeout)
    with SlotwatchProcess(settings, tmp_path / "slotwatch.log") as daemon:

        def skipped(target: str) -> float | None:
            return daemon.metrics().value("slotwatch_polls_skipped_total", target=target)

        wait_until(
            lambda: (skipped("stuck") or 0) >= 2,
            connect_timeout + 3,
            message="no skipped poll counted for the black-holed target",
        )
        assert skipped("a") == 0


@pytest.mark.parametrize("to", ["process", "worker thread"])
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_second_stop_signal_while_stopping_exits_at_once(
    budget_cluster: Cluster, blackhole: Blackhole, tmp_path: Path, stop: signal.Signals, to: str
) -> None:
    """The first SIGTERM (systemd) or SIGINT (Ctrl-C) waits for the poll in flight, here a
    connect that would hang for 30 s; a second one ends the process at once, exit 128 + the
    signal's number (143, 130), with a line saying so. The kernel may hand a process's signal to
    any of its threads: sent to a worker, it must still end the process at once (it once waited
    for the connect, as the main thread slept in an untimed join)."""
    connect_timeout = 30.0
    settings = stuck_beside_a(budget_cluster, blackhole, tmp_path, connect_timeout)
    daemon = SlotwatchProcess(settings, tmp_path / "slotwatch.log")
    try:
        daemon.wait_ready()
        wait_until(lambda: blackhole.accepted, 10, interval=0.02, message="a connect in flight")
        daemon.proc.send_signal(stop)
        wait_until(
            lambda: "slotwatch stopping" in daemon.log_path.read_text(),
            10,
            message="the first signal started the stop",
        )
        assert daemon.proc.poll() is None, "it did not wait for the poll in flight"
        began = time.monotonic()
        if to == "process":
            daemon.proc.send_signal(stop)
        else:
            signal_a_worker_thread(daemon.proc.pid, stop)
        code = daemon.proc.wait(timeout=connect_timeout)
        elapsed = time.monotonic() - began
    finally:
        if daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait()
        daemon.stop()  # the process has ended: this closes the log and the client
    print(f"second {stop.name} to the {to}, to exit: {elapsed:.2f}s")
    assert code == 128 + stop, daemon.log_path.read_text()
    assert elapsed < connect_timeout / 3
    events = [
        json.loads(line) for line in daemon.log_path.read_text().splitlines() if line[:1] == "{"
    ]
    [last] = [e for e in events if e["event"].startswith("second stop signal")]
    assert last["signal"] == stop.name


def test_a_frozen_backend_is_a_timed_out_poll_not_a_hung_one(
    budget_cluster: Cluster, tmp_path: Path
) -> None:
    """The server process behind slotwatch's session freezes: statement_timeout cannot fire in
    it and its kernel still answers TCP keepalives. The poll gives up after the statement
    timeout plus its grace, counts a `timeout`, and the next poll reconnects."""
    statement_timeout = 1.0
    settings = settings_for(budget_cluster, SLOTWATCH_STATEMENT_TIMEOUT=f"{statement_timeout:g}s")
    with SlotwatchProcess(settings, tmp_path / "slotwatch.log") as daemon:
        daemon.metrics_after(time.time())
        (backend,) = budget_cluster.query(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'slotwatch'"
        )
        os.kill(backend[0], signal.SIGSTOP)
        try:

            def timed_out() -> bool:
                m = daemon.metrics()
                count = m.value("slotwatch_poll_errors_total", target="default", reason="timeout")
                return count is not None and count >= 1

            wait_until(
                timed_out,
                statement_timeout + ANSWER_GRACE + 2 * POLL + 2,
                interval=0.05,
                message="the frozen poll counted as a timeout",
            )
        finally:
            os.kill(backend[0], signal.SIGCONT)
        m = daemon.metrics_after(time.time())
        assert m.value("slotwatch_up", target="default") == 1
        (failed,) = daemon.events("poll failed")
        assert failed["reason"] == "timeout"
        assert "no answer within" in failed["error"]


def test_two_targets_are_polled_independently(
    cluster_factory: Callable[..., Cluster], blackhole: Blackhole, tmp_path: Path
) -> None:
    """Two clusters and one unreachable host: each target has its own series, a hung target
    does not slow the others, and one stopped cluster leaves the other up."""
    first, second = cluster_factory(), cluster_factory()
    slot_a = create_slot(first, powersync_slot_name(1))
    slot_b = create_slot(second, powersync_slot_name(2))
    config = write_config(
        tmp_path / "slotwatch.toml",
        {"a": first.dsn(), "b": second.dsn(), "stuck": blackhole.dsn},
    )
    settings = {
        "SLOTWATCH_CONFIG": str(config),
        "SLOTWATCH_POLL_INTERVAL": f"{POLL}s",
        "SLOTWATCH_CONNECT_TIMEOUT": "3s",
    }
    with SlotwatchProcess(settings, tmp_path / "slotwatch.log") as daemon:
        wait_until(lambda: blackhole.accepted, 10, interval=0.02, message="stuck poll in flight")
        hung_at = time.time()
        # While `stuck` hangs for its 3 s connect timeout, a and b keep their half-second pace.
        successes: dict[str, set[float]] = {"a": set(), "b": set()}

        def three_fresh_polls_each() -> bool:
            m = daemon.metrics()
            for name, seen in successes.items():
                value = m.value("slotwatch_last_poll_success_timestamp_seconds", target=name)
                if value is not None and value > hung_at:
                    seen.add(value)
            return all(len(seen) >= 3 for seen in successes.values())

        wait_until(three_fresh_polls_each, 6 * POLL + 1, interval=0.05, message=str(successes))
        m = daemon.metrics()
        assert m.value("slotwatch_up", target="stuck") == 0
        by_target = {
            name: {
                lbl["slot"]
                for _, lbl, _ in m.samples
                if lbl.get("target") == name and "slot" in lbl
            }
            for name in ("a", "b", "stuck")
        }
        assert by_target == {"a": {slot_a}, "b": {slot_b}, "stuck": set()}
        # The stuck target's poll has not been attempted for three intervals: /healthz says so.
        health = wait_until(
            lambda: (r := daemon.get("/healthz")).status_code == 503 and r,
            5,
            interval=0.05,
            message="healthz 503 for the stuck target",
        )
        assert "stuck" in health.text

        second.stop("fast")
        wait_until(
            lambda: daemon.metrics().value("slotwatch_up", target="b") == 0,
            2 * POLL + 1.0,
            interval=0.05,
            message="b down within two polls",
        )
        m = daemon.metrics_after(time.time(), target="a")
        assert m.value("slotwatch_up", target="a") == 1
        assert slot_a in slot_names(m)
        assert slot_b not in slot_names(m)

        def stuck_timed_out() -> bool:
            count = daemon.metrics().value(
                "slotwatch_poll_errors_total", target="stuck", reason="timeout"
            )
            return count is not None and count >= 1

        wait_until(stuck_timed_out, 5, message="the stuck target's connect timeout counted")


# --- exposition, status, CLI ---------------------------------------------------------------


def test_promtool_accepts_the_exposition(
    budget_cluster: Cluster,
    own_slots: Callable[[int], str],
    consumer_factory: Callable[..., Consumer],
    liveness_server: Callable[..., LivenessServer],
    tmp_path: Path,
) -> None:
    assert PROMTOOL.exists(), f"{PROMTOOL} is missing: apt-get install prometheus"
    own_slots(1)
    consumer_factory(budget_cluster, sync_rules_id=2)
    server = liveness_server("ok")
    settings = settings_for(budget_cluster, SLOTWATCH_LIVENESS_URL=server.url)
    with SlotwatchProcess(settings, tmp_path / "slotwatch.log") as daemon:
        m = wait_until(
            lambda: (
                (m := daemon.metrics_after(time.time()))
                and m.value("slotwatch_liveness_up", target="default", probe="powersync") == 1
                and m
            ),
            10,
            message="slots and probe in one scrape",
        )
    assert m.value("slotwatch_matched_slots", target="default") == 2
    checked = subprocess.run(
        [str(PROMTOOL), "check", "metrics"],
        input=m.text,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == ""
    assert checked.stderr.strip() == ""


def test_status_document_and_cli_agree(
    budget_cluster: Cluster, own_slots: Callable[[int], str], tmp_path: Path
) -> None:
    """/status carries per slot its state, reasons and figures; `slotwatch status` and
    `status --json` give the same from one poll."""
    slot = own_slots(1)
    settings = settings_for(budget_cluster)
    with SlotwatchProcess(settings, tmp_path / "slotwatch.log") as daemon:
        daemon.metrics_after(time.time())
        document = daemon.status()
    (target,) = document["targets"]
    assert target["target"] == "default"
    assert target["up"] is True
    assert target["server"]["max_slot_wal_keep_size_bytes"] == KEEP_SIZE
    (entry,) = target["slots"]
    _assert_slot_entry(entry, slot, budget_cluster)

    done = run_cli("status", "--json", env=settings)
    assert done.returncode == 0, done.stderr
    (once,) = json.loads(done.stdout)["targets"]
    (one_entry,) = once["slots"]
    _assert_slot_entry(one_entry, slot, budget_cluster)
    assert set(one_entry) == set(entry)

    table = run_cli("status", env=settings)
    assert table.returncode == 0, table.stderr
    header, row, *_notes = table.stdout.splitlines()
    assert header.split()[:3] == ["TARGET", "SLOT", "STATE"]
    cells = row.split()
    assert cells[:3] == ["default", slot, entry["state"]]
    assert "reserved" in cells
    # The decoy and the foreign slot are not PowerSync's: they are listed in their own section.
    matched, _, others = table.stdout.partition("\n\n")
    assert DECOY not in matched
    assert FOREIGN not in matched
    assert others.splitlines()[0].split()[:3] == ["TARGET", "OTHER_SLOT", "OWNER"]
    assert {line.split()[1] for line in others.splitlines()[1:3]} == {DECOY, FOREIGN}

    # Unreachable: the table says DOWN and the exit code is 69.
    dead = run_cli("status", env={**settings, "SLOTWATCH_DSN": "host=127.0.0.1 port=1 user=x"})
    assert dead.returncode == 69, dead.stdout + dead.stderr
    assert "DOWN" in dead.stdout


def _assert_slot_entry(entry: dict[str, Any], slot: str, cluster: Cluster) -> None:
    row = cluster.slot(slot)
    assert row is not None
    assert entry["slot"] == slot
    assert entry["state"] in {
        "healthy",
        "lagging",
        "wedged",
        "snapshotting",
        "inactive",
        "at_risk",
        "lost",
    }
    assert entry["reasons"]
    assert all(isinstance(r, str) and r for r in entry["reasons"])
    assert entry["wal_status"] == row["wal_status"]
    assert entry["active"] is False
    for figure in ("lag_bytes", "retained_wal_bytes", "safe_wal_size_bytes"):
        assert isinstance(entry[figure], int), figure
        assert entry[figure] >= 0, figure
    assert entry["restart_lsn"] == str(row["restart_lsn"])
    assert entry["confirmed_flush_lsn"] == str(row["confirmed_flush_lsn"])


def test_listen_address_in_use_is_a_configuration_error(tmp_path: Path) -> None:
    """A second slotwatch on the same port says so in one line and exits 78 (config)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        env = {
            "SLOTWATCH_DSN": "host=127.0.0.1 port=1 user=slotwatch",
            "SLOTWATCH_LISTEN": f"127.0.0.1:{port}",
        }
        done = run_cli("run", env=env, timeout=30)
    assert done.returncode == 78, done.stdout + done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert f"cannot listen on 127.0.0.1:{port}" in line
    assert "Traceback" not in done.stdout + done.stderr


def test_unknown_role_is_counted_as_auth(budget_cluster: Cluster) -> None:
    """A role that does not exist is an `auth` failure, not a network one: the operator's fix
    is a GRANT or a password, not a firewall."""
    env = settings_for(budget_cluster, SLOTWATCH_DSN=budget_cluster.dsn(user="nosuchrole"))
    done = run_cli("status", "--json", env=env)
    assert done.returncode == 77, done.stderr  # docs/contract.md §5: permission denied
    (target,) = json.loads(done.stdout)["targets"]
    assert target["up"] is False
    assert target["error"]["reason"] == "auth", target["error"]
    assert "nosuchrole" in target["error"]["message"]


def test_a_role_without_connect_is_permission_denied(budget_cluster: Cluster) -> None:
    """A role refused CONNECT on the database is a permission failure (exit 77, reason `auth`),
    not an unreachable database: the fix is a GRANT, not a firewall."""
    budget_cluster.execute("DROP ROLE IF EXISTS no_connect")
    budget_cluster.execute("CREATE ROLE no_connect LOGIN")
    budget_cluster.execute("REVOKE CONNECT ON DATABASE app FROM PUBLIC")
    try:
        env = settings_for(budget_cluster, SLOTWATCH_DSN=budget_cluster.dsn(user="no_connect"))
        done = run_cli("status", "--json", env=env)
    finally:
        budget_cluster.execute("GRANT CONNECT ON DATABASE app TO PUBLIC")
        budget_cluster.execute("DROP ROLE no_connect")
    assert done.returncode == 77, done.stderr  # docs/contract.md §5: permission denied
    (target,) = json.loads(done.stdout)["targets"]
    assert target["error"]["reason"] == "auth", target["error"]
    assert "permission denied for database" in target["error"]["message"]


def test_a_role_without_pg_monitor_still_polls(budget_cluster: Cluster, own_slots: Any) -> None:
    """pg_ls_waldir() needs pg_monitor, and PostgreSQL checks it before running any of the
    statement: a role without it must still get every other figure, just no pg_wal size."""
    own_slots(1)
    budget_cluster.execute("DROP ROLE IF EXISTS plain_watcher")
    budget_cluster.execute("CREATE ROLE plain_watcher LOGIN")
    try:
        plain = run_cli(
            "status",
            "--json",
            env=settings_for(
                budget_cluster, SLOTWATCH_DSN=budget_cluster.dsn(user="plain_watcher")
            ),
        )
        full = run_cli("status", "--json", env=settings_for(budget_cluster))
    finally:
        budget_cluster.execute("DROP ROLE plain_watcher")
    assert plain.returncode == 0, plain.stderr
    assert full.returncode == 0, full.stderr
    (target,) = json.loads(plain.stdout)["targets"]
    assert target["up"] is True
    assert target["server"]["wal_directory_bytes"] is None
    assert target["matched_slots"] >= 1
    (monitored,) = json.loads(full.stdout)["targets"]
    assert monitored["server"]["wal_directory_bytes"] > 0
