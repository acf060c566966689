"""The daemon's HTTP server under the crowds and manners real scrapers and attackers bring.

Every test talks to the server over loopback sockets only. Most start the real `slotwatch run`:
the load tests point it at a database port nobody listens on (the server must answer whatever
the database does); the consistency and negotiation tests watch real PostgreSQL 13, 15 and 18. The
keep-alive deadline tests start the HTTP server alone, in the test process, with deadlines of a
second or so instead of the daemon's 10 s and 330 s.
"""

from __future__ import annotations

import contextlib
import gzip
import itertools
import json
import os
import resource
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from slotwatch_proc import Metrics, SlotwatchProcess, free_port

from sandbox.cluster import Cluster
from sandbox.consumer import create_slot, powersync_slot_name
from sandbox.installs import PgInstall
from sandbox.waiting import wait_until
from slotwatch.serve.exposition import Exposition
from slotwatch.serve.http import REQUESTS_PER_CONNECTION, WRITE_TIMEOUT, HttpServer
from slotwatch.serve.store import Snapshot

POLL = 0.25
FRESH_CLIENT_LIMIT = 1.0  # seconds: what a fresh scraper may wait, whatever the crowd
HEAD_TIMEOUT = 10.0  # slotwatch.serve.http.HEAD_TIMEOUT
KEEP_SIZE = 64 * 1024 * 1024
CROWD = Path(__file__).resolve().parents[1] / "http_crowd.py"
STATES = {"lost", "at_risk", "snapshotting", "inactive", "wedged", "lagging", "healthy"}


def _raise_own_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard >= needed, f"this test needs {needed} file descriptors; the hard limit is {hard}"
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def _dead_database() -> dict[str, str]:
    """Settings for a daemon whose database refuses connections at once."""
    return {
        "SLOTWATCH_DSN": f"postgresql://slotwatch@127.0.0.1:{free_port()}/app?connect_timeout=2",
        "SLOTWATCH_POLL_INTERVAL": "1s",
        "SLOTWATCH_LIVENESS_URL": "",
    }


def _timed_get(url: str) -> tuple[int, float]:
    started = time.monotonic()
    response = httpx.get(url, timeout=5)
    return response.status_code, time.monotonic() - started


def _is_open(sock: socket.socket) -> bool:
    """True while the server has not closed its end (nothing to read, no EOF, no reset)."""
    sock.setblocking(False)
    try:
        return sock.recv(1) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def _hold_idle(port: int, count: int) -> list[socket.socket]:
    return [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(count)]


class _Crowd:
    """`count` scrapers hitting /metrics from another process (tests/http_crowd.py)."""

    def __init__(self, port: int, count: int, seconds: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(CROWD), str(port), str(count), str(seconds)],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.latencies: list[float] = []
        self.failures: list[str] = []

    def __enter__(self) -> _Crowd:
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "started"
        return self

    def __exit__(self, *exc: object) -> None:
        out, _ = self.proc.communicate(timeout=60)
        result = json.loads(out)
        self.latencies, self.failures = result["latencies"], result["failures"]


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _log_is_structured(daemon: SlotwatchProcess) -> list[dict[str, object]]:
    text = daemon.log()
    assert "Traceback" not in text
    records = []
    for line in text.splitlines():
        record = json.loads(line)  # every line is one JSON event: nothing raw on stderr
        records.append(record)
    return records


