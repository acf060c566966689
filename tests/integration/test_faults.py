"""The fault suite: hostile servers, broken inputs and a daemon under them (issue 12, items 1-10).

Each story names the item it keeps fixed. Servers are real, on loopback; the daemon is the real
`slotwatch run`; where a database is involved, it is a real PostgreSQL 15 and 18.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pydantic import SecretStr
from slotwatch_proc import SlotwatchProcess, free_port, run_cli

from sandbox.cluster import Cluster
from sandbox.liveness import LivenessServer
from sandbox.waiting import wait_until
from slotwatch.poll.db import TargetConnection
from slotwatch.poll.probe import Prober

TIMEOUT = 1.0
# The verdict comes at the deadline; the slack is the scheduler's, not slotwatch's speed.
SLACK = 1.0

# --- the liveness probe against every way an endpoint can misbehave (items 1 and 2) ---------

# (mode, status code seen or None, part of the error)
MISBEHAVIOURS = [
    ("reset", None, "connection broken"),
    ("chunked", 200, "body larger than"),
    ("header_drip", None, "timed out"),
    ("body_drip", 200, "timed out"),
    ("redirect_loop", 302, "more than 3 redirects"),
    ("slow_redirect", None, "timed out"),
    ("gzip_bomb", 200, "compressed reply refused"),
    ("double_gzip_bomb", 200, "compressed reply refused"),
]


@pytest.mark.parametrize(
    ("mode", "code", "error"), MISBEHAVIOURS, ids=[m[0] for m in MISBEHAVIOURS]
)
def test_misbehaving_endpoint_is_down_within_the_timeout(
    liveness_server: Callable[..., LivenessServer], mode: str, code: int | None, error: str
) -> None:
    server = liveness_server(mode)
    # A drip of a byte every 0.2 s never trips a per-read timeout of 1 s: only a deadline ends it.
    server.drip = 0.2 if mode != "slow_redirect" else 0.6
    began = time.monotonic()
    result = Prober(server.url, TIMEOUT).probe()
    elapsed = time.monotonic() - began
    assert not result.up, result
    assert result.status_code == code, result
    assert result.error is not None
    assert error in result.error, result.error
    assert elapsed < TIMEOUT + SLACK, f"{mode}: verdict after {elapsed:.1f}s"
    print(f"{mode}: down after {elapsed:.2f}s ({result.error})")


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM for {pid}")


def _daemon_settings(server: LivenessServer, **more: str) -> dict[str, str]:
    return {
        # No database: the probe runs on its own schedule whatever the poll says.
        "SLOTWATCH_DSN": f"host=127.0.0.1 port={free_port()} user=x dbname=x",
        "SLOTWATCH_LIVENESS_URL": server.url,
        "SLOTWATCH_POLL_INTERVAL": "1s",
        **more,
    }


def _liveness(daemon: SlotwatchProcess) -> tuple[float | None, float | None]:
    m = daemon.metrics()
    labels = {"target": "default", "probe": "powersync"}
    return (
        m.value("slotwatch_liveness_up", **labels),
        m.value("slotwatch_liveness_last_success_timestamp_seconds", **labels),
    )


def test_double_gzip_bomb_costs_the_daemon_under_20_mb(
    liveness_server: Callable[..., LivenessServer], tmp_path: Path
) -> None:
    """Item 1: `Content-Encoding: gzip, gzip` took the daemon from 60 MB to 1.9 GB."""
    server = liveness_server("ok")
    settings = _daemon_settings(
        server, SLOTWATCH_PROBE_INTERVAL="0.2s", SLOTWATCH_PROBE_TIMEOUT="2s"
    )
    with SlotwatchProcess(settings, tmp_path / "slotwatch.log") as daemon:
        wait_until(lambda: _liveness(daemon)[0] == 1.0, 10, message="probe up first")
        before = _peak_rss_kib(daemon.proc.pid)
        for mode in ("double_gzip_bomb", "gzip_bomb"):
            hits = server.hits
            server.set_mode(mode)
            wait_until(lambda: _liveness(daemon)[0] == 0.0, 10, message=f"{mode}: probe down")
            # Several probes of the bomb, so a cost per probe would add up.
            wait_until(lambda hits=hits: server.hits >= hits + 5, 10, message=f"{mode} probed")
            error = daemon.status()["targets"][0]["liveness"]["error"]
            assert "compressed reply refused" in error
            server.set_mode("ok")
            wait_until(lambda: _liveness(daemon)[0] == 1.0, 10, message="probe up again")
        grown_mib = (_peak_rss_kib(daemon.proc.pid) - before) / 1024
        assert grown_mib < 20, f"peak RSS grew {grown_mib:.1f} MiB under the gzip bombs"
        print(f"peak RSS {before / 1024:.1f} MiB before the bombs, +{grown_mib:.2f} MiB after")


def test_header_drip_reads_down_in_time_and_sigterm_still_ends_the_daemon(
    liveness_server: Callable[..., LivenessServer], tmp_path: Path
) -> None:
    """Item 2: a server that drips its headers a byte a second hung the probe forever: the up
    series stayed a stale 1 and SIGTERM no longer ended the process."""
    probe_timeout, probe_interval = 2.0, 1.0
    server = liveness_server("ok")
    settings = _daemon_settings(
        server,
        SLOTWATCH_PROBE_INTERVAL=f"{probe_interval}s",
        SLOTWATCH_PROBE_TIMEOUT=f"{probe_timeout}s",
    )
    with SlotwatchProcess(settings, tmp_path / "slotwatch.log") as daemon:
        wait_until(lambda: _liveness(daemon)[0] == 1.0, 10, message="probe up first")
        server.drip = 0.5  # faster than the per-read timeout: only a deadline ends the probe
        server.set_mode("header_drip")
        switched = time.monotonic()
        wait_until(
            lambda: _liveness(daemon)[0] == 0.0,
            probe_timeout + probe_interval + SLACK,
            interval=0.05,
            message="liveness_up 0 within the probe timeout plus one interval",
        )
        detected = time.monotonic() - switched
        assert detected <= probe_timeout + probe_interval + SLACK
        # /healthz keeps its promise while the endpoint drips: the scheduler is not stuck.
        assert daemon.get("/healthz").status_code == 200
        # SIGTERM in the middle of a dripping probe.
        hits = server.hits
        wait_until(lambda: server.hits > hits, 5, interval=0.02, message="a probe in flight")
        code, elapsed = daemon.elapsed_stop()
    assert code == 0
    assert elapsed < probe_timeout + 2, f"SIGTERM took {elapsed:.1f}s"
    print(f"header drip: liveness_up 0 after {detected:.2f}s, SIGTERM exit 0 after {elapsed:.2f}s")


# --- the database: reasons and connections (items 7 and 8), PostgreSQL 15 and 18 -------------


def _sessions(cluster: Cluster) -> int:
    return int(
        cluster.scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'slotwatch'")
    )


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_pg_hba_reject_is_auth_77_without_blaming_the_password(cluster: Cluster) -> None:
    """Item 7: a `reject` line in pg_hba.conf read as connect/69, sending the operator to the
    network; it is the server refusing this role, so auth and 77, and the password is not it."""
    cluster.execute("DROP ROLE IF EXISTS hba_rejected")
    cluster.execute("CREATE ROLE hba_rejected LOGIN")
    hba = cluster.datadir / "pg_hba.conf"
    original = hba.read_text()
    hba.write_text("host all hba_rejected 127.0.0.1/32 reject\n" + original)
    cluster.execute("SELECT pg_reload_conf()")
    try:
        env = {"SLOTWATCH_DSN": cluster.dsn(user="hba_rejected"), "SLOTWATCH_LIVENESS_URL": ""}
        wait_until(lambda: run_cli("status", env=env).returncode != 0, 10, message="reload applied")
        done = run_cli("status", "--json", env=env)
    finally:
        hba.write_text(original)
        cluster.execute("SELECT pg_reload_conf()")
        cluster.execute("DROP ROLE hba_rejected")
    assert done.returncode == 77, done.stderr
    (target,) = json.loads(done.stdout)["targets"]
    assert target["error"]["reason"] == "auth", target["error"]
    line = done.stderr.strip()
    assert len(line.splitlines()) == 1
    assert "pg_hba.conf" in line
    assert "check the role's password" not in line


def test_a_database_that_does_not_exist_is_a_configuration_error(cluster: Cluster) -> None:
    """Item 7: a missing database read as auth/77 with a hint about the role and password."""
    env = {"SLOTWATCH_DSN": cluster.dsn(dbname="no_such_db"), "SLOTWATCH_LIVENESS_URL": ""}
    done = run_cli("status", env=env)
    assert done.returncode == 78, done.stderr
    line = done.stderr.strip()
    assert len(line.splitlines()) == 1
    assert "no_such_db" in line
    assert "dbname" in line
    assert "password" not in line
    check = run_cli("check", env=env)
    assert check.returncode == 3  # a monitoring plugin still answers UNKNOWN


def test_timed_out_connects_close_their_sockets_and_leave_no_sessions(cluster: Cluster) -> None:
    """Item 8: while pg_database is locked every connect times out; psycopg left each half-open
    connection to the garbage collector, so fds piled up and, once the lock went, the server
    finished the logins: several slotwatch sessions instead of one."""
    gc.disable()  # what the collector would hide between polls is exactly what must not exist
    try:
        conn = TargetConnection(
            "t",
            SecretStr(cluster.dsn()),
            "powersync_selfhost%",
            "powersync/%",
            connect_timeout=1,
            statement_timeout=1,
        )
        assert conn.poll().error is None
        conn.close()
        with cluster.connect() as locker:
            locker.execute("BEGIN")
            locker.execute("LOCK TABLE pg_database IN ACCESS EXCLUSIVE MODE")
            before = _open_fds()
            for _ in range(4):
                error = conn.poll().error
                assert error is not None
                assert error.reason == "timeout", error
                assert _open_fds() <= before, "a timed-out connect left its socket open"
            locker.execute("ROLLBACK")
        assert conn.poll().error is None
        # The logins nobody waits for any more must not complete into idle sessions.
        wait_until(lambda: _sessions(cluster) == 1, 5, message="one slotwatch session")
        conn.close()
        wait_until(lambda: _sessions(cluster) == 0, 5, message="no slotwatch session")
    finally:
        gc.enable()


def test_a_black_hole_target_leaves_no_half_open_sockets() -> None:
    """Item 8: a listener that never answers (a firewall that accepts, a stuck pooler)."""
    gc.disable()
    try:
        with socket.socket() as hole:
            hole.bind(("127.0.0.1", 0))
            hole.listen(64)  # never accepted: the kernel completes the handshake, nobody answers
            port = hole.getsockname()[1]
            conn = TargetConnection(
                "hole",
                SecretStr(f"host=127.0.0.1 port={port} user=x dbname=x"),
                "powersync_selfhost%",
                "powersync/%",
                connect_timeout=1,
                statement_timeout=1,
            )
            before = _open_fds()
            for _ in range(4):
                error = conn.poll().error
                assert error is not None
                assert error.reason == "timeout", error
            assert _open_fds() <= before
            conn.close()
    finally:
        gc.enable()


# --- secrets in malformed URIs (item 4) -----------------------------------------------------

SECRET = "Sw0rdf1sh-CANARY"  # noqa: S105 - the canary the output must never show
CLOSED = f"127.0.0.1:{free_port()}"


@pytest.mark.parametrize(
    "dsn",
    [
        f"postgresql://mon:pre@{SECRET}@{CLOSED}/app",  # libpq: host=SECRET@127.0.0.1
        f"postgresql://mon:{SECRET}/x@{CLOSED}/app",  # libpq: port=SECRET
        f"postgresql://mon:{SECRET}/x/y@{CLOSED}/app",
    ],
    ids=["at-sign", "slash", "slashes"],
)
@pytest.mark.parametrize("verb", ["config", "status", "check", "drop"])
def test_an_unencoded_password_character_is_refused_without_echoing_it(dsn: str, verb: str) -> None:
    """Item 4: the tail of such a password landed in `host` or `port` and every verb printed it."""
    env = {"SLOTWATCH_DSN": dsn, "SLOTWATCH_LIVENESS_URL": "", "SLOTWATCH_LOG_LEVEL": "debug"}
    done = run_cli(verb, env=env, timeout=30)
    shown = done.stdout + done.stderr
    assert SECRET not in shown
    assert SECRET.replace("-", "%2D") not in shown
    assert done.returncode == (3 if verb == "check" else 78), shown
    assert "percent-encode" in shown


def test_liveness_credentials_are_kept_out_of_config_and_status(
    liveness_server: Callable[..., LivenessServer], tmp_path: Path
) -> None:
    """Item 4: credentials in the liveness URL were printed by `config` and the unauthenticated
    /status."""
    server = liveness_server("ok")
    url = server.url.replace("http://", f"http://probe:{SECRET}@")
    env = {
        "SLOTWATCH_DSN": f"host=127.0.0.1 port={free_port()} user=x dbname=x",
        "SLOTWATCH_LIVENESS_URL": url,
        "SLOTWATCH_PROBE_INTERVAL": "0.2s",
    }
    shown = run_cli("config", env=env)
    assert shown.returncode == 0, shown.stderr
    assert SECRET not in shown.stdout + shown.stderr
    assert "probe:" in shown.stdout  # the user stays: it says which credentials are in use
    with SlotwatchProcess({**env, "SLOTWATCH_LOG_LEVEL": "debug"}, tmp_path / "log") as daemon:
        wait_until(lambda: _liveness(daemon)[0] == 1.0, 10, message="probe up")
        status = daemon.get("/status").text
        server.set_mode("fail")
        wait_until(lambda: _liveness(daemon)[0] == 0.0, 10, message="probe down")
        status += daemon.get("/status").text
    assert SECRET not in status
    assert SECRET not in daemon.log()


# --- config and secret files (item 5) -------------------------------------------------------


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return path


def _refused_quickly(done: subprocess.CompletedProcess[str], says: str) -> None:
    assert done.returncode == 78, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert says in lines[0]


@pytest.mark.parametrize("how", ["SLOTWATCH_CONFIG", "--config", "SLOTWATCH_DSN_FILE", "dsn_file"])
def test_a_fifo_is_refused_not_waited_on(fifo: Path, tmp_path: Path, how: str) -> None:
    """Item 5: a FIFO anywhere slotwatch reads a file hung start-up forever."""
    env: dict[str, str] = {"SLOTWATCH_LIVENESS_URL": ""}
    args: list[str] = ["config"]
    if how == "SLOTWATCH_CONFIG":
        env["SLOTWATCH_CONFIG"] = str(fifo)
    elif how == "--config":
        args = ["--config", str(fifo), "config"]
    elif how == "SLOTWATCH_DSN_FILE":
        env["SLOTWATCH_DSN_FILE"] = str(fifo)
    else:
        config = tmp_path / "slotwatch.toml"
        config.write_text(f'[[targets]]\nname = "a"\ndsn_file = "{fifo}"\n')
        env["SLOTWATCH_CONFIG"] = str(config)
    _refused_quickly(run_cli(*args, env=env, timeout=15), "is not a regular file")


@pytest.mark.parametrize("how", ["SLOTWATCH_CONFIG", "SLOTWATCH_DSN_FILE"])
def test_an_endless_file_is_refused(how: str) -> None:
    """Item 5: /dev/zero was read until memory ran out."""
    env = {how: "/dev/zero", "SLOTWATCH_LIVENESS_URL": ""}
    _refused_quickly(run_cli("config", env=env, timeout=15), "/dev/zero")


def test_an_oversized_config_file_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "big.toml"
    config.write_text("# padding\n" * 200_000)
    _refused_quickly(
        run_cli("config", env={"SLOTWATCH_CONFIG": str(config)}, timeout=15), "larger than"
    )


def test_a_deeply_nested_toml_is_a_configuration_error(tmp_path: Path) -> None:
    """Item 5: 5,000+ levels of nesting exited 70 (RecursionError) instead of 78."""
    config = tmp_path / "deep.toml"
    config.write_text("x = " + "[" * 6000 + "]" * 6000 + "\n")
    _refused_quickly(run_cli("config", env={"SLOTWATCH_CONFIG": str(config)}), "nested too deeply")


# --- values config accepted but run could not use (item 6) -----------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("SLOTWATCH_POLL_INTERVAL", "9661267954601624.0s", "at most 1d"),
        ("SLOTWATCH_PROBE_INTERVAL", "9661267954601624.0s", "at most 1d"),
        ("SLOTWATCH_PROBE_TIMEOUT", "9661267954601624.0s", "at most 1h"),
        ("SLOTWATCH_STATEMENT_TIMEOUT", "30d", "at most 2147483s"),
        ("SLOTWATCH_CONNECT_TIMEOUT", "30d", "at most 1h"),
        ("SLOTWATCH_POLL_INTERVAL", "1ms", "at least 100ms"),
        ("SLOTWATCH_PROBE_INTERVAL", "1ms", "at least 100ms"),
        ("SLOTWATCH_STALL_AFTER", "9661267954601624.0s", "at most 365d"),
        ("SLOTWATCH_LAG_WARN_BYTES", "99999999999TiB", "at most 1PiB"),
    ],
)
def test_config_refuses_what_run_could_not_use(variable: str, value: str, says: str) -> None:
    """Item 6: these passed `config`, then `run` exited 70 or failed every poll forever."""
    env = {"SLOTWATCH_DSN": "host=127.0.0.1 user=x dbname=x", variable: value}
    done = run_cli("config", env=env)
    assert done.returncode == 78, done.stdout + done.stderr
    assert variable in done.stderr
    assert says in done.stderr


def test_a_nul_in_the_slot_pattern_is_refused_by_config(tmp_path: Path) -> None:
    """Item 6: a NUL passed `config` and failed `status` (PostgreSQL text holds no NUL)."""
    config = tmp_path / "nul.toml"
    config.write_text('slot_pattern = "powersync\\u0000%"\n[[targets]]\ndsn = "host=x"\n')
    done = run_cli("config", env={"SLOTWATCH_CONFIG": str(config)})
    assert done.returncode == 78, done.stdout + done.stderr
    assert "control characters" in done.stderr


# --- drop's operator input (item 9) ---------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["powersync_selfhost1_dead\n[pass] forged\nDropped slot x"], "is not a slot name"),
        (["powersync_selfhost1_dead", "--confirm=\x1b[2J\x1b[31mpowersync"], "is not a slot"),
        (["Powersync_Selfhost1"], "is not a slot name"),
        (["powersync_selfhost1_" + "a" * 60], "is not a slot name"),
        (["powersync_selfhost1_dead", "--daemon-url", "http://[::1"], "--daemon-url"),
        (["powersync_selfhost1_dead", "--reason", "x\n[pass] fake", "--force"], "--reason"),
        (["powersync_selfhost1_dead", "--deadline", "9661267954601624s"], "at most 1h"),
    ],
    ids=["newline", "ansi", "uppercase", "too-long", "bad-url", "reason-newline", "deadline"],
)
def test_drop_refuses_bad_operator_input_as_usage_escaped(args: list[str], says: str) -> None:
    """Item 9: a newline in the slot forged `[pass]` lines and a "dropped" record on stdout,
    escapes reached the terminal, and a malformed --daemon-url exited 70."""
    env = {"SLOTWATCH_DSN": f"host=127.0.0.1 port={free_port()} user=x dbname=x"}
    done = run_cli("drop", *args, env=env)
    assert done.returncode == 64, done.stdout + done.stderr
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert says in lines[0]
    assert "\x1b" not in done.stderr
    assert "[pass]" not in done.stdout


# --- SIGHUP (item 10) -----------------------------------------------------------------------


def test_sighup_is_logged_and_the_daemon_keeps_running(tmp_path: Path) -> None:
    """Item 10: SIGHUP killed the daemon without a line in the log. It reloads nothing; it says
    so and keeps watching."""
    env = {
        "SLOTWATCH_DSN": f"host=127.0.0.1 port={free_port()} user=x dbname=x",
        "SLOTWATCH_LIVENESS_URL": "",
        "SLOTWATCH_POLL_INTERVAL": "0.5s",
    }
    with SlotwatchProcess(env, tmp_path / "slotwatch.log") as daemon:
        daemon.proc.send_signal(signal.SIGHUP)
        wait_until(
            lambda: any("SIGHUP" in e["event"] for e in _warnings(daemon)),
            5,
            message="the SIGHUP line in the log",
        )
        assert daemon.proc.poll() is None
        assert daemon.get("/healthz").status_code == 200
        code, _ = daemon.elapsed_stop()
    assert code == 0


def _warnings(daemon: SlotwatchProcess) -> list[dict[str, str]]:
    found = []
    for line in daemon.log().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("level") == "warning":
            found.append(record)
    return found


# --- faults that already held, kept holding: a running daemon through each, in one story -----

HELD_POLL = 0.5


def _up_and_reason(daemon: SlotwatchProcess) -> tuple[float | None, str | None]:
    m = daemon.metrics()
    status = daemon.status()["targets"][0]
    return m.value("slotwatch_up", target="default"), (status.get("error") or {}).get("reason")


def _kick(cluster: Cluster) -> None:
    """End slotwatch's session so that the next poll has to log in again."""
    cluster.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE application_name = 'slotwatch'"
    )


