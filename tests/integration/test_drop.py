"""`slotwatch drop` as an operator meets it at 3 a.m.: real PostgreSQL 15 and 18, real consumers.

Every story runs the real command. The cluster has `wal_sender_timeout = 0`, so a SIGSTOP'd
consumer keeps its slot active for ever: the wedge the drop exists for. Short thresholds
(stall 2 s, inactive 1 s) and short `--observe` windows keep the module fast.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from psycopg.conninfo import make_conninfo
from slotwatch_proc import SLOTWATCH, SlotwatchProcess, clean_env, free_port, run_cli

from sandbox.cluster import Cluster
from sandbox.consumer import Consumer, create_slot, powersync_slot_name
from sandbox.fleet import create_databases
from sandbox.installs import PgInstall
from sandbox.silent_pg import FreezingProxy, SilentPostgres
from sandbox.waiting import wait_until
from slotwatch.patterns import like_pattern
from slotwatch.poll.db import ANSWER_GRACE
from slotwatch.poll.queries import drop_statement

CANARY = "canary-Pw-7d1e"  # in every DSN: it must never show up in any output or record

ConsumerFactory = Callable[..., Consumer]


@pytest.fixture(scope="module")
def pg(pg_install: PgInstall) -> Iterator[Cluster]:
    """One cluster per install for the module; wal_sender_timeout 0 lets a hung consumer stay."""
    with Cluster(pg_install, wal_sender_timeout="0") as cluster:
        cluster.execute("CREATE ROLE watcher LOGIN IN ROLE pg_monitor")
        yield cluster


def settings(cluster: Cluster, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        "SLOTWATCH_DSN": cluster.dsn(password=CANARY),
        "SLOTWATCH_LIVENESS_URL": "",
        # A port nobody listens on: no daemon answers unless a test starts one.
        "SLOTWATCH_LISTEN": f"127.0.0.1:{free_port()}",
        "SLOTWATCH_STALL_AFTER": "2s",
        "SLOTWATCH_INACTIVE_AFTER": "1s",
        "SLOTWATCH_AUDIT_LOG": str(tmp_path / "audit.jsonl"),
        "SLOTWATCH_LOG_FORMAT": "json",
    }
    env.update(extra)
    return env


def slots_text(cluster: Cluster) -> str:
    """pg_replication_slots as the server prints it, every column, for byte-for-byte compares."""
    rows = cluster.query("SELECT s::text FROM pg_replication_slots s ORDER BY slot_name")
    return "\n".join(row[0] for row in rows)


def exists(cluster: Cluster, slot: str) -> bool:
    return cluster.slot(slot) is not None


def inactive_slot(cluster: Cluster) -> str:
    """A matching slot nobody streams, free for at least SLOTWATCH_INACTIVE_AFTER."""
    name = create_slot(cluster, powersync_slot_name(1))
    if cluster.install.major >= 17:
        # Only 17+ reports inactive_since; older servers are judged on "free now".
        wait_until(
            lambda: cluster.scalar(
                "SELECT now() - inactive_since > interval '1.2 s'"
                " FROM pg_replication_slots WHERE slot_name = %s",
                (name,),
            ),
            10,
            message="inactive_since older than the inactive threshold",
        )
    return name


def wedged(cluster: Cluster, consumers: ConsumerFactory) -> Consumer:
    """A consumer that holds its slot but has stopped: SIGSTOP'd, with WAL waiting behind it."""
    consumer = consumers(cluster)
    consumer.pause()
    cluster.push_wal(2, checkpoint=False)
    return consumer