@pytest.mark.parametrize(
    "nofile",
    [4096, 1024],
    ids=["room-for-all", "systemd-default-fd-limit"],
)
def test_idle_connections_and_a_burst_of_scrapers_never_shut_out_a_fresh_client(
    nofile: int, tmp_path: Path
) -> None:
    _raise_own_fd_limit(1100 + 200)
    with SlotwatchProcess(_dead_database(), tmp_path / "slotwatch.log", nofile=nofile) as daemon:
        idle = _hold_idle(daemon.port, 1100)
        try:
            with _Crowd(daemon.port, 50, seconds=4) as scrapers:
                fresh = []
                for path in ["/metrics", "/healthz"] * 5:
                    fresh.append(_timed_get(daemon.url + path))
                    time.sleep(0.3)  # spread over the crowd's run, not a wait for a condition
                still_open = sum(_is_open(sock) for sock in idle)
        finally:
            for sock in idle:
                sock.close()
        print(
            f"fd limit {nofile}: fresh client worst {max(t for _, t in fresh) * 1000:.0f} ms;"
            f" {len(scrapers.latencies)} burst scrapes, p50"
            f" {_quantile(scrapers.latencies, 0.5) * 1000:.0f} ms, p99"
            f" {_quantile(scrapers.latencies, 0.99) * 1000:.0f} ms; idle still open {still_open}"
        )
        assert [code for code, _ in fresh] == [200] * len(fresh)
        assert max(t for _, t in fresh) < FRESH_CLIENT_LIMIT, fresh
        assert scrapers.failures == []
        if nofile > 2 * 1100:
            # The idle crowd was really there the whole time, not closed to make room.
            assert still_open == 1100
        else:
            # Past half its descriptors the server sheds the connections that waited longest.
            assert 0 < still_open <= nofile // 2
        assert daemon.get("/healthz").status_code == 200
    _log_is_structured(daemon)


def test_a_kept_alive_connection_says_close_on_its_last_answer(tmp_path: Path) -> None:
    # A scraper keeps its connection for hours: after REQUESTS_PER_CONNECTION answers the server
    # ends it, and the last answer must say so, or the next scrape is sent into the close and
    # lost ("server disconnected without sending a response").
    extra = 5
    with (
        SlotwatchProcess(_dead_database(), tmp_path / "slotwatch.log") as daemon,
        httpx.Client(timeout=5) as client,
    ):
        answers = [
            client.get(daemon.url + "/metrics") for _ in range(REQUESTS_PER_CONNECTION + extra)
        ]
    assert [a.status_code for a in answers] == [200] * len(answers)
    said = [a.headers["connection"] for a in answers]
    last = REQUESTS_PER_CONNECTION - 1
    assert said[:last] == ["keep-alive"] * last
    assert said[last] == "close"
    assert said[last + 1 :] == ["keep-alive"] * extra  # a new connection, no scrape lost


def test_slowloris_holds_no_worker_and_is_cut_off_at_the_head_deadline(tmp_path: Path) -> None:
    request = b"GET /metrics HTTP/1.1\r\nHost: slotwatch\r\nUser-Agent: drip"
    with SlotwatchProcess(_dead_database(), tmp_path / "slotwatch.log") as daemon:
        drips = _hold_idle(daemon.port, 40)  # ten times the worker pool
        began = time.monotonic()
        cut: dict[int, float] = {}
        sent = 0
        fresh: list[tuple[int, float]] = []
        while len(cut) < len(drips) and time.monotonic() - began < HEAD_TIMEOUT + 10:
            for index, sock in enumerate(drips):
                if index in cut:
                    continue
                try:
                    sock.send(request[sent % len(request) : sent % len(request) + 1])
                except OSError:
                    cut[index] = time.monotonic() - began
                    continue
                if not _is_open(sock):
                    cut[index] = time.monotonic() - began
                sock.setblocking(True)
            sent += 1
            if len(fresh) < 6:
                fresh.append(_timed_get(daemon.url + "/metrics"))
            time.sleep(0.5)  # the drip's pace: one byte per connection every half second
        for sock in drips:
            sock.close()
    assert [code for code, _ in fresh] == [200] * len(fresh)
    assert max(t for _, t in fresh) < FRESH_CLIENT_LIMIT, fresh
    assert len(cut) == len(drips), "dripping connections were never closed"
    assert min(cut.values()) >= HEAD_TIMEOUT - 1
    assert max(cut.values()) <= HEAD_TIMEOUT + 3, cut


