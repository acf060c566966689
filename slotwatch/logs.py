"""Logging: structlog everywhere, JSON lines off a terminal, and a last-line redaction of secrets.

Stdlib loggers (psycopg, apscheduler, httpcore) are routed through the same processors, so every
line has one shape and passes through the same redaction.

The daemon's lines never wait on stderr (`written_in_background`): a line is written at once
where stderr has room for it, else by a thread of its own. A stderr that nobody reads (a stalled
journal, a pipe into a program that stopped reading) then costs lines, counted and said once the
pipe takes them again, never a poll, a probe or a stop that waits on a full pipe.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import select
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, MutableMapping
from typing import Any, TextIO

import structlog

REDACTED = "********"

# A password in a URI (`postgresql://user:secret@host`) or in key=value form (`password=secret`,
# and libpq's `sslpassword=`, the client key's passphrase; also as a URI query parameter).
# The URI secret runs to the LAST `@` before a space or quote: an unescaped `@` inside a password
# must not leave its tail in the log.
_URI_PASSWORD = re.compile(
    r"(?P<head>\b[a-z][a-z0-9+.-]*://[^:/@\s\"']*:)(?P<secret>[^\s\"']+)@", re.I
)
_KV_PASSWORD = re.compile(
    r"(?P<head>\b(?:ssl)?password\s*=\s*)(?P<secret>'(?:[^'\\]|\\.)*'|\S+)", re.I
)


class Redactor:
    """Replaces DSN passwords and any registered secret value in every string of an event."""

    def __init__(self) -> None:
        self._secrets: list[str] = []

    def register(self, secrets: Iterable[str]) -> None:
        # Longest first, so that a DSN is replaced whole before its password inside it.
        merged = {s for s in [*self._secrets, *secrets] if s and len(s) >= 4}
        self._secrets = sorted(merged, key=len, reverse=True)

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        text = _URI_PASSWORD.sub(lambda m: m.group("head") + REDACTED + "@", text)
        return _KV_PASSWORD.sub(lambda m: m.group("head") + REDACTED, text)

    def _value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {k: self._value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self._value(v) for v in value)
        if isinstance(value, BaseException):
            return self.scrub(f"{type(value).__name__}: {value}")
        return value

    def __call__(
        self, logger: Any, method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key in list(event):
            event[key] = self._value(event[key])
        return event


REDACTOR = Redactor()


def configure(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Set up structlog and the stdlib root logger; safe to call again (tests, CLI re-entry)."""
    out = stream or sys.stderr
    console = fmt == "console" or (fmt == "auto" and out.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False)
        if console
        else structlog.processors.JSONRenderer(sort_keys=False)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            REDACTOR,
            renderer,
        ],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    numeric = getattr(logging, level.upper(), logging.INFO)
    root.setLevel(numeric)
    # Chatty libraries stay at WARNING unless we debug.
    for name in ("apscheduler", "httpcore", "psycopg"):
        logging.getLogger(name).setLevel(
            logging.DEBUG if numeric <= logging.DEBUG else logging.WARNING
        )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger


# Lines a stalled stderr may hold back before new ones are dropped (some 300 KiB of JSON): the
# daemon logs a change, not every poll, so a thousand lines is a long stall.
BACKLOG_LINES = 1_000
# How long the daemon's stop waits for its last lines to reach a stderr that does not take them.
DRAIN_SECONDS = 2.0

# Lines dropped by every `BackgroundHandler` of this process since it started: exported as
# slotwatch_log_lines_dropped_total, the one place a stalled stderr shows while it is stalled.
_dropped_total = 0
_dropped_lock = threading.Lock()


def dropped_lines() -> int:
    """How many log lines this process has dropped because stderr did not take them."""
    return _dropped_total


def _count_dropped() -> None:
    global _dropped_total  # noqa: PLW0603 - one process-wide tally, read by /metrics
    with _dropped_lock:
        _dropped_total += 1