def audit_records(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "audit.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert CANARY not in text


@pytest.fixture
def cleanup_slots(pg: Cluster) -> Iterator[list[str]]:
    """Names of slots a test creates outside the consumer factory, dropped afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        pg.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
            " WHERE slot_name = %s AND NOT active",
            (name,),
        )


# --- refusals ---------------------------------------------------------------------------------


def test_dry_run_shows_the_plan_and_changes_nothing(
    pg: Cluster, tmp_path: Path, consumer_factory: ConsumerFactory, cleanup_slots: list[str]
) -> None:
    free = inactive_slot(pg)
    cleanup_slots.append(free)
    stuck = wedged(pg, consumer_factory)
    env = settings(pg, tmp_path)
    before = slots_text(pg)

    free_run = run_cli("drop", free, env=env)
    stuck_run = run_cli("drop", stuck.slot_name, "--terminate", "--observe=2.5s", env=env)

    assert slots_text(pg) == before
    assert free_run.returncode == 0, free_run.stderr
    assert "state: inactive" in free_run.stdout
    assert "Dry run: nothing was changed" in free_run.stdout
    assert "Action with --confirm: drop the slot" in free_run.stdout
    assert stuck_run.returncode == 0, stuck_run.stdout + stuck_run.stderr
    assert "state: wedged" in stuck_run.stdout
    assert "watching the slot" in stuck_run.stdout
    holder = pg.slot(stuck.slot_name)["active_pid"]  # type: ignore[index]
    assert f"terminate the walsender holding the slot (now pid {holder}" in stuck_run.stdout
    assert "[FAIL]" not in free_run.stdout + stuck_run.stdout
    assert audit_records(tmp_path) == [], "a dry run is not an attempt"
    assert_no_secret(free_run.stdout, free_run.stderr, stuck_run.stdout, stuck_run.stderr)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        # Upper case is not a legal slot name, so the decoy of the docs is spelled with 'x'.
        ("powersyncxselfhost1_0000", "does not match the slot pattern"),
        ("debezium_orders", "does not match the slot pattern"),
    ],
)
def test_slots_outside_the_pattern_are_refused_before_connecting(
    pg: Cluster, tmp_path: Path, cleanup_slots: list[str], name: str, message: str
) -> None:
    create_slot(pg, name)
    cleanup_slots.append(name)
    run = run_cli("drop", name, f"--confirm={name}", env=settings(pg, tmp_path))
    assert run.returncode == 3
    assert message in run.stderr
    assert exists(pg, name)
    # Refused on the name alone: the server was never asked.
    run = run_cli("drop", name, env=settings(pg, tmp_path, SLOTWATCH_DSN="host=127.0.0.1 port=1"))
    assert run.returncode == 3, run.stderr
    [record] = audit_records(tmp_path)
    assert record["outcome"] == "refused"
    assert record["guard"][0]["passed"] is False


def test_missing_slot_is_refused(pg: Cluster, tmp_path: Path) -> None:
    run = run_cli("drop", "powersync_selfhost9_dead", env=settings(pg, tmp_path))
    assert run.returncode == 3
    assert "powersync_selfhost9_dead' does not exist" in run.stderr


def test_healthy_slot_is_refused_unless_forced_with_a_reason(
    pg: Cluster, tmp_path: Path, consumer_factory: ConsumerFactory
) -> None:
    consumer = consumer_factory(pg)
    env = settings(pg, tmp_path)
    run = run_cli("drop", consumer.slot_name, "--terminate", "--observe=2s", env=env)
    assert run.returncode == 3, run.stdout + run.stderr
    assert "state is healthy" in run.stderr
    assert "--force --reason" in run.stderr
    forced = run_cli("drop", consumer.slot_name, "--terminate", "--observe=1s", "--force", env=env)
    assert forced.returncode == 3
    assert "--force needs --reason" in forced.stderr
    allowed = run_cli(
        "drop",
        consumer.slot_name,
        "--terminate",
        "--observe=1s",
        "--force",
        "--reason=restore drill",
        env=env,
    )
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert "dropped anyway: --force --reason 'restore drill'" in allowed.stdout
    assert pg.slot(consumer.slot_name)["active"]  # type: ignore[index]


def test_active_slot_without_terminate_is_refused_at_once(
    pg: Cluster, tmp_path: Path, consumer_factory: ConsumerFactory
) -> None:
    stuck = wedged(pg, consumer_factory)
    started = time.monotonic()
    run = run_cli(
        "drop",
        stuck.slot_name,
        f"--confirm={stuck.slot_name}",
        "--observe=30s",
        env=settings(pg, tmp_path),
    )
    assert run.returncode == 3
    assert "add --terminate" in run.stderr
    assert "watching" not in run.stdout, "refused before any observation window"
    assert time.monotonic() - started < 15
    assert exists(pg, stuck.slot_name)
    [record] = audit_records(tmp_path)
    assert record["outcome"] == "refused"


def test_confirm_without_a_name_needs_a_terminal(
    pg: Cluster, tmp_path: Path, cleanup_slots: list[str]
) -> None:
    slot = inactive_slot(pg)
    cleanup_slots.append(slot)
    run = run_cli("drop", slot, "--confirm", env=settings(pg, tmp_path), stdin="")
    assert run.returncode == 64
    assert "--confirm=SLOT" in run.stderr
    wrong = run_cli("drop", slot, "--confirm=powersync_selfhost1_beef", env=settings(pg, tmp_path))
    assert wrong.returncode == 3
    assert "must repeat the slot name exactly" in wrong.stderr
    pattern = run_cli("drop", slot, "--confirm=powersync_selfhost%", env=settings(pg, tmp_path))
    assert pattern.returncode == 64
    assert exists(pg, slot)


def run_at_terminal(args: list[str], env: dict[str, str], answer: str) -> tuple[int, str]:
    """Run the command on a pseudo-terminal, answer its prompt, return (exit code, screen)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [SLOTWATCH, *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=clean_env(env),
        start_new_session=True,
    )
    os.close(slave)
    screen = b""
    answered = False
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                screen += chunk
            if not answered and b"Type the slot name" in screen:
                os.write(master, answer.encode() + b"\n")
                answered = True
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert answered, screen.decode(errors="replace")
    return code, screen.decode(errors="replace")


def test_wrong_name_typed_at_the_prompt_aborts(
    pg: Cluster, tmp_path: Path, cleanup_slots: list[str]
) -> None:
    slot = inactive_slot(pg)
    cleanup_slots.append(slot)
    env = settings(pg, tmp_path)
    # One character off; the slot's random hex may itself end in 0.
    wrong = slot[:-1] + ("1" if slot.endswith("0") else "0")
    code, screen = run_at_terminal(["drop", slot, "--confirm"], env, wrong)
    assert code == 3, screen
    assert "aborted: the name typed does not match" in screen
    assert exists(pg, slot)
    code, screen = run_at_terminal(["drop", slot, "--confirm"], env, slot)
    assert code == 0, screen
    assert f"Dropped slot {slot}" in screen
    assert not exists(pg, slot)
    assert [r["outcome"] for r in audit_records(tmp_path)] == ["aborted", "dropped"]
    assert {r["flags"]["confirm"] for r in audit_records(tmp_path)} == {"prompt"}


# --- drops --------------------------------------------------------------------------------------


def test_inactive_slot_is_dropped_and_audited_without_secrets(
    pg: Cluster, tmp_path: Path, cleanup_slots: list[str]
) -> None:
    slot = inactive_slot(pg)
    cleanup_slots.append(slot)
    neighbour = inactive_slot(pg)
    cleanup_slots.append(neighbour)
    run = run_cli("drop", slot, f"--confirm={slot}", env=settings(pg, tmp_path))
    assert run.returncode == 0, run.stdout + run.stderr
    assert not exists(pg, slot)
    assert exists(pg, neighbour)
    assert "freed at the next checkpoint" in run.stdout
    assert "creates a new one" in run.stdout
    audit_file = (tmp_path / "audit.jsonl").read_text()
    assert_no_secret(run.stdout, run.stderr, audit_file)
    [record] = audit_records(tmp_path)
    assert record["outcome"] == "dropped"
    assert record["slot"] == slot
    assert record["target"] == "default"
    assert record["state"] == "inactive"
    assert record["os_user"]
    assert record["host"]
    assert record["figures_before"]["retained_wal_bytes"] is not None
    assert record["error"] is None
    # The same record reaches the structured log.
    logged = [json.loads(line) for line in run.stderr.splitlines() if line.startswith("{")]
    assert [e["outcome"] for e in logged if e.get("event") == "slot drop"] == ["dropped"]


class RestartLoop:
    """Restarts a consumer on the slot as fast as it can, like a supervisor with no back-off."""

    def __init__(self, cluster: Cluster, slot: str) -> None:
        self.cluster = cluster
        self.slot = slot
        self.starts = 0
        self.attached = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> RestartLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _loop(self) -> None:
        while not self._stop.is_set():
            consumer = Consumer(self.cluster, self.slot, reconnect=False)
            try:
                consumer.start(wait_active=False)
                self.starts += 1
                while consumer.running and not self._stop.is_set():
                    row = self.cluster.slot(self.slot)
                    if row is not None and row["active_pid"] is not None:
                        self.attached += 1
                    # Paces the watch and ends it the moment the test is done.
                    self._stop.wait(0.01)
            finally:
                consumer.destroy()


def test_wedged_slot_is_terminated_and_dropped_while_the_consumer_restarts(
    pg: Cluster, tmp_path: Path, consumer_factory: ConsumerFactory
) -> None:
    stuck = wedged(pg, consumer_factory)
    stuck_pid = pg.slot(stuck.slot_name)["active_pid"]  # type: ignore[index]
    with RestartLoop(pg, stuck.slot_name) as loop:
        wait_until(lambda: loop.starts >= 3, 20, message="the restart loop is running")
        run = run_cli(
            "drop",
            stuck.slot_name,
            "--terminate",
            f"--confirm={stuck.slot_name}",
            "--observe=2.5s",
            "--deadline=20s",
            env=settings(pg, tmp_path),
        )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "state: wedged" in run.stdout
    assert f"Sent SIGTERM to walsender pid {stuck_pid}" in run.stdout
    assert f"Walsender pid {stuck_pid} is gone" in run.stdout
    assert "Terminated" not in run.stdout
    assert not exists(pg, stuck.slot_name)
    [record] = audit_records(tmp_path)
    assert record["outcome"] == "dropped"
    assert stuck_pid in record["terminated_pids"]
    assert loop.starts >= 3


def test_a_stopped_walsender_is_signalled_once_and_the_drop_backs_off(
    pg: Cluster, tmp_path: Path, consumer_factory: ConsumerFactory
) -> None:
    """The walsender itself is SIGSTOP'd: pg_terminate_backend succeeds, but the process acts on
    SIGTERM only when continued. The drop must say so, not claim "terminated", and wait with a
    back-off instead of a busy loop (it once printed "Terminated" six times and tried the drop
    11,293 times in 30 s)."""
    stuck = wedged(pg, consumer_factory)
    walsender = int(pg.slot(stuck.slot_name)["active_pid"])  # type: ignore[index]
    os.kill(walsender, signal.SIGSTOP)
    try:
        started = time.monotonic()
        run = run_cli(
            "drop",
            stuck.slot_name,
            "--terminate",
            f"--confirm={stuck.slot_name}",
            "--observe=2.5s",
            "--deadline=5s",
            env=settings(pg, tmp_path),
        )
        elapsed = time.monotonic() - started
        # Still there while stopped: the SIGTERM waits for it.
        assert exists(pg, stuck.slot_name)
        assert pg.slot(stuck.slot_name)["active_pid"] == walsender  # type: ignore[index]
    finally:
        os.kill(walsender, signal.SIGCONT)
    assert run.returncode == 3, run.stdout + run.stderr
    assert "Terminated" not in run.stdout + run.stderr
    assert run.stdout.count(f"Sent SIGTERM to walsender pid {walsender}") == 1, run.stdout
    assert f"Sent SIGTERM to pid {walsender}; still running after 1." in run.stdout
    assert f"Sent SIGTERM to pid {walsender}; still running after 4." in run.stdout
    assert run.stdout.count("still running after") <= 4, run.stdout  # at 1, 2, 4 s: not a flood
    assert "NOT dropped" in run.stderr
    assert f"walsender pid {walsender} was sent SIGTERM" in run.stderr
    assert "is usually stopped" in run.stderr
    assert f"kill -CONT {walsender}" in run.stderr
    assert elapsed < 25
    [record] = audit_records(tmp_path)
    assert record["outcome"] == "deadline"
    assert record["terminated_pids"] == [walsender]
    # Backing off to 100 ms: about 10 attempts a second over the 5 s deadline, not thousands.
    print(f"\n[pg{pg.install.major}] stopped walsender: {record['drop_attempts']} drop attempts")
    assert 5 <= record["drop_attempts"] <= 80, record["drop_attempts"]
    # The walsender dies once it runs again: the SIGTERM was delivered.
    wait_until(lambda: not pg.slot(stuck.slot_name)["active"], 15, message="slot released")  # type: ignore[index]


def test_two_drops_at_once_drop_once(
    pg: Cluster, tmp_path: Path, consumer_factory: ConsumerFactory, cleanup_slots: list[str]
) -> None:
    stuck = wedged(pg, consumer_factory)
    bystander = inactive_slot(pg)
    cleanup_slots.append(bystander)
    others_before = [r for r in slots_text(pg).splitlines() if stuck.slot_name not in r]
    env = clean_env(settings(pg, tmp_path))
    argv = [
        SLOTWATCH,
        "drop",
        stuck.slot_name,
        "--terminate",
        f"--confirm={stuck.slot_name}",
        "--observe=2.5s",
    ]
    # The observation window lines both up: each has read the slot before either drops it.
    procs = [
        subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [proc.communicate(timeout=60) for proc in procs]
    codes = [proc.returncode for proc in procs]
    stdouts = [out for out, _ in outputs]
    assert codes == [0, 0], outputs
    assert sum("Dropped slot" in out for out in stdouts) == 1, stdouts
    assert sum("already gone" in out for out in stdouts) == 1, stdouts
    assert not exists(pg, stuck.slot_name)
    assert [r for r in slots_text(pg).splitlines() if stuck.slot_name not in r] == others_before
    assert sorted(r["outcome"] for r in audit_records(tmp_path)) == ["already_gone", "dropped"]


def test_a_monitoring_role_is_told_what_to_grant(
    pg: Cluster, tmp_path: Path, consumer_factory: ConsumerFactory, cleanup_slots: list[str]
) -> None:
    slot = inactive_slot(pg)
    cleanup_slots.append(slot)
    env = settings(pg, tmp_path, SLOTWATCH_DSN=pg.dsn(user="watcher", password=CANARY))
    run = run_cli("drop", slot, f"--confirm={slot}", env=env)
    assert run.returncode == 77, run.stdout + run.stderr
    assert "ALTER ROLE watcher REPLICATION" in run.stderr
    assert exists(pg, slot)
    consumer = consumer_factory(pg)
    run = run_cli(
        "drop",
        consumer.slot_name,
        f"--confirm={consumer.slot_name}",
        "--terminate",
        "--force",
        "--reason=grant check",
        "--observe=1s",
        env=env,
    )
    assert run.returncode == 77, run.stdout + run.stderr
    assert "GRANT pg_signal_backend TO watcher" in run.stderr
    assert pg.slot(consumer.slot_name)["active"]  # type: ignore[index]
    assert [r["outcome"] for r in audit_records(tmp_path)] == ["permission_denied"] * 2
    assert_no_secret(run.stdout, run.stderr, (tmp_path / "audit.jsonl").read_text())


def test_the_running_daemon_sees_the_slot_vanish_and_the_new_one_appear(
    pg: Cluster, tmp_path: Path, consumer_factory: ConsumerFactory, cleanup_slots: list[str]
) -> None:
    old = inactive_slot(pg)
    cleanup_slots.append(old)
    env = settings(pg, tmp_path, SLOTWATCH_POLL_INTERVAL="0.5s")
    daemon_env = {k: v for k, v in env.items() if k != "SLOTWATCH_LISTEN"}  # it picks its own
    with SlotwatchProcess(daemon_env, tmp_path / "daemon.log") as daemon:
        wait_until(
            lambda: (daemon.slot_status(old) or {}).get("state") == "inactive",
            15,
            message="the daemon reads the old slot as inactive",
        )
        run = run_cli("drop", old, f"--confirm={old}", f"--daemon-url={daemon.url}", env=env)
        assert run.returncode == 0, run.stdout + run.stderr
        assert f"from the running daemon at {daemon.url}/status" in run.stdout
        wait_until(lambda: daemon.slot_status(old) is None, 15, message="old slot gone")
        # PowerSync answers a missing slot with a new one and a fresh stream.
        new = consumer_factory(pg, sync_rules_id=2)
        wait_until(
            lambda: daemon.slot_status(new.slot_name) is not None, 15, message="new slot seen"
        )
        assert daemon.metrics().value("slotwatch_matched_slots", target="default") == 1
        assert any(e.get("slot") == old for e in daemon.events("slot gone"))
    [record] = audit_records(tmp_path)
    assert record["state_source"].startswith("from the running daemon")


def test_no_slot_named_proposes_the_only_droppable_one(
    pg: Cluster, tmp_path: Path, consumer_factory: ConsumerFactory, cleanup_slots: list[str]
) -> None:
    healthy = consumer_factory(pg)
    env = settings(pg, tmp_path)
    with contextlib.ExitStack():
        free = inactive_slot(pg)
        cleanup_slots.append(free)
        run = run_cli("drop", env=env)
        assert run.returncode == 0, run.stdout + run.stderr
        assert f"Proposing the only droppable one: {free}" in run.stdout
        assert healthy.slot_name in run.stdout
        second = inactive_slot(pg)
        cleanup_slots.append(second)
        run = run_cli("drop", env=env)
        assert run.returncode == 3
        assert "2 of 3 matching slots are droppable" in run.stderr


# --- a server that goes silent ------------------------------------------------------------------

# Short timeouts keep the module fast: the bound is what the settings say, plus slack for the
# interpreter's start and a loaded host.
SILENT_STATEMENT_TIMEOUT = 1.0
SILENT_CONNECT_TIMEOUT = 1.0
SILENT_SLACK = 5.0
PSYCOPG_CANCEL_WAIT = 5.0  # how long psycopg waits for a cancel request on Ctrl-C, at most
SILENT_SLOT = "powersync_selfhost1_abcd"


def silent_settings(dsn: str, tmp_path: Path) -> dict[str, str]:
    return {
        "SLOTWATCH_DSN": dsn,
        "SLOTWATCH_LIVENESS_URL": "",
        "SLOTWATCH_LISTEN": f"127.0.0.1:{free_port()}",
        "SLOTWATCH_INACTIVE_AFTER": "1s",  # as settings(): inactive_slot() is inactive then
        "SLOTWATCH_STATEMENT_TIMEOUT": f"{SILENT_STATEMENT_TIMEOUT:g}s",
        "SLOTWATCH_CONNECT_TIMEOUT": f"{SILENT_CONNECT_TIMEOUT:g}s",
        "SLOTWATCH_AUDIT_LOG": str(tmp_path / "audit.jsonl"),
        "SLOTWATCH_LOG_FORMAT": "json",
    }


def timed_cli(*args: str, env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], float]:
    began = time.monotonic()
    # The subprocess timeout is far past the bound: a hang fails the assertion, not the run.
    run = run_cli(*args, env=env, timeout=120)
    return run, time.monotonic() - began


def error_lines(stderr: str) -> list[str]:
    """stderr without the structured log's JSON lines (the audit record goes there too)."""
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("{")]