def test_resets_and_garbage_end_their_connection_with_a_debug_line_never_a_traceback(
    tmp_path: Path,
) -> None:
    settings = {**_dead_database(), "SLOTWATCH_LOG_LEVEL": "debug"}
    with SlotwatchProcess(settings, tmp_path / "slotwatch.log") as daemon:
        for payload in (
            b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",  # asked, then gone before the answer
            b"GET /metr",  # gone mid-request
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40 + b"\r\n\r\n",  # TLS
            b"GET " + b"A" * 20_000 + b" HTTP/1.1\r\n\r\n",  # a head over the limit
        ):
            for _ in range(20):
                sock = socket.create_connection(("127.0.0.1", daemon.port), timeout=5)
                sock.sendall(payload)
                # SO_LINGER 0: close with a reset, as a crashed or impatient client does.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()
        garbage = socket.create_connection(("127.0.0.1", daemon.port), timeout=5)
        garbage.sendall(b"BREW /pot HTCPCP/1.0\r\n\r\n")
        answer = garbage.recv(4096)
        garbage.close()
        assert daemon.get("/metrics").status_code == 200
        wait_until(
            lambda: daemon.events("http connection dropped") or "Traceback" in daemon.log(),
            10,
            message="the dropped connections in the log",
        )
    events = {str(r.get("event")) for r in _log_is_structured(daemon)}
    assert "http connection dropped" in events
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n"), answer[:80]


# --- keep-alive deadlines, on the server alone ---------------------------------------------------

ASK = b"GET /healthz HTTP/1.1\r\nHost: slotwatch\r\n\r\n"
OK = b"HTTP/1.1 200 OK"
DRIP = b"GET /healthz HTTP/1.1\r\nUser-Agent: drip"  # cycled, it never ends a head


class _NoTargets:
    def snapshot(self) -> Snapshot:
        return Snapshot(())


