"""The application: a thread inserting published rows, so WAL moves and a consumer has work."""

from __future__ import annotations

import threading
from typing import Self

from sandbox.cluster import INSERT_TODOS, Cluster
from sandbox.lifecycle import Managed


class Writer(Managed):
    """Inserts `rows` todos of `pad` characters every `every` seconds until stopped.

    An error in the thread is kept and raised by `stop()` in the caller's thread, so a test
    never passes on a writer that silently died.
    """

    def __init__(
        self, cluster: Cluster, *, rows: int = 50, pad: int = 200, every: float = 0.05
    ) -> None:
        self.cluster = cluster
        self.rows = rows
        self.pad = pad
        self.every = every
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="writer", daemon=True)

    def _run(self) -> None:
        try:
            with self.cluster.connect() as conn:
                # Event.wait paces the inserts and ends them the moment stop() is called.
                while not self._stop.wait(self.every):
                    conn.execute(INSERT_TODOS, (self.pad, self.rows))
        except Exception as exc:  # noqa: BLE001 - handed to the caller by stop()
            if not self._stop.is_set():
                self.error = exc

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        if self.error is not None:
            raise RuntimeError(f"the writer failed: {self.error!r}")

    def teardown(self) -> None:
        self.stop()
