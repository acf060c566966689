"""Measures slotwatch's speed and memory, each figure beside a peer measured in the same run.

A figure alone means little on an unknown machine; a ratio against a peer doing the same job in
the same process, interleaved with it, does. Four comparisons (bench/README.md explains them):

1. poll: one version-gated statement against a real cluster vs one statement per view;
2. scrape: the custom collector's `generate_latest` vs the same series in labelled gauges;
3. memory: a Store's RSS after a week of 15 s polls vs after 1,000 (bounded history keeps it flat);
4. cpu: observe + classify per slot vs the poll's own parsing of its rows per slot.

Usage, from the checkout root: .venv/bin/python -m bench.run [--quick] [--install pg15]
    [--output bench/results.json]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import prometheus_client
from prometheus_client import generate_latest
from psycopg import sql
from pydantic import SecretStr

from bench import scale
from bench.peers import STATEMENTS_PER_POLL, LabelledGauges, NaiveExporter
from sandbox import Cluster, Consumer, create_slot, get_install, powersync_slot_name
from slotwatch import __version__
from slotwatch.judge.classify import classify, observe
from slotwatch.model import PollResult, ServerRow, SlotRow, SlotTrack, Thresholds
from slotwatch.poll import db
from slotwatch.poll.rows import parse_poll
from slotwatch.serve.collector import SlotwatchCollector, build_registry
from slotwatch.serve.store import TargetView
from slotwatch.wiring import Recorder

HERE = Path(__file__).resolve().parent
MIB = 1024 * 1024
GIB = 1024 * MIB
SLOT_PATTERN = "powersync_selfhost%"
CONSUMER_APP = "powersync/%"
POLL_INTERVAL = 15.0  # seconds of simulated time between synthetic polls, the contract's default
T0 = 1_700_000_000.0
BASE_LSN = 64 * GIB
ROLES = {"slotwatch": "bench_slotwatch", "peer": "bench_peer"}
PER_SLOT_EXTRA = 8  # slots added to a 1-slot store to measure what one more slot costs


@dataclass(frozen=True)
class Size:
    """How much work each measurement does: the full run, or --quick for the test suite."""

    polls: int
    poll_warmup: int
    scrape_slots: tuple[int, ...]
    scrape_repeats: int
    memory_polls: int
    memory_early: int
    tracemalloc_polls: int
    cpu_slots: int
    cpu_polls: int
    cpu_repeats: int


FULL = Size(
    polls=600,
    poll_warmup=30,
    scrape_slots=(1, 10, 100),
    scrape_repeats=9,
    memory_polls=40_320,  # one week of polls every 15 s
    memory_early=1_000,
    tracemalloc_polls=200,
    cpu_slots=10,
    cpu_polls=200,
    cpu_repeats=7,
)
QUICK = Size(
    polls=100,
    poll_warmup=10,
    scrape_slots=(1, 10, 100),
    scrape_repeats=3,
    memory_polls=5_760,  # one day of polls every 15 s
    memory_early=1_000,
    tracemalloc_polls=120,
    cpu_slots=10,
    cpu_polls=60,
    cpu_repeats=3,
)


@dataclass
class Figure:
    """One comparison: slotwatch's value, the peer's, their ratio, and the target for it."""

    name: str
    unit: str
    slotwatch: float
    peer: float
    peer_name: str
    target: str  # e.g. "<= 1", "<= 2", "~ 1", "info"
    limit: float | None  # the ratio the target allows; None when the figure is informational
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.slotwatch / self.peer if self.peer else float("inf")

    @property
    def met(self) -> bool | None:
        return None if self.limit is None else self.ratio <= self.limit

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["ratio"] = self.ratio
        out["met"] = self.met
        return out


# -- synthetic polls ----------------------------------------------------------------------------


def slot_names(count: int) -> list[str]:
    return [f"powersync_selfhost{k}_{k:04x}" for k in range(count)]


def synthetic_poll(target: str, i: int, names: list[str]) -> PollResult:
    """Poll number `i` of a server writing 1 MiB of WAL per 15 s, its slots in a mix of states.

    Slot k % 4: 0 follows the head (healthy), 1 trails by 300 MiB (lagging), 2 is abandoned
    and grows its retained WAL until it is lost, 3 follows with a walsender attached.
    """
    at = T0 + i * POLL_INTERVAL
    head = BASE_LSN + i * MIB
    keep = 4 * GIB
    server = ServerRow(
        version_num=150000,
        in_recovery=False,
        current_lsn=head,
        max_slot_wal_keep_size=keep,
        wal_segment_size=16 * MIB,
        wal_directory_bytes=512 * MIB,
        wal_sender_timeout=60.0,
        server_epoch=at,
    )
    rows = []
    for k, name in enumerate(names):
        kind = k % 4
        confirmed = {0: head - 4096, 1: head - 300 * MIB, 2: BASE_LSN, 3: head}[kind]
        restart: int | None = confirmed - MIB
        status = "reserved"
        safe: int | None = keep - (head - confirmed + MIB)
        if safe is not None and safe < 0:
            restart, safe, status = None, None, "lost"
        active = kind != 2
        rows.append(
            SlotRow(
                name=name,
                plugin="pgoutput",
                slot_type="logical",
                database="app",
                temporary=False,
                active=active,
                active_pid=1000 + k if active else None,
                restart_lsn=restart,
                confirmed_flush_lsn=confirmed,
                wal_status=status,
                safe_wal_size=safe,
                catalog_xmin_age=50 + k,
                sender_pid=1000 + k if active else None,
                sender_application_name="powersync/1.0" if active else None,
                sender_state="streaming" if active else None,
                sent_lsn=head if active else None,
                spill_bytes=0,
                stream_bytes=0,
                total_bytes=i * 4096,
            )
        )
    return PollResult(target, at, 0.004, server, tuple(rows))


def new_store() -> Recorder:
    view = TargetView(
        name="bench", probe_name="powersync", slot_pattern=SLOT_PATTERN, thresholds=Thresholds()
    )
    return Recorder([view])


def poll_document(result: PollResult) -> list[dict[str, object]]:
    """The rows the poll statement would have returned for `result`."""
    server = result.server
    assert server is not None
    common = {
        "version_num": server.version_num,
        "in_recovery": server.in_recovery,
        "current_lsn": server.current_lsn,
        "max_slot_wal_keep_size": server.max_slot_wal_keep_size,
        "wal_segment_size": server.wal_segment_size,
        "wal_directory_bytes": server.wal_directory_bytes,
        "wal_sender_timeout_ms": server.wal_sender_timeout * 1000,
        "server_epoch": server.server_epoch,
        "system_identifier": server.system_identifier,
    }
    return [{**common, **row._asdict(), "matched": True, "in_scope": True} for row in result.slots]


# -- timing helpers -----------------------------------------------------------------------------


def loops_for(fn: Callable[[], object], budget: float) -> int:
    """How many calls fit in `budget` seconds, from one timed call after a warm-up call."""
    fn()
    return max(1, int(budget / max(scale.per_call(fn, 1), 1e-7)))


# -- 1. poll cost -------------------------------------------------------------------------------


def bench_poll(size: Size, install_name: str) -> list[Figure]:
    install = get_install(install_name)
    settings = {
        "max_replication_slots": 40,
        "shared_preload_libraries": "pg_stat_statements",
        "pg_stat_statements.track": "top",
    }
    with Cluster(install, settings=settings) as cluster:
        cluster.execute("CREATE EXTENSION pg_stat_statements")
        # One role per side: pg_stat_statements attributes each statement to its role, whatever
        # the version does to comments in the query text (PostgreSQL 18 strips them).
        for role in ROLES.values():
            create = sql.SQL("CREATE ROLE {} LOGIN IN ROLE pg_monitor")
            cluster.execute(create.format(sql.Identifier(role)))
        matching = [powersync_slot_name(1), powersync_slot_name(2)]
        for name in matching:
            create_slot(cluster, name)
        for k in range(10):
            create_slot(cluster, f"other_logical_{k}")
            cluster.execute("SELECT pg_create_physical_replication_slot(%s)", (f"replica_{k}",))
        cluster.write(rows=100)
        with Consumer(cluster, matching[0]) as _consumer:
            return _measure_polls(size, cluster, matching)


def _measure_polls(size: Size, cluster: Cluster, matching: list[str]) -> list[Figure]:
    target = db.TargetConnection(
        "bench",
        SecretStr(cluster.dsn(user=ROLES["slotwatch"])),
        SLOT_PATTERN,
        CONSUMER_APP,
        connect_timeout=5,
        statement_timeout=5,
    )
    peer_dsn = SecretStr(cluster.dsn(user=ROLES["peer"]))
    peer_conn = db.connect(peer_dsn, connect_timeout=5, statement_timeout=5)
    peer = NaiveExporter(peer_conn, SLOT_PATTERN, CONSUMER_APP)
    try:
        first = target.poll()
        if not first.ok:
            raise RuntimeError(f"slotwatch poll failed: {first.error}")
        _check_same_facts(first, peer.poll(), matching)

        def slotwatch_poll() -> None:
            result = target.poll()
            if not result.ok:
                raise RuntimeError(f"slotwatch poll failed: {result.error}")

        for _ in range(size.poll_warmup):
            slotwatch_poll()
            peer.poll()
        cluster.execute("SELECT pg_stat_statements_reset()")
        wall: dict[str, list[float]] = {"slotwatch": [], "peer": []}
        cpu = {"slotwatch": 0.0, "peer": 0.0}
        for i in range(size.polls):
            order = (("slotwatch", slotwatch_poll), ("peer", peer.poll))
            for side, fn in order if i % 2 == 0 else order[::-1]:
                began, began_cpu = time.perf_counter(), time.process_time()
                fn()
                wall[side].append(time.perf_counter() - began)
                cpu[side] += time.process_time() - began_cpu
        server = _server_side(cluster, size.polls)
        version = cluster.scalar("SHOW server_version")
    finally:
        target.close()
        peer_conn.close()
    context = {
        "server_version": version,
        "slots_total": 2 + 20,
        "slots_matching": len(matching),
        "polls_each": size.polls,
    }
    ms = 1000.0
    return [
        Figure(
            "poll latency p50",
            "ms",
            statistics.median(wall["slotwatch"]) * ms,
            statistics.median(wall["peer"]) * ms,
            f"{STATEMENTS_PER_POLL} queries",
            "<= 1",
            1.0,
            {**context, "statements": {side: calls for side, (_, calls) in server.items()}},
        ),
        Figure(
            "poll latency p95",
            "ms",
            scale.percentile(wall["slotwatch"], 0.95) * ms,
            scale.percentile(wall["peer"], 0.95) * ms,
            f"{STATEMENTS_PER_POLL} queries",
            "<= 1",
            1.0,
        ),
        Figure(
            "poll client CPU",
            "ms",
            cpu["slotwatch"] / size.polls * ms,
            cpu["peer"] / size.polls * ms,
            f"{STATEMENTS_PER_POLL} queries",
            "<= 1",
            1.0,
        ),
        Figure(
            "poll server exec",
            "ms",
            server["slotwatch"][0],
            server["peer"][0],
            f"{STATEMENTS_PER_POLL} queries",
            "<= 1",
            1.0,
            {"source": "pg_stat_statements total_exec_time / polls, planning excluded"},
        ),
    ]


def _check_same_facts(
    mine: PollResult, theirs: tuple[ServerRow, tuple[SlotRow, ...]], matching: list[str]
) -> None:
    """The peer must read the same facts, or the comparison would be of different work."""
    server, rows = theirs
    assert mine.server is not None
    names = [row.name for row in mine.slots]
    if names != sorted(matching) or [row.name for row in rows] != names:
        raise RuntimeError(f"slot sets differ: {names} vs {[row.name for row in rows]}")
    for a, b in zip(mine.slots, rows, strict=True):
        for attr in ("plugin", "database", "active", "active_pid", "wal_status", "sender_pid"):
            if getattr(a, attr) != getattr(b, attr):
                raise RuntimeError(f"{a.name}.{attr}: {getattr(a, attr)!r} vs {getattr(b, attr)!r}")
    for attr in ("version_num", "max_slot_wal_keep_size", "wal_segment_size", "wal_sender_timeout"):
        if getattr(mine.server, attr) != getattr(server, attr):
            raise RuntimeError(f"server.{attr} differs: {getattr(mine.server, attr)!r}")


def _server_side(cluster: Cluster, polls: int) -> dict[str, tuple[float, float]]:
    """Per side: (server execution ms per poll, statements per poll), from pg_stat_statements."""
    rows = cluster.query(
        "SELECT r.rolname, sum(s.total_exec_time), sum(s.calls)"
        " FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid"
        " WHERE r.rolname = ANY(%s) GROUP BY r.rolname",
        (list(ROLES.values()),),
    )
    by_role = {role: (float(total) / polls, float(calls) / polls) for role, total, calls in rows}
    missing = [side for side, role in ROLES.items() if role not in by_role]
    if missing:
        raise RuntimeError(f"pg_stat_statements recorded nothing for {missing}")
    return {side: by_role[role] for side, role in ROLES.items()}


# -- 2. scrape rendering ------------------------------------------------------------------------


def bench_scrape(size: Size) -> list[Figure]:
    # Counters would otherwise add `_created` series slotwatch does not export.
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    return [_scrape(count, size.scrape_repeats) for count in size.scrape_slots]


def _scrape(count: int, repeats: int) -> Figure:
    store = new_store()
    names = slot_names(count)
    for i in range(60):
        store.record_poll(synthetic_poll("bench", i, names))
    registry = build_registry(store.store)
    families = list(SlotwatchCollector(store.store).collect())
    peer = LabelledGauges(families)
    peer.update(families)
    series = _same_series(generate_latest(registry), generate_latest(peer.registry))
    loops = loops_for(lambda: generate_latest(registry), 0.05)
    mine, theirs = scale.interleaved(
        lambda: generate_latest(registry), lambda: generate_latest(peer.registry), loops, repeats
    )
    update = scale.per_call(
        lambda: peer.update(list(SlotwatchCollector(store.store).collect())), loops
    )
    return Figure(
        f"scrape, {count} slot{'s' if count > 1 else ''}",
        "us",
        mine * 1e6,
        theirs * 1e6,
        "labelled gauges",
        "<= 2",
        2.0,
        {"series": series, "peer_update_per_poll_us": update * 1e6},
    )


def _same_series(mine: bytes, theirs: bytes) -> int:
    """Both registries must expose the same slotwatch lines; returns how many samples that is."""

    def lines(text: bytes) -> set[str]:
        return {
            line
            for line in text.decode().splitlines()
            if line.startswith(("slotwatch_", "# HELP slotwatch_", "# TYPE slotwatch_"))
        }

    a, b = lines(mine), lines(theirs)
    if a != b:
        raise RuntimeError(
            f"series differ: only slotwatch {sorted(a - b)[:3]}, peer {sorted(b - a)[:3]}"
        )
    return sum(1 for line in a if not line.startswith("#"))


# -- 3. memory ----------------------------------------------------------------------------------


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def memory_child(polls: int, early: int) -> dict[str, int]:
    """Run in a fresh interpreter: RSS of a 3-slot Store after `early` and after `polls` polls."""
    store = new_store()
    names = slot_names(3)
    marks: dict[str, int] = {}
    for i in range(polls):
        store.record_poll(synthetic_poll("bench", i, names))
        if i + 1 in (early, polls):
            gc.collect()
            marks[str(i + 1)] = rss_bytes()
    return marks


def traced(count: int, polls: int) -> tuple[int, int]:
    """tracemalloc (retained, peak) bytes of a Store fed `polls` polls of `count` slots."""
    names = slot_names(count)
    gc.collect()
    tracemalloc.start()
    try:
        store = new_store()
        for i in range(polls):
            store.record_poll(synthetic_poll("bench", i, names))
        gc.collect()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del store
    return current, peak


def poll_bytes(count: int) -> int:
    """tracemalloc bytes held by one synthetic PollResult of `count` slots."""
    names = slot_names(count)
    tracemalloc.start()
    try:
        result = synthetic_poll("bench", 1, names)
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del result
    return held


def bench_memory(size: Size) -> list[Figure]:
    argv = [
        sys.executable,
        "-m",
        "bench.run",
        "--memory-child",
        str(size.memory_polls),
        str(size.memory_early),
    ]
    began = time.perf_counter()
    out = subprocess.run(argv, check=True, capture_output=True, text=True, timeout=300).stdout
    seconds = time.perf_counter() - began
    marks = json.loads(out)
    early, late = marks[str(size.memory_early)], marks[str(size.memory_polls)]
    kib = 1024.0
    # Per-target memory (the WAL positions) cancels out in the difference; per-slot memory is
    # at full size once the forecast window (40 polls at 15 s) has filled.
    one_current, one_peak = traced(1, size.tracemalloc_polls)
    many_current, many_peak = traced(1 + PER_SLOT_EXTRA, size.tracemalloc_polls)
    return [
        Figure(
            f"RSS after {size.memory_polls:,} polls",
            "KiB",
            late / kib,
            early / kib,
            f"after {size.memory_early:,}",
            "~ 1",
            1.05,
            {
                "growth_kib": (late - early) / kib,
                "slots": 3,
                "child_seconds": seconds,
                "polls_per_second": size.memory_polls / seconds,
            },
        ),
        Figure(
            "tracemalloc peak per slot",
            "KiB",
            (many_peak - one_peak) / PER_SLOT_EXTRA / kib,
            (poll_bytes(1 + PER_SLOT_EXTRA) - poll_bytes(1)) / PER_SLOT_EXTRA / kib,
            "one polled row",
            "info",
            None,
            {
                "polls": size.tracemalloc_polls,
                "retained_per_slot_kib": (many_current - one_current) / PER_SLOT_EXTRA / kib,
                "retained_1_slot_kib": one_current / kib,
                f"retained_{1 + PER_SLOT_EXTRA}_slots_kib": many_current / kib,
                f"peak_{1 + PER_SLOT_EXTRA}_slots_kib": many_peak / kib,
            },
        ),
    ]


# -- 4. per-poll CPU ----------------------------------------------------------------------------


def bench_cpu(size: Size) -> list[Figure]:
    names = slot_names(size.cpu_slots)
    th = Thresholds()
    warm = 120  # past the forecast window (600 s / 15 s = 40 samples): tracks at full length
    polls = [synthetic_poll("bench", i, names) for i in range(warm + size.cpu_polls)]
    documents = [poll_document(p) for p in polls[warm:]]
    tracks: dict[str, SlotTrack] = {}

    def advance(result: PollResult) -> None:
        server = result.server
        assert server is not None
        for row in result.slots:
            track = observe(tracks.get(row.name), row, server, result.started_at, th)
            tracks[row.name] = track
            classify(row, server, track, th)

    for result in polls[:warm]:
        advance(result)
    measured = polls[warm:]

    def classify_all() -> None:
        # Replays the same polls: each replay resets the tracks to their warm state first.
        saved = dict(tracks)
        for result in measured:
            advance(result)
        tracks.clear()
        tracks.update(saved)

    def parse_all() -> None:
        for rows in documents:
            parse_poll(rows)

    def fold_all() -> None:
        store = new_store()
        for result in polls:
            store.record_poll(result)

    per_slot = len(measured) * size.cpu_slots
    mine, theirs = scale.interleaved(classify_all, parse_all, 1, size.cpu_repeats)
    fold = scale.per_call(fold_all, 1) / (len(polls) * size.cpu_slots)
    return [
        Figure(
            "observe+classify per slot",
            "us",
            mine / per_slot * 1e6,
            theirs / per_slot * 1e6,
            "rows + parse_poll",
            "info",
            None,
            {
                "slots": size.cpu_slots,
                "store_record_poll_per_slot_us": fold * 1e6,
                "polls": len(measured),
            },
        )
    ]


# -- output -------------------------------------------------------------------------------------


def table(figures: list[Figure]) -> Iterator[str]:
    head = f"{'benchmark':<28} {'unit':<4} {'slotwatch':>10} {'peer':>10}  {'peer is':<18}"
    yield head + f" {'ratio':>6}  {'target':<6} ok"
    yield "-" * (len(head) + 19)
    for f in figures:
        ok = {True: "yes", False: "NO", None: "-"}[f.met]
        yield (
            f"{f.name:<28} {f.unit:<4} {f.slotwatch:>10.{_digits(f.slotwatch)}f}"
            f" {f.peer:>10.{_digits(f.peer)}f}  {f.peer_name:<18}"
            f" {f.ratio:>6.2f}  {f.target:<6} {ok}"
        )


def _digits(value: float) -> int:
    return 3 if abs(value) < 10 else 1 if abs(value) < 1000 else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller run, about a minute")
    parser.add_argument("--install", default="pg15", help="sandbox PostgreSQL install (pg15, pg18)")
    parser.add_argument("--output", type=Path, default=HERE / "results.json")
    parser.add_argument(
        "--markdown",
        type=Path,
        help="where the postgres_exporter comparison goes (default bench/RESULTS.md, or beside"
        " --output with --quick)",
    )
    parser.add_argument("--memory-child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        print(json.dumps(memory_child(*args.memory_child)))
        return 0

    size = QUICK if args.quick else FULL
    began = time.perf_counter()
    wall_began = time.time()
    sections: dict[str, Callable[[], list[Figure]]] = {
        "poll": lambda: bench_poll(size, args.install),
        "scrape": lambda: bench_scrape(size),
        "memory": lambda: bench_memory(size),
        "cpu": lambda: bench_cpu(size),
    }
    figures: list[Figure] = []
    section_seconds: dict[str, float] = {}
    for section, run in sections.items():
        started = time.perf_counter()
        figures += run()
        section_seconds[section] = time.perf_counter() - started
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="slotwatch-bench-") as workdir:
        scaled = scale.run_scale(
            scale.QUICK_SCALE if args.quick else scale.FULL_SCALE, args.install, Path(workdir)
        )
    section_seconds["scale"] = time.perf_counter() - started
    seconds = time.perf_counter() - began
    markdown_path = args.markdown or (
        args.output.with_suffix(".md") if args.quick else HERE / "RESULTS.md"
    )
    markdown_path.write_text(scale.markdown(scaled, args.quick, wall_began, seconds))
    results = {
        "meta": {
            "slotwatch": __version__,
            "quick": args.quick,
            "install": args.install,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "load_average": os.getloadavg(),
            "started_at": wall_began,
            "seconds": seconds,
            "section_seconds": section_seconds,
            "size": asdict(size),
        },
        "figures": [f.as_json() for f in figures],
        "scale": scale.as_json(scaled),
    }
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print("\n".join(table(figures)))
    print()
    print(markdown_path.read_text())
    print(f"\n{len(figures)} figures in {seconds:.1f} s -> {args.output}, {markdown_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
