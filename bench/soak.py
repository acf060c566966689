"""Soak: `slotwatch run` polled hard against a real PostgreSQL while slots come and go.

```
.venv/bin/python -m bench.soak                      # 10 minutes, pg15, 4 targets
.venv/bin/python -m bench.soak --seconds 3600 --install pg18 --targets 8
```

The daemon runs as a subprocess with the shortest intervals the settings allow (100 ms polls and
probes) over several targets on the same server, beside a thread that creates and drops
PowerSync-named slots without pause, and a liveness stand-in that fails every few seconds. Its
RSS, open fds and threads are read from /proc after a warm-up and at the end; the polls are
counted on the server (`pg_stat_database.xact_commit` of the database slotwatch connects to: one
autocommit statement per poll). At the end /metrics must show exactly the slots that exist.

tests/integration/test_soak.py runs `soak()` for about a minute in CI and asserts flat figures;
this script is the long version, and prints the same figures as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from sandbox.cluster import Cluster
from sandbox.installs import get_install
from sandbox.liveness import LivenessServer
from sandbox.ports import free_port
from sandbox.waiting import wait_until

SLOTWATCH = str(Path(sys.executable).with_name("slotwatch"))
POLL = "100ms"  # the shortest interval the settings accept
CHURN_DATABASE = "postgres"  # slots churn here; slotwatch's own polls are counted in `app`


@dataclass
class Figures:
    rss_kib: int
    fds: int
    threads: int


@dataclass
class SoakResult:
    seconds: float
    targets: int
    polls: int
    slots_created: int
    slots_dropped: int
    start: Figures
    end: Figures
    samples: list[Figures] = field(default_factory=list)
    series_match_live_slots: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def figures(pid: int) -> Figures:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    values = {line.split(":")[0]: line.split(":")[1].split() for line in status if ":" in line}
    return Figures(
        rss_kib=int(values["VmRSS"][0]),
        fds=len(os.listdir(f"/proc/{pid}/fd")),
        threads=int(values["Threads"][0]),
    )


class _Churn(threading.Thread):
    """Creates a PowerSync-named slot, drops the oldest beyond three, again and again."""

    def __init__(self, cluster: Cluster) -> None:
        super().__init__(name="churn", daemon=True)
        self.cluster = cluster
        self.stop = threading.Event()
        self.created = 0
        self.dropped = 0
        self.live: list[str] = []

    def run(self) -> None:
        with self.cluster.connect(dbname=CHURN_DATABASE) as conn:
            while not self.stop.is_set():
                name = f"powersync_selfhost{self.created % 1000}_{self.created % 65536:04x}"
                conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (name,))
                self.created += 1
                self.live.append(name)
                while len(self.live) > 3:
                    conn.execute("SELECT pg_drop_replication_slot(%s)", (self.live.pop(0),))
                    self.dropped += 1
                self.stop.wait(0.02)


def _xacts(cluster: Cluster) -> int:
    return int(cluster.scalar("SELECT xact_commit FROM pg_stat_database WHERE datname = 'app'"))


def _slot_series(text: str) -> set[str]:
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        if family.name == "slotwatch_slot_active":
            names.update(s.labels["slot"] for s in family.samples)
    return names


def _start(cluster: Cluster, liveness: LivenessServer, targets: int, workdir: Path) -> _Daemon:
    config = workdir / "soak.toml"
    entries = "".join(
        f'[[targets]]\nname = "t{i}"\ndsn = "{cluster.dsn()}"\n' for i in range(targets)
    )
    config.write_text(
        f'poll_interval = "{POLL}"\nprobe_interval = "{POLL}"\nprobe_timeout = "1s"\n'
        f'liveness_url = "{liveness.url}"\n{entries}'
    )
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLOTWATCH_")}
    env |= {
        "SLOTWATCH_CONFIG": str(config),
        "SLOTWATCH_LISTEN": f"127.0.0.1:{port}",
        "SLOTWATCH_LOG_FORMAT": "json",
    }
    log = (workdir / "slotwatch.log").open("w")
    proc = subprocess.Popen([SLOTWATCH, "run"], env=env, stdout=log, stderr=subprocess.STDOUT)
    daemon = _Daemon(proc, f"http://127.0.0.1:{port}", log)
    wait_until(daemon.healthy, 20, message="slotwatch serving")
    return daemon


@dataclass
class _Daemon:
    proc: subprocess.Popen[bytes]
    url: str
    log: Any
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=5))

    def healthy(self) -> bool:
        try:
            return self.client.get(self.url + "/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    def slot_series(self) -> set[str]:
        return _slot_series(self.client.get(self.url + "/metrics").text)

    def stop(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(15)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def soak(
    cluster: Cluster,
    seconds: float,
    *,
    targets: int = 4,
    warmup: float = 10.0,
    workdir: Path,
    samples: int = 6,
) -> SoakResult:
    """Run the daemon for `seconds` under churn; figures after the warm-up and at the end."""
    liveness = LivenessServer("ok").start()
    churn = _Churn(cluster)
    daemon = _start(cluster, liveness, targets, workdir)
    try:
        churn.start()
        began = time.monotonic()
        # The probe's failure path is exercised too: down for a second every five.
        flapper = threading.Thread(target=_flap, args=(liveness, churn.stop), daemon=True)
        flapper.start()
        time.sleep(min(warmup, seconds / 4))
        start_xacts, start = _xacts(cluster), figures(daemon.proc.pid)
        measured = time.monotonic()
        taken: list[Figures] = []
        for i in range(samples):
            time.sleep(max(0.0, began + seconds * (i + 1) / samples - time.monotonic()))
            taken.append(figures(daemon.proc.pid))
        polls, elapsed = _xacts(cluster) - start_xacts, time.monotonic() - measured
        churn.stop.set()
        churn.join(10)
        flapper.join(10)
        live = {
            str(row[0])
            for row in cluster.query("SELECT slot_name FROM pg_replication_slots")
            if str(row[0]).startswith("powersync_selfhost")
        }
        try:
            wait_until(lambda: daemon.slot_series() == live, 10, message="series = live slots")
            matched = True
        except AssertionError:
            matched = False
        return SoakResult(
            seconds=round(elapsed, 1),
            targets=targets,
            polls=polls,
            slots_created=churn.created,
            slots_dropped=churn.dropped,
            start=start,
            end=taken[-1],
            samples=taken,
            series_match_live_slots=matched,
        )
    finally:
        churn.stop.set()
        daemon.stop()
        liveness.stop()
        with cluster.connect(dbname=CHURN_DATABASE) as conn:
            for name in churn.live:
                conn.execute(
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                    " WHERE slot_name = %s",
                    (name,),
                )


def _flap(liveness: LivenessServer, stop: threading.Event) -> None:
    while not stop.wait(4.0):
        liveness.set_mode("fail")
        if stop.wait(1.0):
            break
        liveness.set_mode("ok")
    liveness.set_mode("ok")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--install", default="pg15")
    parser.add_argument("--targets", type=int, default=4)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="slotwatch-soak-"))
    with Cluster(get_install(args.install), max_slot_wal_keep_size="64MB") as cluster:
        result = soak(cluster, args.seconds, targets=args.targets, workdir=workdir)
    text = json.dumps(result.as_dict(), indent=2)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
