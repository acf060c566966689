"""A consumer that streams like PowerSync and confirms when the test says: the stand-in for the
cases ``pg_recvlogical`` cannot play.

``pg_recvlogical -s N`` confirms what it has written every N seconds, whatever it is; PowerSync
confirms only what it has applied, at commit boundaries or keepalive positions, first ~10 s after
it attaches, and it retries ~30 s after an error. :class:`Replicator` runs
``sandbox/stream_client.py`` (psycopg2's ``LogicalReplicationConnection``, pgoutput,
``proto_version '1'``, ``publication_names 'powersync'``, ``messages 'true'`` on 14+,
``application_name`` ``powersync/1.0``) as a child process and drives it over a pipe:

- ``status_interval`` / ``first_confirm``: its reply timer (PowerSync: 10 s / ~10 s);
- ``rows_per_second``: how fast it applies rows; a large transaction is confirmed only once
  applied, with the walsender waiting on the socket meanwhile (:meth:`set_rate`);
- ``confirming=False`` with ``session_seconds`` and ``reconnect_after``: a crash loop that
  attaches, reads, never confirms, leaves and comes back (:meth:`recover` ends it);
- :meth:`freeze`: it stops reading and replying with its connection open, like a wedged process;
- :meth:`detach` / :meth:`attach`: an outage of the consumer while the slot stays.

What it did comes back as events (``attached``, ``status``, ``detached``) with this machine's
monotonic clock, and as cumulative counters (rows, bytes, transactions, chunks) that
:class:`sandbox.powersync_metrics.PowerSyncMetrics` can serve as PowerSync's own metrics.

It is a client over TCP and touches no server file, so it runs as the test's own OS user.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Self

from sandbox.cluster import Cluster
from sandbox.consumer import POWERSYNC_APPLICATION_NAME, PUBLICATION
from sandbox.lifecycle import ChildProcess
from sandbox.osuser import private_dir
from sandbox.waiting import wait_until

CLIENT_SCRIPT = Path(__file__).with_name("stream_client.py")

_UNDESTROYED: set[Replicator] = set()


@atexit.register
def _kill_leftovers() -> None:
    for replicator in list(_UNDESTROYED):
        replicator.destroy()


@dataclass(frozen=True, slots=True)
class Progress:
    """Cumulative counts of what the consumer has taken off the stream, as PowerSync counts them.

    ``rows`` and ``bytes`` rise as rows are applied, ``transactions`` at each commit, ``chunks``
    with every batch read off the socket, bare keepalives included.
    """

    rows: int = 0
    bytes: int = 0
    transactions: int = 0
    chunks: int = 0

    def __add__(self, other: Progress) -> Progress:
        return Progress(
            self.rows + other.rows,
            self.bytes + other.bytes,
            self.transactions + other.transactions,
            self.chunks + other.chunks,
        )


@dataclass(frozen=True, slots=True)
class Event:
    name: str
    at: float  # time.monotonic() in the child: the same clock as the test's
    fields: dict[str, Any] = field(default_factory=dict)


class Replicator(ChildProcess):
    """One stream client for one slot of ``cluster``; start it with :meth:`start` or ``with``."""

    def __init__(
        self,
        cluster: Cluster,
        slot_name: str,
        *,
        status_interval: float = 10.0,
        first_confirm: float | None = None,
        rows_per_second: float | None = None,
        confirming: bool = True,
        session_seconds: float | None = None,
        reconnect_after: float = 30.0,
        application_name: str = POWERSYNC_APPLICATION_NAME,
    ) -> None:
        self.cluster = cluster
        self.slot_name = slot_name
        self.config = {
            "dsn": cluster.dsn(application_name=application_name),
            "slot": slot_name,
            "options": self._options(cluster.install.major),
            "status_interval": status_interval,
            "first_confirm": status_interval if first_confirm is None else first_confirm,
            "rows_per_second": rows_per_second,
            "confirming": confirming,
            "session_seconds": session_seconds,
            "reconnect_after": reconnect_after,
        }
        self.workdir = private_dir("slotwatch-replicator-")
        self.log_path = self.workdir / "stream_client.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._lock = threading.Lock()
        self._events: list[Event] = []
        self._progress = Progress()
        _UNDESTROYED.add(self)

    @staticmethod
    def _options(major: int) -> dict[str, str]:
        options = {"proto_version": "1", "publication_names": PUBLICATION}
        if major >= 14:
            options["messages"] = "true"
        return options

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, *, wait_attached: bool = True, timeout: float = 15.0) -> Self:
        """Start the child; by default wait until its walsender holds the slot."""
        if self.running:
            return self
        _UNDESTROYED.add(self)
        attaches = len(self.events("attached"))
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [sys.executable, str(CLIENT_SCRIPT), json.dumps(self.config)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                cwd=self.workdir,
                start_new_session=True,
            )
        stdout = self._proc.stdout
        if stdout is None:  # never with stdout=PIPE; says so to the type checker
            raise RuntimeError("no pipe from the stream client")
        self._reader = threading.Thread(
            target=self._read, args=(stdout,), name=f"replicator-{self.slot_name}", daemon=True
        )
        self._reader.start()
        if wait_attached:
            self.wait_attached(after=attaches, timeout=timeout)
        return self

    def _read(self, stdout: IO[bytes]) -> None:
        for line in stdout:
            record = json.loads(line)
            name = record.pop("event")
            at = record.pop("at")
            with self._lock:
                if name == "progress":
                    self._progress = Progress(**record)
                else:
                    self._events.append(Event(name, at, record))

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the child to stop (it closes its connection); SIGKILL after ``timeout``."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            # It may exit on its own between the check and the write.
            with contextlib.suppress(OSError, RuntimeError):
                self._send({"cmd": "stop"})
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        if proc.stdin is not None:
            proc.stdin.close()
        if self._reader is not None:
            self._reader.join(timeout)
        if proc.stdout is not None:
            proc.stdout.close()

    def kill(self) -> None:
        """SIGKILL: the process dies without a goodbye; the server notices the closed socket."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)

    def teardown(self) -> None:
        self.destroy()

    def destroy(self) -> None:
        """Stop and delete the log; the slot itself is left as it is."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
        _UNDESTROYED.discard(self)

    # -- control ---------------------------------------------------------------------------

    def _send(self, command: dict[str, Any]) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None or proc.stdin is None:
            raise RuntimeError(f"stream client for {self.slot_name} is not running: {self.log()}")
        proc.stdin.write(json.dumps(command).encode() + b"\n")
        proc.stdin.flush()

    def _command(self, command: dict[str, Any], timeout: float = 10.0) -> None:
        """Send a command and wait until the child has acted on it."""
        before = len(self.events("ack"))
        self._send(command)
        wait_until(
            lambda: len(self.events("ack")) > before,
            timeout,
            interval=0.02,
            message=f"stream client acknowledging {command['cmd']}",
        )

    def freeze(self) -> None:
        """Stop reading and replying; the connection stays open (a wedged process)."""
        self._command({"cmd": "freeze"})

    def thaw(self) -> None:
        self._command({"cmd": "thaw"})

    def set_confirming(self, value: bool) -> None:
        """Whether it sends status replies at all (False: reads, never confirms)."""
        self._command({"cmd": "confirming", "value": value})

    def recover(self) -> None:
        """End a crash loop: confirm again and stay attached (takes effect in this session)."""
        self._command({"cmd": "session", "value": None})
        self._command({"cmd": "confirming", "value": True})

    def set_rate(self, rows_per_second: float | None) -> None:
        """How fast rows are applied from now on; None applies them as fast as they come."""
        self._command({"cmd": "rate", "value": rows_per_second})

    def detach(self, seconds: float | None = None) -> None:
        """Drop the connection now; re-attach after ``seconds``, or only on :meth:`attach`."""
        before = len(self.events("detached"))
        self._send({"cmd": "detach", "for": seconds})
        wait_until(
            lambda: len(self.events("detached")) > before,
            10,
            interval=0.02,
            message="stream client detached",
        )

    def attach(self, *, timeout: float = 15.0) -> Event:
        """Re-attach now; return the ``attached`` event once the server shows the slot active."""
        before = len(self.events("attached"))
        self._send({"cmd": "attach"})
        return self.wait_attached(after=before, timeout=timeout)

    # -- what it did -------------------------------------------------------------------------

    def events(self, name: str | None = None) -> list[Event]:
        with self._lock:
            return [e for e in self._events if name is None or e.name == name]

    @property
    def progress(self) -> Progress:
        with self._lock:
            return self._progress

    def wait_attached(self, *, after: int | None = None, timeout: float = 15.0) -> Event:
        """Wait for attach number ``after + 1`` (default: any new one) and the slot active."""
        seen = len(self.events("attached")) if after is None else after

        def attached() -> Event | None:
            if not self.running:
                raise RuntimeError(f"stream client exited: {self.log()}")
            found = self.events("attached")
            if len(found) <= seen:
                return None
            row = self.cluster.slot(self.slot_name)
            return found[seen] if row and row["active"] else None

        event = wait_until(attached, timeout, message=f"{self.slot_name} attached")
        if event is None:  # pragma: no cover - wait_until returns only a truthy answer
            raise AssertionError("wait_until returned a falsy answer")
        return event

    def log(self) -> str:
        """The child's stderr and every event so far, for a failing test to show."""
        events = "\n".join(f"{e.at:.3f} {e.name} {e.fields}" for e in self.events())
        return f"{self.log_text()}\nevents:\n{events}"
