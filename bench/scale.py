"""slotwatch beside the real postgres_exporter at 1 to 1,000 slots, start-up, and a fleet.

Both exporters run as the daemons they are (slotwatch `run`, Debian's
`prometheus-postgres-exporter` on a free loopback port, its packaged service never started) against
one throwaway PostgreSQL with N real logical slots, a few of them streamed by real pg_recvlogical
consumers. Every comparison alternates which side goes first (A B / B A), so machine drift hits
both. bench/README.md says what each row means; the command writes bench/RESULTS.md itself.
"""

from __future__ import annotations

import math
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import generate_latest
from psycopg import sql
from pydantic import SecretStr

from sandbox import Cluster, Consumer, get_install
from sandbox.fleet import BlackHole, create_databases, fleet_targets, write_targets_file
from sandbox.ports import free_port
from sandbox.waiting import wait_until
from slotwatch.model import PollResult, Thresholds
from slotwatch.poll import db
from slotwatch.serve.collector import build_registry
from slotwatch.serve.store import TargetView
from slotwatch.wiring import Recorder

EXPORTER = "/usr/bin/prometheus-postgres-exporter"
EXPORTER_PACKAGE = "prometheus-postgres-exporter"
SLOTWATCH = str(Path(sys.executable).with_name("slotwatch"))
SLOT_PATTERN = "powersync_selfhost%"
ROLES = ("bench_daemon", "bench_exporter", "bench_poll")
CONSUMERS = 3  # slots streamed by a real pg_recvlogical at every N (fewer when N is smaller)
DEFAULT_INTERVAL = 15.0  # SPEC's poll interval, and the scrape interval used for CPU per hour
CLK_TCK = os.sysconf("SC_CLK_TCK")
# A success is stamped when its poll ends, and a round of hundreds of polls started at once takes
# a second or so to land on 2 cores: one interval plus that is "within one interval".
FLEET_SLACK = 2.0
BARE = "SELECT * FROM pg_replication_slots"  # the floor: the slot view alone, no JSON, no joins
DEFAULT_WINDOW = 600.0  # SPEC's forecast window: 40 polls of 15 s, plus the baseline before it
# The in-process poll is judged on a clock that steps 15 s a poll, after this many polls: its
# slots then hold and forecast a full window, as a daemon does after ten minutes.
STEADY_POLLS = int(DEFAULT_WINDOW / DEFAULT_INTERVAL) + 5
# The steady-state daemon runs 15x faster than the defaults (1 s polls, 40 s window): the same
# 41 samples a slot, one scrape a poll; each of its seconds stands for a default 15 s cycle.
COMPRESSION = 15.0


@dataclass(frozen=True)
class ScaleSize:
    counts: tuple[int, ...]
    sequential: int  # GET /metrics per side, one at a time
    burst_clients: int
    burst_each: int  # GETs per concurrent client
    cpu_window: float  # seconds of idle running at default intervals, scraped every 15 s
    polls: int  # in-process polls for server time and the poll-vs-floor figure
    startup_runs: int
    fleet_targets: int
    fleet_databases: int
    fleet_interval: float  # seconds; the full run uses SPEC's default


FULL_SCALE = ScaleSize((1, 10, 100, 1000), 40, 20, 5, 30.0, 20, 10, 500, 10, DEFAULT_INTERVAL)
QUICK_SCALE = ScaleSize((1, 10), 8, 20, 2, 0.0, 5, 3, 50, 5, 4.0)


@dataclass
class Row:
    """One measured quantity at one N: slotwatch's value, postgres_exporter's, and the ratio."""

    name: str
    unit: str
    slotwatch: float
    exporter: float | None
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.exporter is None or self.exporter == 0:
            return None  # no peer figure, or nothing to divide by (0 connections a minute)
        return self.slotwatch / self.exporter


# -- the exporter -------------------------------------------------------------------------------