@contextmanager
def _server(
    *,
    head_timeout: float,
    idle_timeout: float,
    max_connections: int | None = None,
    write_timeout: float = WRITE_TIMEOUT,
    status: Mapping[str, object] | None = None,
) -> Iterator[HttpServer]:
    """The HTTP server alone, in this process, on a loopback port it binds itself (port 0: the
    bind is atomic, no other process waits to take it)."""
    document = dict(status) if status is not None else {"targets": []}
    server = HttpServer(
        ("127.0.0.1", 0),
        Exposition(_NoTargets()),
        lambda: (True, "ok"),
        lambda: document,
        max_connections=max_connections,
        head_timeout=head_timeout,
        idle_timeout=idle_timeout,
        write_timeout=write_timeout,
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def _ask(sock: socket.socket) -> bytes:
    """Send one request on `sock`, read its whole answer: its status line, or b"" if the server
    closed the connection instead of answering."""
    try:
        sock.sendall(ASK)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                return b""
            data += chunk
    except ConnectionError:
        return b""
    head, _, body = data.partition(b"\r\n\r\n")
    fields = dict(line.split(b":", 1) for line in head.lower().split(b"\r\n")[1:] if b":" in line)
    length = int(fields[b"content-length"])
    while len(body) < length:
        chunk = sock.recv(4096)
        assert chunk, "the server closed the connection in the middle of an answer"
        body += chunk
    return head.split(b"\r\n", 1)[0]


def _closed_after(sock: socket.socket, since: float, limit: float) -> float:
    """Seconds from `since` until the server closes `sock` (inf if it is still open after
    `limit` seconds). Nothing is sent meanwhile."""
    sock.settimeout(limit)
    try:
        data = sock.recv(1)
    except TimeoutError:
        return float("inf")
    except ConnectionError:
        pass
    else:
        assert data == b"", f"the server sent {data!r} unasked"
    return time.monotonic() - since


def test_a_kept_alive_connection_idle_past_the_head_deadline_is_still_answered() -> None:
    # A scraper on a 15 s interval leaves its connection idle 15 s, longer than the 10 s head
    # deadline: the next scrape must be answered on that same connection, not find it closed.
    with _server(head_timeout=0.5, idle_timeout=3) as server, _connect(server.port) as sock:
        assert _ask(sock) == OK
        time.sleep(1.5)  # idle: three head deadlines, half the idle one
        assert _is_open(sock), "the server closed the idle connection before its idle deadline"
        sock.settimeout(5)
        assert _ask(sock) == OK  # the same socket: no reconnect


def test_a_kept_alive_connection_is_closed_at_its_idle_deadline() -> None:
    idle = 2.0
    with _server(head_timeout=0.5, idle_timeout=idle) as server, _connect(server.port) as sock:
        assert _ask(sock) == OK
        closed = _closed_after(sock, time.monotonic(), limit=idle + 2)
    assert idle - 0.25 <= closed <= idle + 1, closed


def test_a_slow_head_on_a_kept_alive_connection_is_cut_at_the_head_deadline() -> None:
    # The idle deadline only covers the wait for a request's first byte: from there on, the rest
    # of the head has the head deadline, as on a fresh connection (the slowloris guard).
    head = 1.0
    with _server(head_timeout=head, idle_timeout=5) as server, _connect(server.port) as sock:
        assert _ask(sock) == OK
        time.sleep(1.5)  # idle past one head deadline first: the deadline starts at the drip
        began = time.monotonic()
        cut = None
        for byte in itertools.islice(itertools.cycle(DRIP), 60):  # 6 s at 10 bytes a second
            try:
                sock.send(bytes([byte]))
            except OSError:
                cut = time.monotonic() - began
                break
            if not _is_open(sock):
                cut = time.monotonic() - began
                break
            sock.settimeout(5)
            time.sleep(0.1)
    assert cut is not None, "the dripping head was never cut"
    assert head - 0.2 <= cut <= head + 0.5, cut


def test_the_first_request_of_a_connection_has_only_the_head_deadline() -> None:
    # A connection that never sends anything is a slowloris too: it gets the head deadline from
    # the accept, never the idle one.
    head = 0.5
    with _server(head_timeout=head, idle_timeout=5) as server, _connect(server.port) as sock:
        closed = _closed_after(sock, time.monotonic(), limit=4)
    assert head - 0.2 <= closed <= head + 1, closed


def test_idle_kept_alive_connections_are_shed_oldest_first_under_pressure() -> None:
    # Idle between requests, a connection still counts as waiting: past `max_connections` the
    # one idle longest is closed to make room for a fresh client.
    with _server(head_timeout=0.5, idle_timeout=5, max_connections=3) as server:
        idle = [_connect(server.port) for _ in range(3)]
        try:
            for sock in idle:
                assert _ask(sock) == OK
            with _connect(server.port) as fresh:
                assert _ask(fresh) == OK
            still_open = [_is_open(sock) for sock in idle]
        finally:
            for sock in idle:
                sock.close()
    assert still_open == [False, True, True]


# --- with a real database ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def budget_cluster(pg_install: PgInstall) -> Iterator[Cluster]:
    with Cluster(pg_install, max_slot_wal_keep_size=f"{KEEP_SIZE // (1024 * 1024)}MB") as cluster:
        yield cluster


def _settings(cluster: Cluster) -> dict[str, str]:
    return {
        "SLOTWATCH_DSN": cluster.dsn(),
        "SLOTWATCH_POLL_INTERVAL": f"{POLL}s",
        "SLOTWATCH_LIVENESS_URL": "",
    }


def _consistent(m: Metrics) -> str | None:
    """Why one scrape contradicts itself, or None: every family must describe the same poll."""
    matched = m.value("slotwatch_matched_slots", target="default")
    info = {lbl["slot"] for lbl, _ in m.find("slotwatch_slot_info", target="default")}
    if m.value("slotwatch_up", target="default") != 1 or matched != len(info):
        return f"matched {matched} but {len(info)} slot_info series"
    for slot in info:
        states = {lbl["state"]: v for lbl, v in m.find("slotwatch_slot_state", slot=slot)}
        if set(states) != STATES or sum(states.values()) != 1:
            return f"{slot}: states {states}"
    others = {lbl["slot"] for name, lbl, _ in m.samples if name.startswith("slotwatch_slot_")}
    if others != info:
        return f"slot series for {others ^ info} without slot_info"
    return None


def test_concurrent_scrapes_while_polls_run_each_see_one_whole_poll(
    budget_cluster: Cluster, tmp_path: Path
) -> None:
    stop = threading.Event()
    churned: list[str] = []

    def churn() -> None:
        # Slots come and go between and during polls, as sync-rules deploys make them do.
        live: list[str] = []
        while not stop.is_set():
            live.append(create_slot(budget_cluster, powersync_slot_name(len(churned) + 1)))
            churned.append(live[-1])
            if len(live) > 3:  # max_replication_slots is 10
                budget_cluster.execute("SELECT pg_drop_replication_slot(%s)", (live.pop(0),))
            stop.wait(0.1)

    problems: list[str] = []
    polls_seen: set[float] = set()
    scrapes = [0]

    def scrape() -> None:
        with httpx.Client(timeout=5) as client:
            while not stop.is_set():
                m = Metrics(client.get(daemon.url + "/metrics").text)
                why = _consistent(m)
                if why:
                    problems.append(why)
                success = m.value("slotwatch_last_poll_success_timestamp_seconds", target="default")
                if success is not None:
                    polls_seen.add(success)
                status = client.get(daemon.url + "/status").json()
                for slot in status["targets"][0]["slots"]:
                    if slot["state"] not in STATES:
                        problems.append(f"/status: {slot}")
                scrapes[0] += 1

    with SlotwatchProcess(_settings(budget_cluster), tmp_path / "slotwatch.log") as daemon:
        workers = [threading.Thread(target=churn)] + [
            threading.Thread(target=scrape) for _ in range(8)
        ]
        began = time.monotonic()
        for worker in workers:
            worker.start()
        time.sleep(4)  # the run's length, not a wait for a condition
        stop.set()
        for worker in workers:
            worker.join(timeout=30)
        elapsed = time.monotonic() - began
    for name in churned:
        budget_cluster.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
            " WHERE slot_name = %s",
            (name,),
        )
    assert problems == []
    assert scrapes[0] >= 40
    # The scrapes saw the polls move on, and caused none: at most one poll per interval.
    assert 2 <= len(polls_seen) <= elapsed / POLL + 2, (len(polls_seen), scrapes[0])
    assert len(churned) >= 6