@pytest.mark.parametrize(
    "args",
    [
        pytest.param([SILENT_SLOT], id="dry-run"),
        pytest.param([], id="no-slot-named"),
        pytest.param([SILENT_SLOT, f"--confirm={SILENT_SLOT}", "--terminate"], id="confirmed"),
    ],
)
def test_a_server_that_logs_in_and_goes_silent_ends_the_drop_within_its_deadline(
    tmp_path: Path, args: list[str]
) -> None:
    """The server completes the startup handshake and then never answers (a frozen backend, a
    proxy gone silent): statement_timeout cannot fire there. drop gives up on the first read
    after statement_timeout plus the poll's grace, exits 69 with one line, drops nothing."""
    with SilentPostgres() as server:
        run, elapsed = timed_cli(
            "drop", *args, env=silent_settings(server.dsn(password=CANARY), tmp_path)
        )
        assert server.messages >= 1, "the read reached the server and went unanswered"
    print(f"drop against a silent server: exit {run.returncode} after {elapsed:.2f}s")
    bound = SILENT_STATEMENT_TIMEOUT + ANSWER_GRACE + SILENT_CONNECT_TIMEOUT + SILENT_SLACK
    assert elapsed < bound, run.stderr
    assert elapsed >= SILENT_STATEMENT_TIMEOUT + ANSWER_GRACE, "it waited for the answer"
    assert run.returncode == 69, run.stdout + run.stderr
    wait = SILENT_STATEMENT_TIMEOUT + ANSWER_GRACE
    assert error_lines(run.stderr) == [
        f"slotwatch: reading the slots: no answer within {wait:g}s (statement_timeout plus "
        f"{ANSWER_GRACE:g}s): the server or the network in between is stuck; nothing was dropped"
    ]
    assert_no_secret(run.stdout, run.stderr)
    if "--confirm" in " ".join(args):
        [record] = audit_records(tmp_path)
        assert record["outcome"] == "unreachable"
        assert record["drop_attempts"] == 0
        assert "no answer within" in record["error"]
    else:
        assert audit_records(tmp_path) == []


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(
            (
                b"slotwatch: drop lock",
                "taking the slot's drop lock: no answer within {wait:g}s (statement_timeout "
                "plus {grace:g}s): the server or the network in between is stuck; nothing was "
                "dropped",
                "unreachable",
            ),
            id="lock",
        ),
        pytest.param(
            (
                b"slotwatch: drop slot",
                "the drop: no answer within {wait:g}s (statement_timeout plus {grace:g}s): the "
                "server or the network in between is stuck; whether the slot was dropped is "
                "not known: look at pg_replication_slots before running the drop again",
                "unknown",
            ),
            id="drop",
        ),
    ],
)
def test_a_server_that_goes_silent_mid_drop_ends_it_within_its_deadline(
    pg: Cluster, tmp_path: Path, cleanup_slots: list[str], case: tuple[bytes, str, str]
) -> None:
    """A real server behind a proxy that freezes when the lock or the drop statement passes:
    every round trip of the drop has the same deadline as the first read, not only that one.
    Frozen at the drop statement, the audit record says the outcome is unknown: the statement
    may have run (here the proxy never passed it on)."""
    marker, message, outcome = case
    slot = inactive_slot(pg)
    cleanup_slots.append(slot)
    with FreezingProxy(pg.port, marker) as proxy:
        dsn = make_conninfo(pg.dsn(password=CANARY), port=proxy.port, sslmode="disable")
        run, elapsed = timed_cli(
            "drop", slot, f"--confirm={slot}", env=silent_settings(dsn, tmp_path)
        )
        assert proxy.frozen.is_set(), run.stdout + run.stderr
    print(f"drop frozen at {marker.decode()}: exit {run.returncode} after {elapsed:.2f}s")
    # The reads before the freeze and the interpreter's start take their share of the slack.
    bound = SILENT_STATEMENT_TIMEOUT + ANSWER_GRACE + SILENT_CONNECT_TIMEOUT + SILENT_SLACK
    assert elapsed < bound, run.stderr
    assert run.returncode == 69, run.stdout + run.stderr
    wait = SILENT_STATEMENT_TIMEOUT + ANSWER_GRACE
    assert error_lines(run.stderr) == [
        "slotwatch: " + message.format(wait=wait, grace=ANSWER_GRACE)
    ]
    assert exists(pg, slot), "the frozen proxy never passed the drop on"
    [record] = audit_records(tmp_path)
    assert record["outcome"] == outcome
    assert_no_secret(run.stdout, run.stderr, (tmp_path / "audit.jsonl").read_text())