def ensure_exporter() -> str:
    """Install Debian's postgres_exporter if missing, with its service kept from ever running."""
    if not Path(EXPORTER).exists():
        policy = Path("/usr/sbin/policy-rc.d")
        ours = not policy.exists()
        if ours:
            # Debian starts a service on install unless policy-rc.d says no (101).
            policy.write_text("#!/bin/sh\nexit 101\n")
            policy.chmod(0o755)
        try:
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            subprocess.run(
                ["apt-get", "update", "-qq"], check=True, env=env, capture_output=True, timeout=600
            )
            subprocess.run(
                ["apt-get", "install", "-y", "-q", "--no-install-recommends", EXPORTER_PACKAGE],
                check=True,
                env=env,
                capture_output=True,
                timeout=600,
            )
        finally:
            if ours:
                policy.unlink()
        if shutil.which("systemctl"):
            # The package enables its unit on install: it must never start on this machine. A
            # unit that was there before the run is the machine owner's and is left alone.
            for verb in ("stop", "disable", "mask"):
                subprocess.run(
                    ["systemctl", verb, EXPORTER_PACKAGE],
                    capture_output=True,
                    check=False,
                    timeout=60,
                )
    version = subprocess.run(
        [EXPORTER, "--version"], capture_output=True, text=True, check=True, timeout=30
    )
    return (version.stdout + version.stderr).strip().splitlines()[0]


# -- processes ----------------------------------------------------------------------------------


class Daemon:
    """A child process serving /metrics on 127.0.0.1, with its CPU and RSS read from /proc."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], port: int) -> None:
        self.name = name
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.log = Path(tempfile.mkdtemp(prefix=f"bench-{name}-")) / "daemon.log"
        self._log = self.log.open("w")
        self.proc = subprocess.Popen(argv, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, client: httpx.Client, ready: Callable[[str], bool]) -> None:
        def up() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log.read_text()[-2000:]}")
            try:
                response = client.get(self.url)
            except httpx.HTTPError:
                return False
            return response.status_code == 200 and ready(response.text)

        wait_until(up, 120, message=f"{self.name} did not serve the expected metrics")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def clean_env(settings: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLOTWATCH_", "DATA_SOURCE"))}
    return {**env, **settings}


def start_slotwatch(settings: dict[str, str]) -> Daemon:
    port = free_port()
    env = clean_env(
        {
            "SLOTWATCH_LISTEN": f"127.0.0.1:{port}",
            "SLOTWATCH_LOG_FORMAT": "json",
            "SLOTWATCH_LIVENESS_URL": "",
            **settings,
        }
    )
    return Daemon("slotwatch", [SLOTWATCH, "run"], env, port)


def start_exporter(dsn: str) -> Daemon:
    port = free_port()
    env = clean_env({"DATA_SOURCE_NAME": dsn})
    argv = [EXPORTER, f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"]
    return Daemon("postgres_exporter", argv, env, port)


# -- measuring ----------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile: the least value with at least a share `q` of them at or
    below it (p99 of 100 values is the 99th, of 40 the 40th)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def timed_get(client: httpx.Client, url: str) -> tuple[float, bytes]:
    began = time.perf_counter()
    response = client.get(url)
    elapsed = time.perf_counter() - began
    response.raise_for_status()
    return elapsed, response.content


def burst(url: str, clients: int, each: int) -> tuple[list[float], float]:
    """`clients` threads, each with its own connection, GET `url` `each` times; (latencies, s)."""
    latencies: list[float] = []
    lock = threading.Lock()
    go = threading.Event()

    def worker() -> None:
        with httpx.Client(timeout=60) as client:
            go.wait()
            for _ in range(each):
                elapsed, _ = timed_get(client, url)
                with lock:
                    latencies.append(elapsed)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    began = time.perf_counter()
    go.set()
    for t in threads:
        t.join()
    return latencies, time.perf_counter() - began


def series_of(body: bytes) -> int:
    return sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))


def connections_by_role(cluster: Cluster) -> dict[str, int]:
    text = cluster.log_path.read_text(errors="replace")
    return {role: text.count(f"connection authorized: user={role} ") for role in ROLES}


def server_time(cluster: Cluster) -> dict[str, tuple[float, float]]:
    """Per role: (total exec ms, calls) since the last pg_stat_statements_reset().

    The floor's own statement (BARE, run on the poll's connection) is left out.
    """
    rows = cluster.query(
        "SELECT r.rolname, coalesce(sum(s.total_exec_time), 0), coalesce(sum(s.calls), 0)"
        " FROM pg_roles r LEFT JOIN pg_stat_statements s ON s.userid = r.oid AND s.query <> %s"
        " WHERE r.rolname = ANY(%s) GROUP BY r.rolname",
        (BARE, list(ROLES)),
    )
    return {role: (float(total), float(calls)) for role, total, calls in rows}


def poll_stamps(text: str) -> dict[str, float]:
    """When each target's last poll succeeded, by target name, from a /metrics body."""
    prefix = "slotwatch_last_poll_success_timestamp_seconds{"
    return {
        line.split('"')[1]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(prefix)
    }