def test_negotiation_gzip_the_landing_page_and_a_budget_ratio_of_at_most_one(
    budget_cluster: Cluster, tmp_path: Path
) -> None:
    slot = create_slot(budget_cluster, powersync_slot_name(7))
    try:
        with SlotwatchProcess(_settings(budget_cluster), tmp_path / "slotwatch.log") as daemon:
            m = wait_until(
                lambda: (
                    (m := daemon.metrics()).value("slotwatch_slot_active", slot=slot) == 0 and m
                ),
                10,
                message="the slot in a scrape",
            )
            # A caught-up slot: PostgreSQL counts the rest of the current segment in
            # safe_wal_size, so it exceeds max_slot_wal_keep_size and the raw ratio exceeds 1.
            safe = m.value("slotwatch_slot_safe_wal_size_bytes", slot=slot)
            keep = m.value("slotwatch_max_slot_wal_keep_size_bytes", target="default")
            assert safe is not None
            assert keep == KEEP_SIZE
            assert safe > keep
            ratio = m.value("slotwatch_slot_wal_budget_ratio", slot=slot)
            assert ratio == 1.0

            home = daemon.get("/")
            assert home.status_code == 200
            assert home.headers["content-type"] == "text/html; charset=utf-8"
            for link in ('href="metrics"', 'href="status"', 'href="healthz"'):
                assert link in home.text

            plain = httpx.get(
                daemon.url + "/metrics", headers={"Accept-Encoding": "identity"}, timeout=5
            )
            assert plain.headers["content-type"].startswith("text/plain; version=0.0.4")
            assert "content-encoding" not in plain.headers
            # The body goes out in chunks (the cached render, then the process lines): the
            # length announced is the length sent, and HEAD announces one and sends nothing.
            assert int(plain.headers["content-length"]) == len(plain.content)
            assert plain.text.count("# TYPE process_cpu_seconds_total") == 1
            head = httpx.head(daemon.url + "/metrics", timeout=5)
            assert head.status_code == 200
            assert int(head.headers["content-length"]) > 0
            assert head.content == b""

            om = httpx.get(
                daemon.url + "/metrics",
                headers={"Accept": "application/openmetrics-text; version=1.0.0"},
                timeout=5,
            )
            assert om.headers["content-type"].startswith("application/openmetrics-text")
            assert om.text.endswith("# EOF\n")
            families = {f.name: f for f in parse_openmetrics(om.text)}
            assert families["slotwatch_poll_errors"].type == "counter"
            assert families["slotwatch_slot_state"].type == "gauge"

            with httpx.Client(timeout=5) as client:
                request = client.build_request(
                    "GET", daemon.url + "/metrics", headers={"Accept-Encoding": "gzip"}
                )
                packed = client.send(request, stream=True)
                raw = b"".join(packed.iter_raw())
            assert packed.headers["content-encoding"] == "gzip"
            assert int(packed.headers["content-length"]) == len(raw)
            assert "Accept-Encoding" in packed.headers["vary"]
            unpacked = Metrics(gzip.decompress(raw).decode())
            assert unpacked.value("slotwatch_slot_active", slot=slot) == 0
            assert len(raw) < len(plain.content) / 3
            # The stream is laid from segments compressed apart: the gzip command checks its
            # CRC and length and reads back the same text.
            tested = subprocess.run(["gzip", "-t"], input=raw, capture_output=True, check=False)
            assert tested.returncode == 0, tested.stderr
            read = subprocess.run(["gzip", "-dc"], input=raw, capture_output=True, check=True)
            assert read.stdout == gzip.decompress(raw)

            refused = httpx.post(daemon.url + "/metrics", timeout=5)
            assert refused.status_code == 405
    finally:
        budget_cluster.execute("SELECT pg_drop_replication_slot(%s)", (slot,))


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def _stalled_reader(port: int, path: str) -> socket.socket:
    """A client that asks for `path` and then never reads: a tiny receive buffer, so its window
    shuts after the first few KiB of the answer."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
    return sock


def test_a_client_that_stops_reading_is_cut_at_the_write_deadline() -> None:
    # Its answer (8 MiB here) cannot be written: at write_timeout the server cuts the connection
    # and lets go of its descriptor and of the rest of the answer, where a plain close waited
    # for the client to read it, for as long as the client kept its window shut.
    write = 1.0
    big = {"padding": "x" * (8 << 20)}
    with _server(head_timeout=5, idle_timeout=5, write_timeout=write, status=big) as server:
        before = _open_descriptors()
        with _stalled_reader(server.port, "/status") as sock:
            wait_until(lambda: _open_descriptors() == before + 2, 5, message="server side open")
            wait_until(
                lambda: _open_descriptors() == before + 1,
                write + 3,
                message="the server still holds the connection of a client that stopped reading",
            )
            sock.settimeout(5)
            received = 0
            with contextlib.suppress(ConnectionError):
                while chunk := sock.recv(1 << 16):
                    received += len(chunk)
        assert received < len(big["padding"]), "the whole answer was kept for the client"


def test_a_slow_reader_still_gets_its_whole_answer() -> None:
    # The other side of the deadline: a client that reads slowly but steadily is not cut, even
    # when the rest of the answer is still buffered at the close.
    big = {"padding": "x" * (4 << 20)}
    with (
        _server(head_timeout=5, idle_timeout=5, write_timeout=5, status=big) as server,
        _stalled_reader(server.port, "/status") as sock,
    ):
        time.sleep(0.5)  # the window shut for a while, well inside the write deadline
        sock.settimeout(10)
        data = b""
        while chunk := sock.recv(1 << 16):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:80]
    assert json.loads(body) == big