def test_a_connection_lost_after_the_drop_statement_leaves_the_outcome_unknown(
    pg: Cluster, tmp_path: Path, cleanup_slots: list[str]
) -> None:
    """The proxy passes the drop statement on and then closes the client's connection: the
    server drops the slot, slotwatch never hears so. It must not claim either way: exit 69,
    one line saying the outcome is not known, audit outcome `unknown` (never `unreachable`,
    which says nothing was dropped)."""
    slot = inactive_slot(pg)
    cleanup_slots.append(slot)
    with FreezingProxy(pg.port, b"slotwatch: drop slot", cut=True) as proxy:
        dsn = make_conninfo(pg.dsn(password=CANARY), port=proxy.port, sslmode="disable")
        run, elapsed = timed_cli(
            "drop", slot, f"--confirm={slot}", env=silent_settings(dsn, tmp_path)
        )
        assert proxy.frozen.is_set(), run.stdout + run.stderr
    print(f"drop cut after its statement: exit {run.returncode} after {elapsed:.2f}s")
    assert run.returncode == 69, run.stdout + run.stderr
    [line] = error_lines(run.stderr)
    assert line.startswith("slotwatch: the drop failed: "), line
    assert line.endswith(
        "; whether the slot was dropped is not known: look at pg_replication_slots before "
        "running the drop again"
    ), line
    wait_until(lambda: not exists(pg, slot), 10, message="the server ran the drop it was sent")
    [record] = audit_records(tmp_path)
    assert record["outcome"] == "unknown"
    assert record["drop_attempts"] == 1
    assert "whether the slot was dropped is not known" in record["error"]
    assert_no_secret(run.stdout, run.stderr, (tmp_path / "audit.jsonl").read_text())