def per_call(fn: Callable[[], object], loops: int) -> float:
    began = time.perf_counter()
    for _ in range(loops):
        fn()
    return (time.perf_counter() - began) / loops


def interleaved(
    subject: Callable[[], object], peer: Callable[[], object], loops: int, repeats: int
) -> tuple[float, float]:
    """Median seconds per call of each, alternating which goes first so drift hits both alike."""
    mine: list[float] = []
    theirs: list[float] = []
    for r in range(repeats):
        if r % 2 == 0:
            mine.append(per_call(subject, loops))
            theirs.append(per_call(peer, loops))
        else:
            theirs.append(per_call(peer, loops))
            mine.append(per_call(subject, loops))
    return statistics.median(mine), statistics.median(theirs)


def against_floor(name: str, median: float, floor: float) -> Row:
    """A row of a median (seconds) in ms, with its ratio to the floor's median."""
    detail = {"floor_ms": floor * 1000, "ratio_to_floor": median / floor}
    return Row(name, "ms", median * 1000, None, detail)


def statement_only(target: db.TargetConnection, conn: Any) -> Callable[[], object] | None:
    """The poll's own statement, fetched as the poll fetches it (rows through psycopg, no
    parsing); None for a checkout whose poll has no such step."""
    fetch = getattr(db, "fetch_rows", None)
    statement = getattr(target, "_statement", None)
    if fetch is None or statement is None:
        return None
    return lambda: fetch(conn, statement, SLOT_PATTERN, "powersync/%", all_counters=False)


def least_exporter(statement: Callable[[], object], body: bytes) -> Callable[[], object]:
    """The least any Python exporter of `body`'s series does a poll: the statement's rows, then
    every series' value turned to text and joined to its name and labels, already known. No
    parse, no judgement, no families: a bound on what the full poll can come down to in Python."""
    pairs = []
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            pairs.append((series + " ", float(value)))

    def poll() -> bytes:
        statement()
        return "\n".join([series + repr(value) for series, value in pairs]).encode()

    return poll


def streamed(result: PollResult, rng: random.Random) -> PollResult:
    """`result` as if a consumer of its own streamed every slot: each slot held by a walsender
    that has sent everything, confirmed up to 3 MB behind the head and restart_lsn up to 20 MB
    behind that, drawn anew each poll. Every slot then has a trend of its own to fit, where the
    benchmark's idle slots share one (they hold the server's own WAL shape); the rows are the
    real poll's otherwise."""
    server = result.server
    if server is None:
        return result
    head = server.current_lsn
    keep = server.max_slot_wal_keep_size
    rows = []
    for k, row in enumerate(result.slots):
        confirmed = head - rng.randrange(3_000_000)
        restart = confirmed - rng.randrange(20_000_000)
        rows.append(
            row._replace(
                active=True,
                active_pid=100_000 + k,
                confirmed_flush_lsn=confirmed,
                restart_lsn=restart,
                sent_lsn=head,
                safe_wal_size=keep - (head - restart) if keep >= 0 else None,
            )
        )
    return replace(result, slots=tuple(rows))


def streaming_poll(target: db.TargetConnection, polls: int) -> Callable[[], None]:
    """The full poll of `target` with its rows `streamed`, judged by a memory of its own on a
    clock that steps 15 s a poll, after a full window of untimed polls (as `measure_at`'s)."""
    recorder = Recorder([TargetView("bench", "powersync", SLOT_PATTERN, Thresholds())])
    render = render_cost(recorder)
    rng = random.Random(11)  # noqa: S311 - positions to judge, not secrets
    clock = [time.time() - DEFAULT_INTERVAL * (STEADY_POLLS + polls)]

    def poll() -> None:
        result = streamed(target.poll(), rng)
        clock[0] += DEFAULT_INTERVAL
        recorder.record_poll(replace(result, started_at=clock[0]))
        render()

    for _ in range(STEADY_POLLS):
        poll()
    return poll


