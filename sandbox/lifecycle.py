"""The context-manager protocol the sandbox's stand-ins share: enter starts, exit tears down."""

from __future__ import annotations

import subprocess
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
