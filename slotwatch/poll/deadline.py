"""A round trip's answer deadline: one watchdog thread cuts the socket of one still unanswered.

`db.TargetConnection` gives each poll `statement_timeout` plus a grace (`db.answer_deadline`),
and `drop` (slotwatch/drop/execute.py) each of its round trips the same; the server enforces the
first itself, but only a process that is still running can, so the client keeps the deadline
too. Nothing here knows the statements: it holds a connection and a time.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import socket
import threading
import time
from types import TracebackType
from typing import Any

import psycopg

from slotwatch.logs import get_logger

log = get_logger(__name__)


class AnswerDeadline:
    """Cuts the connection's socket when a poll has no answer within `seconds`.

    statement_timeout is enforced by the server process: a frozen backend, or a proxy that
    accepted the connection and went silent, never answers, and TCP keepalives are answered by
    a kernel whose process is stuck. Shutting the socket down makes the blocked read fail at
    once, so the poll ends as a failed poll instead of hanging the job (and the shutdown).
    Every deadline is kept by one `Watchdog` thread: a timer thread of its own for each poll
    cost 145 us of CPU to start and stop, more than the rest of a small poll's client work.
    """

    def __init__(self, conn: psycopg.Connection[Any], seconds: float) -> None:
        self.seconds = seconds
        self.fired = False
        self._conn: psycopg.Connection[Any] | None = conn
        self._lock = threading.Lock()
        self._done = False

    @property
    def done(self) -> bool:
        return self._done

    def __enter__(self) -> AnswerDeadline:
        _WATCHDOG.watch(time.monotonic() + self.seconds, self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with self._lock:
            self._done = True
            self._conn = None  # not kept alive by the watchdog until the deadline comes round

    def cut(self) -> None:
        """The deadline has come: unless the poll is done, shut its socket down."""
        with self._lock:
            if self._done or self._conn is None:
                return
            self.fired = True
            # A duplicate of the descriptor: shutdown() acts on the socket itself, and closing
            # the duplicate leaves psycopg's own descriptor for it to close.
            with (
                contextlib.suppress(OSError, psycopg.Error),
                socket.socket(fileno=os.dup(self._conn.fileno())) as sock,
            ):
                sock.shutdown(socket.SHUT_RDWR)


class Watchdog:
    """One daemon thread, started with the first deadline, that cuts each poll still running at
    its deadline. Deadlines whose poll is done are dropped when they come round: there are at
    most as many as polls start within `statement_timeout` plus `ANSWER_GRACE`."""

    def __init__(self) -> None:
        self._wake = threading.Condition()
        self._due: list[tuple[float, int, AnswerDeadline]] = []  # a heap, by monotonic time
        self._order = itertools.count()  # ties are taken in the order they came
        self._thread: threading.Thread | None = None

    def watch(self, at: float, deadline: AnswerDeadline) -> None:
        with self._wake:
            heapq.heappush(self._due, (at, next(self._order), deadline))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="slotwatch-poll-deadlines", daemon=True
                )
                self._thread.start()
            self._wake.notify()

    def _next(self) -> AnswerDeadline:
        """Wait for the next deadline that comes round with its poll still running."""
        with self._wake:
            while True:
                while self._due and self._due[0][2].done:
                    heapq.heappop(self._due)
                if not self._due:
                    self._wake.wait()
                    continue
                wait = self._due[0][0] - time.monotonic()
                if wait <= 0:
                    return heapq.heappop(self._due)[2]
                self._wake.wait(wait)

    def _run(self) -> None:
        while True:
            deadline = self._next()
            try:
                deadline.cut()
            except Exception:  # the thread must live on: it keeps every other poll's deadline
                log.warning("cutting a poll at its deadline failed", exc_info=True)


_WATCHDOG = Watchdog()