def render_cost(recorder: Recorder) -> Callable[[], object]:
    """What the first scrape after a new snapshot costs: the answer slotwatch serves for it,
    compressed, as Prometheus and VictoriaMetrics ask for it (`Accept-Encoding: gzip`)."""
    try:
        from slotwatch.serve.exposition import Exposition  # noqa: PLC0415 - where it exists
    except ImportError:  # a checkout that renders on every scrape through the client library
        registry = build_registry(recorder.store)
        return lambda: generate_latest(registry)
    exposition = Exposition(recorder.store)
    return lambda: exposition.response(None, "gzip").chunks  # what the daemon sends, unjoined


# -- the cluster --------------------------------------------------------------------------------


@contextmanager
def bench_cluster(install_name: str, max_slots: int) -> Iterator[Cluster]:
    settings = {
        "max_replication_slots": max_slots + 20,
        "max_wal_senders": 20,
        "max_connections": 700,
        "shared_preload_libraries": "pg_stat_statements",
        "pg_stat_statements.track": "top",
        "log_connections": "on",
        # Supabase sets a limit (docs/supabase.md): with one, every slot is forecast every poll.
        "max_slot_wal_keep_size": "4GB",
    }
    with Cluster(get_install(install_name), settings=settings) as cluster:
        cluster.execute("CREATE EXTENSION pg_stat_statements")
        for role in ROLES:
            create = sql.SQL("CREATE ROLE {} LOGIN IN ROLE pg_monitor")
            cluster.execute(create.format(sql.Identifier(role)))
        yield cluster


def grow_slots(cluster: Cluster, have: int, want: int) -> None:
    with cluster.connect() as conn:
        for k in range(have, want):
            conn.execute(
                "SELECT pg_create_logical_replication_slot(%s, 'pgoutput')",
                (f"powersync_selfhost{k}_{k % 65536:04x}",),
            )


def slot_name(k: int) -> str:
    return f"powersync_selfhost{k}_{k % 65536:04x}"


# -- one N --------------------------------------------------------------------------------------