# --- a target limited to one database -----------------------------------------------------------


def slot_in_database(cluster: Cluster, dbname: str) -> str:
    """A matching logical slot created from (and so in) database `dbname`."""
    name = powersync_slot_name(1)
    with cluster.connect(dbname=dbname) as conn:
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (name,))
    return name


def test_a_slot_of_another_database_is_never_dropped_nor_offered(
    pg: Cluster, tmp_path: Path, cleanup_slots: list[str]
) -> None:
    """SLOTWATCH_SLOT_DATABASE=app: `check` does not watch a slot of database other1, so
    drop refuses it by name (exit 3, naming both databases), does not offer it when no slot is
    named, and its drop statement would not drop it either."""
    (other_db,) = create_databases(pg, 1, prefix="other")
    other = slot_in_database(pg, other_db)
    cleanup_slots.append(other)
    mine = inactive_slot(pg)
    cleanup_slots.append(mine)
    env = settings(pg, tmp_path, SLOTWATCH_SLOT_DATABASE="app")

    refused = run_cli("drop", other, f"--confirm={other}", "--force", "--reason=x", env=env)
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert error_lines(refused.stderr) == [
        f"slotwatch: refused to drop {other}: slot '{other}' is in database '{other_db}', not "
        "in the target's slot_database 'app': slotwatch drops only slots it watches"
    ]
    assert f"[FAIL] slot '{other}' is in database '{other_db}'" in refused.stdout
    assert exists(pg, other)
    [record] = audit_records(tmp_path)
    assert record["outcome"] == "refused"
    assert record["guard"][-1] == {
        "check": "database",
        "passed": False,
        "detail": error_lines(refused.stderr)[0].split(": ", 2)[2],
    }

    listing = run_cli("drop", env=env)
    assert listing.returncode == 0, listing.stdout + listing.stderr
    assert f"Proposing the only droppable one: {mine}" in listing.stdout
    offered = [line for line in listing.stdout.splitlines() if line.startswith("  ")]
    assert offered, listing.stdout
    assert all(other not in line for line in offered), listing.stdout
    assert (
        f"Not offered: 1 matching slot outside the target's slot_database 'app': "
        f"{other} (database '{other_db}')"
    ) in listing.stdout
    assert exists(pg, other)

    # The statement re-checks the database itself: with the guard passed by mistake, it still
    # drops nothing of another database, and drops the target's own slot.
    with pg.connect() as conn:
        statement = drop_statement(conn.info.server_version)
        params = {"slot_like": like_pattern("powersync_selfhost%"), "slot_database": "app"}
        assert conn.execute(statement, {"slot": other, **params}).fetchall() == []
    assert exists(pg, other)
    dropped = run_cli("drop", mine, f"--confirm={mine}", env=env)
    assert dropped.returncode == 0, dropped.stdout + dropped.stderr
    assert not exists(pg, mine)
    assert exists(pg, other)


