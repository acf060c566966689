"""A session that looks like PowerSync copying its initial snapshot: busy, in the source database.

While PowerSync copies the initial snapshot its new slot stays inactive, and the only sign of
life on the server is an ordinary session with ``application_name`` ``powersync/<version>``
reading the tables in a REPEATABLE READ transaction. This stand-in opens such a transaction, reads
``todos``, then stays busy in a long ``pg_sleep`` (state ``active`` in ``pg_stat_activity``) until
:meth:`SnapshotSession.stop` cancels it.
"""

from __future__ import annotations

import threading
import time
from typing import Self

import psycopg

from sandbox.cluster import Cluster
from sandbox.consumer import POWERSYNC_APPLICATION_NAME
from sandbox.lifecycle import Managed
from sandbox.waiting import wait_until


class SnapshotSession(Managed):
    """One connection busy in a long snapshot-like read, run by a background thread."""

    def __init__(
        self,
        cluster: Cluster,
        application_name: str = POWERSYNC_APPLICATION_NAME,
        *,
        dbname: str = "app",
        seconds: float = 3600.0,
    ) -> None:
        self.cluster = cluster
        self.application_name = application_name
        self.dbname = dbname
        self.seconds = seconds
        self.pid: int | None = None  # the server backend's pid, once connected
        self.error: BaseException | None = None  # what ended the session, other than stop()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 10.0) -> Self:
        """Connect and wait until the session shows as ``active`` in ``pg_stat_activity``."""
        if self._thread is not None:
            return self
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="snapshot-session", daemon=True)
        self._thread.start()
        wait_until(self._busy, timeout, interval=0.05, message="snapshot session busy")
        return self

    def _busy(self) -> bool:
        if self.error is not None:
            raise RuntimeError(f"snapshot session failed: {self.error}")
        if self.pid is None:
            return False
        state = self.cluster.scalar(
            "SELECT state FROM pg_stat_activity WHERE pid = %s AND query LIKE %s",
            (self.pid, "%pg_sleep%"),
        )
        return bool(state == "active")

    def _run(self) -> None:
        try:
            with psycopg.connect(
                self.cluster.dsn(dbname=self.dbname, application_name=self.application_name)
            ) as conn:
                self.pid = conn.info.backend_pid
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                conn.execute("SELECT * FROM lists").fetchall()
                conn.execute("SELECT count(*) FROM todos").fetchall()
                # Stands for the long copy of a big table.
                conn.execute("SELECT pg_sleep(%s) /* initial snapshot */", (self.seconds,))
                conn.rollback()
        except psycopg.Error as exc:
            if not self._stopping.is_set():
                self.error = exc

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel the read, close the connection and wait for the thread to end."""
        thread = self._thread
        if thread is None:
            return
        self._stopping.set()
        deadline = time.monotonic() + timeout
        # Cancel until the thread ends: a cancel that lands before pg_sleep starts only ends
        # the statement it hits.
        while thread.is_alive() and time.monotonic() < deadline:
            if self.pid is not None:
                self.cluster.execute("SELECT pg_cancel_backend(%s)", (self.pid,))
            thread.join(0.2)
        if thread.is_alive():
            raise RuntimeError(f"snapshot session (backend {self.pid}) did not end in {timeout}s")
        self._thread = None
        self.pid = None

    def teardown(self) -> None:
        self.stop()