def measure_at(cluster: Cluster, count: int, size: ScaleSize, flip: bool) -> list[Row]:  # noqa: PLR0915 - one N, measured in order
    dsn = {role: cluster.dsn(user=role, sslmode="disable") for role in ROLES}
    sw = start_slotwatch({"SLOTWATCH_DSN": dsn["bench_daemon"]})
    pe = start_exporter(dsn["bench_exporter"])
    rows: list[Row] = []
    try:
        with httpx.Client(timeout=120) as client:
            matched = f'slotwatch_matched_slots{{target="default"}} {float(count)}'
            sw.wait_ready(client, lambda text: matched in text)
            # Warm means that a poll has replaced another: after its first poll the daemon holds
            # one poll's rows and judgements, where a running one holds the last poll's while it
            # judges the next (at 1,000 slots its RSS read 1.7 MiB low after one poll).
            once = poll_stamps(client.get(sw.url).text).get("default", 0.0)
            sw.wait_ready(client, lambda text: poll_stamps(text).get("default", 0.0) > once)
            pe.wait_ready(client, lambda text: "pg_up 1" in text)
            sides = [sw, pe] if not flip else [pe, sw]
            for _ in range(5):  # warm-up
                for d in sides:
                    timed_get(client, d.url)
            rss_warm = {d.name: d.rss_mib() for d in sides}
            # sequential scrapes, A B / B A
            seq: dict[str, list[float]] = {sw.name: [], pe.name: []}
            bodies: dict[str, bytes] = {}
            for i in range(size.sequential):
                for d in sides if i % 2 == 0 else sides[::-1]:
                    elapsed, bodies[d.name] = timed_get(client, d.url)
                    seq[d.name].append(elapsed)
            # bursts: 20 concurrent scrapers each
            bursts: dict[str, tuple[list[float], float]] = {}
            for d in sides:
                bursts[d.name] = burst(d.url, size.burst_clients, size.burst_each)
            rss_burst = {d.name: d.rss_mib() for d in sides}
            # statements and server time: exporter per scrape, slotwatch per poll (in process,
            # as its own role, so the daemon's polls do not count)
            recorder = Recorder([TargetView("bench", "powersync", SLOT_PATTERN, Thresholds())])
            target = db.TargetConnection(
                "bench",
                SecretStr(dsn["bench_poll"]),
                SLOT_PATTERN,
                "powersync/%",
                connect_timeout=5,
                statement_timeout=30,
            )
            try:
                first = target.poll()
                if not first.ok or len(first.slots) != count:
                    raise RuntimeError(
                        f"poll saw {len(first.slots)} slots, not {count}: {first.error}"
                    )
                render = render_cost(recorder)
                clock = [time.time() - DEFAULT_INTERVAL * (STEADY_POLLS + 2 * size.polls)]

                def full_poll() -> None:
                    result = target.poll()
                    clock[0] += DEFAULT_INTERVAL
                    recorder.record_poll(replace(result, started_at=clock[0]))
                    render()

                for _ in range(STEADY_POLLS):  # fill the forecast window, untimed, uncounted
                    full_poll()
                conn = target._conn  # the floor runs on the poll's own connection
                assert conn is not None

                def bare_query() -> None:
                    conn.execute(BARE).fetchall()

                # Statements and server time: a poll, then a scrape of the exporter, in turns.
                cluster.execute("SELECT pg_stat_statements_reset()")
                interleaved(full_poll, lambda: timed_get(client, pe.url), 1, size.polls)
                stats = server_time(cluster)
                # The full poll, and then its statement alone, against the floor with nothing in
                # between: a scrape of the exporter between them slowed both, the floor most
                # (at 10 slots, 0.24 to 0.49 ms), which flattered the ratio.
                full, bare = interleaved(full_poll, bare_query, 1, size.polls)
                streaming = interleaved(
                    streaming_poll(target, size.polls), bare_query, 1, size.polls
                )
                own_statement = statement_only(target, conn)
                # The statement alone, then the bound: each against a floor in its own turns.
                split = (
                    (
                        interleaved(own_statement, bare_query, 1, size.polls),
                        interleaved(
                            least_exporter(own_statement, bodies[sw.name]),
                            bare_query,
                            1,
                            size.polls,
                        ),
                    )
                    if own_statement is not None
                    else None
                )
            finally:
                target.close()
            poll_ms = stats["bench_poll"][0] / size.polls
            poll_calls = stats["bench_poll"][1] / size.polls
            scrape_ms = stats["bench_exporter"][0] / size.polls
            scrape_calls = stats["bench_exporter"][1] / size.polls
            # CPU and connections at default intervals, both scraped every 15 s
            cpu: dict[str, float] = {}
            conns: dict[str, float] = {}
            if size.cpu_window > 0:
                before_cpu = {d.name: d.cpu_seconds() for d in sides}
                before_conn = connections_by_role(cluster)
                if not before_conn["bench_daemon"] or not before_conn["bench_exporter"]:
                    # Each has connected at least once: a count of 0 here means a broken reader.
                    raise RuntimeError(f"no connection found in the server log: {before_conn}")
                ends = time.monotonic() + size.cpu_window
                while True:
                    for d in sides:
                        timed_get(client, d.url)
                    left = ends - time.monotonic()
                    if left <= 0:
                        break
                    time.sleep(min(DEFAULT_INTERVAL, left))  # the scrape interval itself
                after_conn = connections_by_role(cluster)
                for d in sides:
                    cpu[d.name] = (d.cpu_seconds() - before_cpu[d.name]) * 3600 / size.cpu_window
                role = {sw.name: "bench_daemon", pe.name: "bench_exporter"}
                for d in sides:
                    r = role[d.name]
                    conns[d.name] = (after_conn[r] - before_conn[r]) * 60 / size.cpu_window
    finally:
        sw.stop()
        pe.stop()
    steady = steady_state(dsn["bench_daemon"], count, size.cpu_window) if cpu else None

    s, p = sw.name, pe.name
    ms = 1000.0
    b_s, b_p = bursts[s], bursts[p]
    rows += [
        Row(
            "/metrics median", "ms", statistics.median(seq[s]) * ms, statistics.median(seq[p]) * ms
        ),
        Row("/metrics p99", "ms", percentile(seq[s], 0.99) * ms, percentile(seq[p], 0.99) * ms),
        Row(
            f"burst p99 ({size.burst_clients}x{size.burst_each})",
            "ms",
            percentile(b_s[0], 0.99) * ms,
            percentile(b_p[0], 0.99) * ms,
        ),
        Row("burst throughput", "req/s", len(b_s[0]) / b_s[1], len(b_p[0]) / b_p[1]),
        Row("server time per poll / scrape", "ms", poll_ms, scrape_ms),
        Row("statements per poll / scrape", "n", poll_calls, scrape_calls),
        Row("series", "n", series_of(bodies[s]), series_of(bodies[p])),
        Row("body", "KiB", len(bodies[s]) / 1024, len(bodies[p]) / 1024),
        Row("RSS after warm-up", "MiB", rss_warm[s], rss_warm[p]),
        Row("RSS after burst", "MiB", rss_burst[s], rss_burst[p]),
    ]
    if cpu and steady:
        rows += [
            Row("CPU per hour, default intervals", "s", cpu[s], cpu[p]),
            Row("CPU per hour, full window", "s", steady[0], cpu[p]),
            Row("RSS with a full window", "MiB", steady[1], rss_warm[p]),
            Row("connections per minute", "n", conns[s], conns[p]),
        ]
    rows.append(against_floor("full poll vs bare slot query", full, bare))
    rows.append(against_floor("full poll, every slot streamed, vs bare slot query", *streaming))
    if split is not None:
        # Where the full poll's time goes: the statement slotwatch needs, against a floor timed
        # in its own turns, and what the client does with its rows (parse, judge, render); and
        # the least a Python exporter of the same series could do, against its own floor.
        (statement, floor), least = split
        rows += [
            against_floor("its statement alone vs bare slot query", statement, floor),
            against_floor("its statement + each series' value written, no judging", *least),
            Row(
                "full poll less its statement (parse, judge, render)",
                "ms",
                (full - statement) * 1000,
                None,
                {"per_slot_us": (full - statement) * 1e6 / count},
            ),
        ]
    return rows


