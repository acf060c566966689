"""A stderr that nobody reads costs the daemon log lines, never a poll, a scrape or its stop
(docs/reliability.md, "Its own output").

The daemon's stderr is a pipe this test never reads, shrunk to one page so that it fills in a
moment: debug logging of 20 targets polled every 100 ms writes hundreds of lines a second. While
it is full, the polls go on (their error counters rise), /metrics answers, and SIGTERM ends the
daemon within its drain time; once the pipe is read again, a warning says how many lines were
dropped. With the lines written by the threads that log, the first poll to log blocked in the
write, and with it every thread that logged after it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from slotwatch_proc import SLOTWATCH, Metrics, clean_env

from sandbox.fleet import FleetTarget, write_targets_file
from sandbox.pipes import Drain, one_page_pipe, pending
from sandbox.ports import free_port
from sandbox.waiting import wait_until
from slotwatch.logs import DRAIN_SECONDS

TARGETS = 20


def dropped_counter(url: str) -> float:
    """slotwatch_log_lines_dropped_total as /metrics says it (its process lines are at most a
    second old)."""
    [(_, value)] = Metrics(httpx.get(url, timeout=5).text).find("slotwatch_log_lines_dropped_total")
    return value


def refused_errors(url: str) -> float:
    text = httpx.get(url, timeout=5).text
    found = Metrics(text).find("slotwatch_poll_errors_total", reason="connect")
    return sum(value for _, value in found)


@contextmanager
def unread_daemon(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, str]]:
    """`slotwatch run` whose stderr is a one-page pipe: yields the process, the pipe's read end
    (never read unless the test does) and the daemon's /metrics URL."""
    closed = free_port()  # nothing listens there: every poll fails at once, "connect"
    dsn = f"host=127.0.0.1 port={closed} dbname=app user=slotwatch connect_timeout=1"
    targets = [FleetTarget(f"t{k:02d}", dsn, False) for k in range(TARGETS)]
    config = write_targets_file(
        tmp_path / "slotwatch.toml", targets, poll_interval="100ms", log_level="debug"
    )
    port = free_port()
    env = clean_env(
        {
            "SLOTWATCH_CONFIG": str(config),
            "SLOTWATCH_LISTEN": f"127.0.0.1:{port}",
            "SLOTWATCH_LOG_FORMAT": "json",
        }
    )
    read_end, write_end = one_page_pipe()
    proc = subprocess.Popen(
        [SLOTWATCH, "run"], env=env, stdin=subprocess.DEVNULL, stdout=write_end, stderr=write_end
    )
    os.close(write_end)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        wait_until(lambda: _answers(url), 20, message="the daemon serving /metrics")
        wait_until(lambda: full(read_end), 20, message=f"the pipe full ({pending(read_end)} B)")
        yield proc, read_end, url
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(read_end)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def full(fd: int) -> int | None:
    """The bytes pending once no more come in half a second while the daemon logs hundreds of
    lines a second: its next write does not fit. (A one-page pipe can be full at a few hundred
    bytes: a write that does not fit the page's room waits for a free page.)"""
    before = pending(fd)
    time.sleep(0.5)
    return before if before > 0 and pending(fd) == before else None


def test_a_full_stderr_stops_no_poll_and_no_stop(tmp_path: Path) -> None:
    with unread_daemon(tmp_path) as (proc, _, url):
        before = refused_errors(url)
        time.sleep(1.0)  # ten poll intervals of twenty targets, with the pipe full throughout
        after = refused_errors(url)
        print(f"failed polls counted in 1 s with stderr full: {after - before:g}")
        assert after - before >= TARGETS * 3, "the polls stopped while stderr was full"
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=DRAIN_SECONDS + 10)
        elapsed = time.monotonic() - began
    print(f"SIGTERM with stderr full: exit {code} after {elapsed:.2f}s")
    assert code == 0
    assert elapsed < DRAIN_SECONDS + 5


def test_lines_dropped_while_stderr_was_full_are_counted_when_it_is_read(tmp_path: Path) -> None:
    with unread_daemon(tmp_path) as (proc, read_end, url):
        time.sleep(2.0)  # past the backlog: hundreds of lines a second with nowhere to go
        # While stderr takes nothing, /metrics is where the loss shows, and it keeps counting.
        first = dropped_counter(url)
        rising = wait_until(
            lambda: (n := dropped_counter(url)) > first and n, 10, message="the counter rising"
        )
        print(f"slotwatch_log_lines_dropped_total while stderr was full: {first:g}, {rising:g}")
        assert first > 0
        reader = Drain(read_end)

        def dropped() -> list[dict[str, object]]:
            lines = reader.data().decode().splitlines()[:-1]  # the last may be partial
            records = [json.loads(line) for line in lines]
            return [r for r in records if "log lines dropped" in str(r["event"])]

        [notice, *_] = wait_until(dropped, 20, message="the dropped-lines warning")
        assert _answers(url)

        # With the pipe read, nothing more is dropped: the counter comes to rest at the sum of
        # the warnings (one per run of drops).
        def settled() -> tuple[float, int] | None:
            counted, said = (
                dropped_counter(url),
                sum(int(str(r["event"]).split()[0]) for r in dropped()),
            )
            return (counted, said) if counted == said else None

        counted, said = wait_until(settled, 20, message="the counter equal to the warnings' sum")
        print(f"once read: the counter says {counted:g}, the warnings {said}")
        assert counted >= rising
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=DRAIN_SECONDS + 10) == 0
        reader.join(timeout=5)
    print(f"after the pipe was read again: {notice['event']}")
    assert notice["level"] == "warning"
    assert notice["logger"] == "slotwatch.logs"
    count = int(str(notice["event"]).split()[0])
    assert count > 0
    # Every line the daemon wrote is whole JSON, the last one included.
    text = reader.data().decode()
    assert text.endswith("\n")
    events = [json.loads(line)["event"] for line in text.splitlines()]
    assert events[-1] == "slotwatch stopped"
