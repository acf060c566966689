"""The canary: one password, in every place a secret can sit, and never in anything shown.

The password (with characters a URI must encode) is the monitoring role's, the admin role's and
the liveness endpoint's; it reaches slotwatch through a `dsn_file`, an inline `admin_dsn` and the
URL. Every verb runs at every log level in both formats, against a live target and a dead one;
the daemon runs at debug level through a successful and a failed poll; a drop is confirmed with
an audit log. Everything captured (stdout, stderr, the daemon's log, /metrics, /status, /healthz,
the audit records) is scanned for the password, plain and URL-encoded.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
from psycopg import sql
from slotwatch_proc import SlotwatchProcess, free_port, run_cli

from sandbox.cluster import Cluster
from sandbox.consumer import create_slot, powersync_slot_name
from sandbox.installs import PgInstall
from sandbox.liveness import LivenessServer
from sandbox.waiting import wait_until

CANARY = "c4n@ry/Pw:7d?1e%x"
FORMS = {CANARY, quote(CANARY, safe=""), quote_plus(CANARY), quote(CANARY)}
LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("json", "console")


@pytest.fixture(scope="module")
def source(pg_install: PgInstall) -> Iterator[Cluster]:
    """A cluster where the monitoring role really needs its password (scram), so the secret is
    sent, checked, and on a dead target reported on."""
    with Cluster(pg_install) as cluster:
        cluster.execute(
            "CREATE ROLE canary LOGIN REPLICATION IN ROLE pg_monitor, pg_signal_backend"
        )
        cluster.execute(sql.SQL("ALTER ROLE canary PASSWORD {}").format(sql.Literal(CANARY)))
        hba = cluster.datadir / "pg_hba.conf"
        hba.write_text("host all canary 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
        cluster.execute("SELECT pg_reload_conf()")
        yield cluster


def _config(source: Cluster, liveness: LivenessServer, tmp_path: Path) -> dict[str, str]:
    encoded = quote(CANARY, safe="")
    dsn_file = tmp_path / "live-dsn"
    dsn_file.write_text(f"postgresql://canary:{encoded}@127.0.0.1:{source.port}/app\n")
    liveness_url = liveness.url.replace("http://", f"http://probe:{encoded}@")
    dead = f"host=127.0.0.1 port={free_port()} user=canary dbname=app password='{CANARY}'"
    config = tmp_path / "slotwatch.toml"
    config.write_text(
        'inactive_after = "1s"\n'
        'stall_after = "2s"\n'
        f"liveness_url = {json.dumps(liveness_url)}\n"
        "[[targets]]\n"
        'name = "live"\n'
        f"dsn_file = {json.dumps(str(dsn_file))}\n"
        f"admin_dsn = {json.dumps(source.dsn(user='canary', password=CANARY))}\n"
        "[[targets]]\n"
        'name = "dead"\n'
        f"dsn = {json.dumps(dead)}\n"
    )
    return {
        "SLOTWATCH_CONFIG": str(config),
        "SLOTWATCH_LISTEN": f"127.0.0.1:{free_port()}",  # no daemon: drop reads one poll
        "SLOTWATCH_AUDIT_LOG": str(tmp_path / "audit.jsonl"),
        "SLOTWATCH_CONNECT_TIMEOUT": "2s",
    }


def _scan(where: str, text: str) -> None:
    for form in FORMS:
        assert form not in text, f"the canary ({form!r}) shows in {where}"


def test_the_canary_never_shows(
    source: Cluster, liveness_server: Callable[..., LivenessServer], tmp_path: Path
) -> None:
    liveness = liveness_server("ok")
    env = _config(source, liveness, tmp_path)
    slot = create_slot(source, powersync_slot_name(7))
    captured: list[tuple[str, str]] = []
    verbs = [
        ["config"],
        ["status"],
        ["status", "--json"],
        ["status", "--target", "dead"],
        ["check"],
        ["check", "--target", "dead"],
        ["drop", slot, "--target", "live"],
        ["drop", slot, "--target", "dead"],
        ["version"],
    ]
    codes: dict[str, set[int]] = {}

    def one(run: tuple[list[str], str, str]) -> None:
        args, level, fmt = run
        run_env = {**env, "SLOTWATCH_LOG_LEVEL": level, "SLOTWATCH_LOG_FORMAT": fmt}
        done = run_cli(*args, env=run_env, timeout=120)
        name = f"{' '.join(args)} at {level}/{fmt}"
        captured.extend([(f"stdout of {name}", done.stdout), (f"stderr of {name}", done.stderr)])
        codes.setdefault(" ".join(args), set()).add(done.returncode)

    # Independent one-shot runs: a few at once, or the matrix takes minutes on a busy machine.
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(one, itertools.product(verbs, LEVELS, FORMATS)))
    # The runs did what they say: the live target answered, the dead one did not.
    assert codes["status"] == {69}  # one of the two targets is down
    assert codes["status --target dead"] == {69}
    assert codes[f"drop {slot} --target live"] == {0}  # a dry run, guard passed
    assert codes["config"] == {0}

    # The daemon, at debug, through good and failed polls and probes.
    daemon_env = {**env, "SLOTWATCH_LOG_LEVEL": "debug", "SLOTWATCH_PROBE_INTERVAL": "0.3s"}
    daemon_env["SLOTWATCH_POLL_INTERVAL"] = "0.5s"
    daemon_env.pop("SLOTWATCH_LISTEN")
    with SlotwatchProcess(daemon_env, tmp_path / "daemon.log") as daemon:

        def polled_both() -> bool:
            up = {t["target"]: t["up"] for t in daemon.status()["targets"]}
            return up == {"live": True, "dead": False}

        wait_until(polled_both, 20, message="live up, dead down")
        liveness.set_mode("fail")

        def probe_down() -> bool:
            live = next(t for t in daemon.status()["targets"] if t["target"] == "live")
            return bool(live["liveness"]) and live["liveness"]["up"] is False

        wait_until(probe_down, 10, message="liveness down")
        for path in ("/metrics", "/status", "/healthz"):
            captured.append((path, daemon.get(path).text))
        # A confirmed drop while the daemon runs: its audit record and its output. The daemon
        # must first have seen the slot free for the inactive window (PostgreSQL 15 does not
        # report inactive_since, so the daemon's own history is the clock).
        wait_until(
            lambda: (daemon.slot_status(slot, target="live") or {}).get("state") == "inactive",
            15,
            message="the daemon reads the slot inactive",
        )
        done = run_cli(
            "drop",
            slot,
            "--target",
            "live",
            f"--confirm={slot}",
            f"--daemon-url={daemon.url}",
            env={**env, "SLOTWATCH_LOG_LEVEL": "debug"},
        )
        captured += [("stdout of drop --confirm", done.stdout), ("stderr", done.stderr)]
        assert done.returncode == 0, done.stdout + done.stderr
    captured.append(("the daemon's log", daemon.log()))
    audit = (tmp_path / "audit.jsonl").read_text()
    assert audit.strip(), "the confirmed drop wrote no audit record"
    captured.append(("the audit log", audit))
    assert source.slot(slot) is None
    for where, text in captured:
        _scan(where, text)