def steady_state(dsn: str, count: int, seconds: float) -> tuple[float, float]:
    """CPU seconds per hour at default intervals, and RSS, of a daemon holding a full window.

    A daemon started for the rows above has judged a poll or two: its slots hold one or two
    samples and are not yet forecast. This one runs on a clock 15x faster than the defaults
    (1 s polls, a 40 s window: the same 41 samples a slot) and is scraped once a poll, so after
    the window has filled each of its seconds does what a default daemon does in 15 s.
    """
    fast = DEFAULT_INTERVAL / COMPRESSION
    sw = start_slotwatch(
        {
            "SLOTWATCH_DSN": dsn,
            "SLOTWATCH_POLL_INTERVAL": f"{fast:g}s",
            "SLOTWATCH_FORECAST_WINDOW": f"{DEFAULT_WINDOW / COMPRESSION:g}s",
        }
    )
    try:
        with httpx.Client(timeout=120) as client:
            matched = f'slotwatch_matched_slots{{target="default"}} {float(count)}'
            sw.wait_ready(client, lambda text: matched in text)
            filled = time.monotonic() + DEFAULT_WINDOW / COMPRESSION + 5 * fast
            while time.monotonic() < filled:
                timed_get(client, sw.url)
                time.sleep(fast)
            before, began = sw.cpu_seconds(), time.monotonic()
            while time.monotonic() - began < seconds:
                timed_get(client, sw.url)
                time.sleep(fast)
            used = sw.cpu_seconds() - before
            elapsed = time.monotonic() - began
            return used / elapsed * 3600 / COMPRESSION, sw.rss_mib()
    finally:
        sw.stop()


# -- start-up -----------------------------------------------------------------------------------