def test_a_running_daemon_through_the_faults_that_already_held(
    cluster_factory: Callable[..., Cluster], tmp_path: Path
) -> None:
    """Immediate stop and restart, a locked catalog under statement_timeout, max_connections
    exhausted, the password changed and the role dropped under a running daemon: each reads
    slotwatch_up 0 with its reason within a couple of polls, and 1 again once it is undone."""
    cluster = cluster_factory(settings={"max_connections": 10})
    cluster.execute("CREATE ROLE mon LOGIN IN ROLE pg_monitor PASSWORD 'first-pw'")
    cluster.execute("CREATE ROLE filler LOGIN")
    hba = cluster.datadir / "pg_hba.conf"
    hba.write_text("host all mon 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
    cluster.execute("SELECT pg_reload_conf()")
    env = {
        "SLOTWATCH_DSN": cluster.dsn(user="mon", password="first-pw"),  # noqa: S106 - throwaway role
        "SLOTWATCH_LIVENESS_URL": "",
        "SLOTWATCH_POLL_INTERVAL": f"{HELD_POLL}s",
        "SLOTWATCH_CONNECT_TIMEOUT": "1s",
        "SLOTWATCH_STATEMENT_TIMEOUT": "1s",
    }
    timings: list[tuple[str, float, float]] = []
    with SlotwatchProcess(env, tmp_path / "slotwatch.log") as daemon:
        wait_until(lambda: _up_and_reason(daemon)[0] == 1.0, 10, message="up first")

        def story(
            name: str, reason: str, inject: Callable[[], None], undo: Callable[[], None]
        ) -> None:
            inject()
            began = time.monotonic()
            wait_until(
                lambda: _up_and_reason(daemon) == (0.0, reason),
                4 * HELD_POLL + 3,  # connect/statement timeout (1 s) + the answer grace (2 s)
                interval=0.05,
                message=f"{name}: slotwatch_up 0 with reason {reason}",
            )
            detected = time.monotonic() - began
            undo()
            began = time.monotonic()
            wait_until(
                lambda: _up_and_reason(daemon)[0] == 1.0,
                4 * HELD_POLL + 5,
                interval=0.05,
                message=f"{name}: up again",
            )
            timings.append((name, detected, time.monotonic() - began))

        story("immediate stop", "connect", lambda: cluster.stop("immediate"), cluster.start)

        lock: list[Any] = []

        def take_lock() -> None:
            conn = psycopg.connect(cluster.dsn(), autocommit=False)
            conn.execute("LOCK TABLE pg_catalog.pg_replication_origin IN ACCESS EXCLUSIVE MODE")
            conn.execute("LOCK TABLE pg_catalog.pg_database IN ACCESS EXCLUSIVE MODE")
            lock.append(conn)

        def release_lock() -> None:
            lock.pop().close()

        story("catalog lock", "timeout", take_lock, release_lock)

        fillers: list[Any] = []

        def exhaust() -> None:
            _kick(cluster)
            with contextlib.suppress(psycopg.OperationalError):
                for _ in range(10):
                    fillers.append(psycopg.connect(cluster.dsn(user="filler")))

        def free() -> None:
            while fillers:
                fillers.pop().close()

        story("max_connections", "connect", exhaust, free)

        def change_password() -> None:
            cluster.execute("ALTER ROLE mon PASSWORD 'second-pw'")
            _kick(cluster)

        def restore_password() -> None:
            cluster.execute("ALTER ROLE mon PASSWORD 'first-pw'")

        story("password changed", "auth", change_password, restore_password)

        def drop_role() -> None:
            _kick(cluster)
            cluster.execute("DROP ROLE mon")

        def recreate_role() -> None:
            cluster.execute("CREATE ROLE mon LOGIN IN ROLE pg_monitor PASSWORD 'first-pw'")

        story("role dropped", "auth", drop_role, recreate_role)
        assert daemon.proc.poll() is None
        code, _ = daemon.elapsed_stop()
    assert code == 0
    for name, detected, recovered in timings:
        print(f"{name}: down after {detected:.1f}s, up again {recovered:.1f}s after the fix")


class _LatencyProxy:
    """A TCP proxy on loopback that holds every chunk from the server for `delay` seconds."""

    def __init__(self, upstream_port: int) -> None:
        self.delay = 0.0
        self._upstream = upstream_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closed = False
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._spawn(self._accept)

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self._upstream), timeout=5)
            server.settimeout(None)
            self._sockets += [client, server]
            self._spawn(self._pipe, client, server, False)
            self._spawn(self._pipe, server, client, True)

    def _pipe(self, source: socket.socket, sink: socket.socket, delayed: bool) -> None:
        with contextlib.suppress(OSError):
            while chunk := source.recv(65536):
                if delayed and self.delay:
                    time.sleep(self.delay)
                sink.sendall(chunk)
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        for end in self._sockets:
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(timeout=10)
        for end in self._sockets:
            end.close()