def test_ctrl_c_while_the_drop_statement_waits_leaves_the_outcome_unknown(
    pg: Cluster, tmp_path: Path, cleanup_slots: list[str]
) -> None:
    """Ctrl-C while the drop statement waits for its answer (the proxy froze once it passed):
    the statement may have run, so the one line and the audit record say the outcome is not
    known, not that the drop was aborted; exit 130 as for any interrupt. On Ctrl-C the driver
    sends the server a cancel request and gives it PSYCOPG_CANCEL_WAIT to arrive: here it goes
    through the frozen proxy too, so that wait is spent in full, and nothing more (no unlock)."""
    slot = inactive_slot(pg)
    cleanup_slots.append(slot)
    with FreezingProxy(pg.port, b"slotwatch: drop slot") as proxy:
        dsn = make_conninfo(pg.dsn(password=CANARY), port=proxy.port, sslmode="disable")
        proc = subprocess.Popen(
            [SLOTWATCH, "drop", slot, f"--confirm={slot}"],
            env=clean_env(silent_settings(dsn, tmp_path)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_until(proxy.frozen.is_set, 30, message="the drop statement reached the proxy")
            began = time.monotonic()
            proc.send_signal(signal.SIGINT)
            stdout, stderr = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        elapsed = time.monotonic() - began
    print(f"Ctrl-C during the drop statement: exit {proc.returncode} {elapsed:.2f}s after it")
    assert proc.returncode == 130, stdout + stderr
    assert error_lines(stderr) == [
        "slotwatch: interrupted: during the drop statement; whether the slot was dropped is not "
        "known: look at pg_replication_slots before running the drop again"
    ]
    assert elapsed < PSYCOPG_CANCEL_WAIT + SILENT_SLACK, "it waited for more than the cancel"
    [record] = audit_records(tmp_path)
    assert record["outcome"] == "unknown"
    assert record["error"].startswith("interrupted: during the drop statement")
    assert_no_secret(stdout, stderr, (tmp_path / "audit.jsonl").read_text())