def startup(runs: int) -> list[Row]:
    def wall(argv: list[str]) -> float:
        began = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True, timeout=60, env=clean_env({}))
        return time.perf_counter() - began

    cases = {
        "pass": [sys.executable, "-c", "pass"],
        "--help": [SLOTWATCH, "--help"],
        "version": [SLOTWATCH, "version"],
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    for i in range(runs):
        for name, argv in cases.items() if i % 2 == 0 else reversed(cases.items()):
            times[name].append(wall(argv))
    floor = statistics.median(times["pass"]) * 1000
    return [
        Row(
            f"slotwatch {name} vs python -c pass",
            "ms",
            statistics.median(times[name]) * 1000,
            None,
            {
                "python_pass_ms": floor,
                "ratio_to_pass": statistics.median(times[name]) * 1000 / floor,
            },
        )
        for name in ("--help", "version")
    ]


# -- the fleet ----------------------------------------------------------------------------------


def fleet(cluster: Cluster, size: ScaleSize, workdir: Path) -> list[Row]:
    """`fleet_targets` targets over a few databases, 10% black-holed, at the default interval."""
    holes = [BlackHole() for _ in range(size.fleet_targets // 10)]
    try:
        databases = create_databases(cluster, size.fleet_databases)
        targets = fleet_targets(cluster, databases, size.fleet_targets, holes, user="bench_daemon")
        config = write_targets_file(workdir / "fleet.toml", targets)
        good = [t.name for t in targets if not t.black_hole]
        interval = size.fleet_interval
        sw = start_slotwatch(
            {"SLOTWATCH_CONFIG": str(config), "SLOTWATCH_POLL_INTERVAL": f"{interval}s"}
        )
        try:
            began = time.monotonic()
            with httpx.Client(timeout=60) as client:

                def up_everywhere(text: str) -> bool:
                    return " 1.0\n" in text and all(
                        f'slotwatch_up{{target="{name}"}} 1.0' in text for name in good
                    )

                sw.wait_ready(client, up_everywhere)
                first_round = time.monotonic() - began
                worst = 0.0
                ends = time.monotonic() + interval * 2
                last_rss = sw.rss_mib()
                cpu0 = sw.cpu_seconds()
                t0 = time.monotonic()
                while time.monotonic() < ends:
                    stamps = poll_stamps(client.get(sw.url).text)
                    now = time.time()
                    for name, stamp in stamps.items():
                        if not name.startswith("hole"):
                            worst = max(worst, now - stamp)
                    time.sleep(1.0)  # the pace of observation
                cpu_h = (sw.cpu_seconds() - cpu0) * 3600 / (time.monotonic() - t0)
                last_rss = max(last_rss, sw.rss_mib())
        finally:
            sw.stop()
    finally:
        for hole in holes:
            hole.close()
    n, b = size.fleet_targets, len(holes)
    return [
        Row(
            f"fleet {n} targets ({b} black holes): first round",
            "s",
            first_round,
            None,
            {"within_one_interval": first_round <= interval + FLEET_SLACK, "interval": interval},
        ),
        Row(
            f"fleet {n}: oldest last success over 2 intervals",
            "s",
            worst,
            None,
            {"within_one_interval": worst <= interval + FLEET_SLACK, "interval": interval},
        ),
        Row(f"fleet {n}: RSS", "MiB", last_rss, None),
        Row(f"fleet {n}: CPU per hour", "s", cpu_h, None),
    ]


# -- the whole section --------------------------------------------------------------------------


def run_scale(size: ScaleSize, install_name: str, workdir: Path) -> dict[str, Any]:
    exporter_version = ensure_exporter()
    load_before = os.getloadavg()
    per_n: dict[int, list[Row]] = {}
    with bench_cluster(install_name, max(size.counts)) as cluster:
        fleet_rows = fleet(cluster, size, workdir)
        have = 0
        consumers: list[Consumer] = []
        try:
            for index, count in enumerate(size.counts):
                grow_slots(cluster, have, count)
                have = count
                while len(consumers) < min(CONSUMERS, count):
                    consumers.append(Consumer(cluster, slot_name(len(consumers))).start())
                cluster.write(rows=100)
                per_n[count] = measure_at(cluster, count, size, flip=index % 2 == 1)
        finally:
            for consumer in consumers:
                with suppress(Exception):
                    consumer.destroy()
        server_version = cluster.scalar("SHOW server_version")
    return {
        "exporter": exporter_version,
        "server_version": server_version,
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "per_n": per_n,
        "startup": startup(size.startup_runs),
        "fleet": fleet_rows,
    }


# -- the report ---------------------------------------------------------------------------------


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0:
        return "0"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def machine() -> str:
    model = "unknown CPU"
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def git_state() -> str:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], capture_output=True, text=True, check=False)
        return done.stdout.strip()

    dirty = (
        " (with uncommitted changes)"
        if git("status", "--porcelain", "--untracked-files=no")
        else ""
    )
    branch = git("rev-parse", "--abbrev-ref", "HEAD")
    return f"{git('rev-parse', '--short', 'HEAD')} on {branch}{dirty}"


def markdown(results: dict[str, Any], quick: bool, began: float, seconds: float) -> str:
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(began))
    load = results["load_before"], results["load_after"]
    out = [
        "# slotwatch beside postgres_exporter: results",
        "",
        "Written by `python -m bench.run`"
        + (" --quick" if quick else "")
        + "; never edited by hand.",
        "",
        f"- date: {when}, {seconds:.0f} s in all",
        f"- machine: {machine()}",
        f"- load average (1, 5, 15 min): before {', '.join(f'{x:.2f}' for x in load[0])};"
        f" after {', '.join(f'{x:.2f}' for x in load[1])}",
        f"- PostgreSQL {results['server_version']}; {results['exporter']}",
        f"- slotwatch at {git_state()}",
        f"- Python {platform.python_version()}",
        "",
        "Ratio = slotwatch / postgres_exporter: below 1, slotwatch is cheaper.",
        "",
    ]
    counts = sorted(results["per_n"])
    for count in counts:
        out += [
            f"## {count:,} slot{'s' if count > 1 else ''}",
            "",
            "| measure | unit | slotwatch | postgres_exporter | ratio |",
            "|---|---|---:|---:|---:|",
        ]
        for row in results["per_n"][count]:
            extra = ""
            if "ratio_to_floor" in row.detail:
                floor, times = row.detail["floor_ms"], row.detail["ratio_to_floor"]
                extra = f" (floor {_num(floor)} ms: {times:.2f}x)"
            if "per_slot_us" in row.detail:
                extra = f" ({_num(row.detail['per_slot_us'])} us a slot)"
            ratio = "-" if row.ratio is None else f"{row.ratio:.2f}"
            out.append(
                f"| {row.name}{extra} | {row.unit} | {_num(row.slotwatch)}"
                f" | {_num(row.exporter)} | {ratio} |"
            )
        out.append("")
    out += [
        "## Start-up",
        "",
        "| command | ms | python -c pass, ms | ratio |",
        "|---|---:|---:|---:|",
    ]
    for row in results["startup"]:
        out.append(
            f"| {row.name.split(' vs ')[0]} | {_num(row.slotwatch)}"
            f" | {_num(row.detail['python_pass_ms'])}"
            f" | {row.detail['ratio_to_pass']:.1f} |"
        )
    interval = next(
        (row.detail["interval"] for row in results["fleet"] if "interval" in row.detail),
        DEFAULT_INTERVAL,
    )
    default = ", the default" if interval == DEFAULT_INTERVAL else ""
    out += [
        "",
        f"## Fleet in one process ({interval:g} s interval{default})",
        "",
        "| measure | unit | value | within one interval |",
        "|---|---|---:|---|",
    ]
    for row in results["fleet"]:
        within = row.detail.get("within_one_interval")
        flag = "-" if within is None else ("yes" if within else "NO")
        out.append(f"| {row.name} | {row.unit} | {_num(row.slotwatch)} | {flag} |")
    return "\n".join(out) + "\n"


def as_json(results: dict[str, Any]) -> dict[str, Any]:
    def rows(items: list[Row]) -> list[dict[str, Any]]:
        return [
            {
                "name": r.name,
                "unit": r.unit,
                "slotwatch": r.slotwatch,
                "exporter": r.exporter,
                "ratio": r.ratio,
                "detail": r.detail,
            }
            for r in items
        ]

    return {
        **{k: v for k, v in results.items() if k not in ("per_n", "startup", "fleet")},
        "per_n": {str(n): rows(r) for n, r in results["per_n"].items()},
        "startup": rows(results["startup"]),
        "fleet": rows(results["fleet"]),
    }
