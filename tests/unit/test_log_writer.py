"""The daemon's log writer (`slotwatch.logs.BackgroundHandler`) on real descriptors: a line is
in a file when the call that logged it returns; a full pipe holds lines back, in order, drops
what is past the backlog and says how many once it is read. (The daemon with a full stderr is
tests/integration/test_stderr.py.)"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from sandbox.pipes import Drain, one_page_pipe
from slotwatch.logs import BackgroundHandler, dropped_lines

PLAIN = logging.Formatter("%(message)s")


def record(text: str) -> logging.LogRecord:
    return logging.makeLogRecord({"name": "t", "levelno": logging.INFO, "msg": text})


def test_a_line_is_in_the_file_when_the_call_that_logged_it_returns(tmp_path: Path) -> None:
    path = tmp_path / "log"
    with path.open("wb") as out:
        handler = BackgroundHandler(out.fileno(), PLAIN)
        try:
            for k in range(200):
                handler.handle(record(f"line {k}"))
                # Read at once, with no flush and no wait: a file always has room.
                assert path.read_text().splitlines()[-1] == f"line {k}"
        finally:
            handler.close()


def test_a_full_pipe_holds_lines_in_order_and_counts_what_it_dropped() -> None:
    read_end, write_end = one_page_pipe()
    handler = BackgroundHandler(write_end, PLAIN, backlog=50)
    counted_before = dropped_lines()
    try:
        began = time.monotonic()
        for k in range(500):  # some 9 KiB: twice what the pipe holds
            handler.handle(record(f"line {k:03d}"))
        logged_in = time.monotonic() - began
        # Counted for /metrics as they are dropped, while the pipe is still full.
        counted_while_full = dropped_lines() - counted_before
        reader = Drain(read_end)
        handler.flush(5.0)  # the backlog written, and the count of what did not fit
        handler.handle(record("after"))  # with room again: written at once, after them all
        handler.flush(5.0)
        handler.close()
        os.close(write_end)
        write_end = -1
        reader.join(5)
    finally:
        if write_end >= 0:
            os.close(write_end)
        os.close(read_end)
    assert logged_in < 1.0, "logging waited on the full pipe"
    lines = reader.data().decode().splitlines()
    # One warning for each run of drops: a writer that got a batch through between two runs
    # says each run's count where its lines went missing, before any line logged after them.
    notices = [k for k, line in enumerate(lines) if "log lines dropped" in line]
    assert notices, lines
    dropped = sum(int(lines[k].split()[0]) for k in notices)
    numbered = [line for line in lines if line.startswith("line ")]
    assert numbered == sorted(numbered), "lines out of order"
    assert len(numbered) + dropped == 500
    assert dropped > 0
    assert counted_while_full == dropped
    assert dropped_lines() - counted_before == dropped
    assert lines[-1] == "after"
    assert max(notices) < lines.index("after")
