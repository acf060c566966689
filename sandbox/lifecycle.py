"""The context-manager protocol the sandbox's stand-ins share: enter starts, exit tears down."""

from __future__ import annotations

import subprocess
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Self


class Managed:
    """`with Thing(...) as thing:` starts it and always tears it down, whatever happened."""

    def start(self) -> Self:
        raise NotImplementedError

    def teardown(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.teardown()


class ServedHTTP(Managed):
    """A stand-in that is one HTTP server of ours, served from a thread.

    Subclasses set `_server`, `_thread_name`, `_stopping` and `_lock` (which also guards their
    own state), and `_wake_held()` releases the requests they hold on purpose (a hang), so that
    `stop()` is prompt whatever is in flight. Their handlers call `_count_hit()` per request.
    """

    _server: ThreadingHTTPServer
    _thread_name: str
    _stopping: threading.Event
    _lock: threading.Lock
    _hits: int = 0
    _thread: threading.Thread | None = None

    @property
    def hits(self) -> int:
        """How many requests arrived, whatever the stand-in answered."""
        with self._lock:
            return self._hits

    def _count_hit(self) -> None:
        with self._lock:
            self._hits += 1

    def _wake_held(self) -> None:
        raise NotImplementedError

    def start(self) -> Self:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=self._thread_name,
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop promptly, even with requests held in flight."""
        self._stopping.set()
        self._wake_held()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(5)
            self._thread = None
        self._server.server_close()

    def teardown(self) -> None:
        self.stop()


class ChildProcess(Managed):
    """A stand-in that is one child process of ours (the server, the consumer)."""

    _proc: subprocess.Popen[bytes] | None = None
    log_path: Path  # where the process's output goes

    @property
    def pid(self) -> int | None:
        """The process itself (never a wrapper), while it has not exited."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def running(self) -> bool:
        """True while the process exists, stopped (paused) or not."""
        return self.pid is not None

    def log_text(self) -> str:
        """The process's output so far, for a failing test to show."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