class BackgroundHandler(logging.Handler):
    """Formats each record in the thread that logs it and writes it straight to the file
    descriptor (a stderr buffer shared with a blocked thread could not be flushed at exit): at
    once where the descriptor has room for it, else on a thread of its own. While the
    descriptor takes nothing, up to `backlog` lines wait; past that they are dropped and
    counted (`dropped_lines`, at once), and a warning says how many once writing resumes. The
    thread that logs never waits on the descriptor."""

    def __init__(self, fd: int, formatter: logging.Formatter, backlog: int = BACKLOG_LINES):
        super().__init__()
        self.setFormatter(formatter)
        self._fd = fd
        self._backlog = backlog
        self._lines: deque[bytes] = deque()
        self._dropped = 0
        self._writing = False
        self._closed = False
        self._ready = threading.Condition()
        self._room = select.poll()
        self._room.register(fd, select.POLLOUT)
        threading.Thread(target=self._write_lines, name="log writer", daemon=True).start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = _encoded(self.format(record))
        except Exception:  # noqa: BLE001 - logging's own convention: report, never raise
            self.handleError(record)
            return
        with self._ready:
            if not (self._lines or self._writing or self._dropped) and self._takes(line):
                # Room for it now (a file, a pipe being read): written at once, in order, and
                # readable as soon as the call returns, as from a plain stream handler.
                self._write(line)
                return
            if len(self._lines) >= self._backlog:
                self._dropped += 1
                _count_dropped()
                return
            self._lines.append(line)
            self._ready.notify_all()

    def _takes(self, line: bytes) -> bool:
        """Whether the descriptor takes `line` without waiting: it is writable, and the line no
        longer than what a pipe writes whole (PIPE_BUF)."""
        return len(line) <= select.PIPE_BUF and bool(self._room.poll(0))

    def flush(self, timeout: float = DRAIN_SECONDS) -> None:
        """Wait until every line so far is written, or `timeout` seconds have passed."""
        deadline = time.monotonic() + timeout
        with self._ready:
            while (self._lines or self._writing) and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._ready.wait(left)

    def close(self) -> None:
        """Stop taking lines; what a stalled stderr still holds back is left (exit's own flush
        of every handler then does not wait for it a second time)."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()
        super().close()

    def _write_lines(self) -> None:
        while True:
            with self._ready:
                while not self._lines and not self._closed:
                    self._ready.wait()
                if not self._lines:
                    return
                lines = list(self._lines)
                self._lines.clear()
                dropped, self._dropped = self._dropped, 0
                self._writing = True
            if dropped:
                lines.insert(0, _encoded(self._dropped_line(dropped)))
            self._write(b"".join(lines))
            with self._ready:
                self._writing = False
                self._ready.notify_all()

    def _dropped_line(self, count: int) -> str:
        record = logging.makeLogRecord(
            {
                "name": "slotwatch.logs",
                "levelno": logging.WARNING,
                "levelname": "WARNING",
                "msg": f"{count} log lines dropped: stderr did not take them (nobody read it)",
            }
        )
        return self.format(record)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self._fd, view) :]
            except BlockingIOError:  # a descriptor someone made non-blocking: wait for room
                select.select([], [self._fd], [], 1.0)
            except OSError:  # the reader is gone (EPIPE) or the descriptor is: nothing to do
                return


def _encoded(line: str) -> bytes:
    return f"{line}\n".encode("utf-8", "replace")


@contextlib.contextmanager
def written_in_background() -> Iterator[None]:
    """While inside, the root logger's lines are written by a `BackgroundHandler` on the same
    stream `configure` set up; on the way out, the last lines get `DRAIN_SECONDS` to be written.
    A stream without a file descriptor (a test's StringIO) is written to as before."""
    root = logging.getLogger()
    before = root.handlers[:]
    stream = next((h for h in before if isinstance(h, logging.StreamHandler)), None)
    fd = -1
    if stream is not None and stream.formatter is not None:
        with contextlib.suppress(AttributeError, OSError, ValueError):
            fd = stream.stream.fileno()
    if stream is None or stream.formatter is None or fd < 0:
        yield
        return
    stream.flush()
    handler = BackgroundHandler(fd, stream.formatter)
    handler.setLevel(stream.level)
    root.handlers[:] = [handler]
    try:
        yield
    finally:
        handler.flush(DRAIN_SECONDS)
        root.handlers[:] = before
        handler.close()