def test_a_slow_network_reads_timeout_and_recovers_when_it_is_fast_again(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Every answer of the server held 4 s by the network, against a 1 s statement timeout: the
    poll cannot finish within statement timeout + the 2 s answer grace, so slotwatch_up reads 0
    with reason timeout; once the network is fast again the next polls succeed."""
    proxy = _LatencyProxy(cluster.port)
    dsn = cluster.dsn().replace(f"port={cluster.port}", f"port={proxy.port}")
    assert f"port={proxy.port}" in dsn
    env = {
        "SLOTWATCH_DSN": dsn,
        "SLOTWATCH_LIVENESS_URL": "",
        "SLOTWATCH_POLL_INTERVAL": f"{HELD_POLL}s",
        "SLOTWATCH_CONNECT_TIMEOUT": "1s",
        "SLOTWATCH_STATEMENT_TIMEOUT": "1s",
    }
    try:
        with SlotwatchProcess(env, tmp_path / "slotwatch.log") as daemon:
            wait_until(lambda: _up_and_reason(daemon)[0] == 1.0, 10, message="up first")
            proxy.delay = 4.0
            began = time.monotonic()
            wait_until(
                lambda: _up_and_reason(daemon) == (0.0, "timeout"),
                # the poll in flight, then one whose answer misses its deadline (1 s + 2 s)
                2 * HELD_POLL + 4 + 3 + SLACK,
                interval=0.05,
                message="slotwatch_up 0 with reason timeout behind a slow network",
            )
            detected = time.monotonic() - began
            proxy.delay = 0.0
            began = time.monotonic()
            wait_until(
                lambda: _up_and_reason(daemon)[0] == 1.0,
                4 * HELD_POLL + 4 + 5,  # a delayed answer still in flight drains first
                interval=0.05,
                message="up again once the network is fast",
            )
            print(
                f"slow network: down after {detected:.1f}s,"
                f" up again {time.monotonic() - began:.1f}s after it is fast"
            )
            assert daemon.proc.poll() is None
            code, _ = daemon.elapsed_stop()
        assert code == 0
    finally:
        proxy.close()
