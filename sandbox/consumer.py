"""A logical replication consumer that streams like PowerSync: the real ``pg_recvlogical``.

It runs the binary of the cluster's own install (Debian's ``/usr/bin/pg_recvlogical`` is a wrapper
script, and a signal sent to a wrapper never reaches the stream), with pgoutput options as
PowerSync sets them (``proto_version=1``, ``publication_names=powersync``, ``messages=true``) and
``application_name=powersync/1.0``. :meth:`Consumer.pause` (SIGSTOP) freezes it with its
connection open, the way a hung PowerSync looks to the server.

What moves ``confirmed_flush_lsn`` (measured on PostgreSQL 15.18 and 18.6, ``--status-interval=1``,
``--fsync-interval=0``, idle stream, then one kind of WAL at a time): it reached the new WAL head
within 2.0 s in every case -- one published row, a ``pg_logical_emit_message`` heartbeat, one
transaction touching only an unpublished table (which pgoutput on 15+ does not even send: it skips
empty transactions), 200 such transactions, or a ``pg_switch_wal()``. So pg_recvlogical follows
the WAL head even when the WAL is unrelated to the publication, as PowerSync does. Unrelated WAL
reaches the client only as keepalive positions, whose timing the walsender decides; tests that
need a slot to advance therefore write to a published table (:meth:`Cluster.write`) and wait
with a deadline of a few seconds.
"""

from __future__ import annotations

import atexit
import secrets
import shutil
import signal
import subprocess
import time
from typing import Self

from sandbox.cluster import Cluster
from sandbox.lifecycle import ChildProcess
from sandbox.osuser import private_dir, spawn_as_server
from sandbox.waiting import wait_until

POWERSYNC_APPLICATION_NAME = "powersync/1.0"
PUBLICATION = "powersync"


# Consumers run in their own session; one left running would hold its slot active for ever.
_UNDESTROYED: set[Consumer] = set()


@atexit.register
def _kill_leftovers() -> None:
    for consumer in list(_UNDESTROYED):
        consumer.destroy()


def powersync_slot_name(sync_rules_id: int, prefix: str = "powersync_selfhost") -> str:
    """A slot name as PowerSync makes one: prefix, sync rules id, ``_`` and 4 random hex digits."""
    return f"{prefix}{sync_rules_id}_{secrets.token_hex(2)}"


def create_slot(cluster: Cluster, name: str) -> str:
    """Create a pgoutput slot in the ``app`` database, as PowerSync does; return its name."""
    cluster.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (name,))
    return name


class Consumer(ChildProcess):
    """One ``pg_recvlogical`` process streaming one slot of ``cluster``."""

    def __init__(
        self,
        cluster: Cluster,
        slot_name: str,
        *,
        application_name: str = POWERSYNC_APPLICATION_NAME,
        status_interval: int = 1,
        reconnect: bool = True,
    ) -> None:
        self.cluster = cluster
        self.slot_name = slot_name
        self.application_name = application_name
        self.status_interval = status_interval
        self.reconnect = reconnect
        self.workdir = private_dir("slotwatch-consumer-")
        self.output_path = self.workdir / "changes.out"
        self.log_path = self.workdir / "pg_recvlogical.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self.paused = False
        _UNDESTROYED.add(self)

    def teardown(self) -> None:
        self.destroy()

    def create_slot(self) -> Self:
        create_slot(self.cluster, self.slot_name)
        return self

    def argv(self) -> list[str]:
        major = self.cluster.install.major
        dsn = self.cluster.dsn(application_name=self.application_name)
        argv = [
            str(self.cluster.install.binary("pg_recvlogical")),
            f"--dbname={dsn}",
            f"--slot={self.slot_name}",
            "--start",
            f"--file={self.output_path}",
            f"--status-interval={self.status_interval}",
            # 0 = confirm what was written at every status message, without fsync() calls.
            "--fsync-interval=0",
            "--plugin=pgoutput",
            "--option=proto_version=1",
            f"--option=publication_names={PUBLICATION}",
        ]
        if major >= 14:
            argv.append("--option=messages=true")
        if not self.reconnect:
            argv.append("--no-loop")
        return argv

    def start(self, *, wait_active: bool = True, timeout: float = 15.0) -> Self:
        """Start streaming; by default wait until the server shows the slot active."""
        if self.running:
            return self
        _UNDESTROYED.add(self)
        self._proc = spawn_as_server(self.argv(), log_path=self.log_path, cwd=self.workdir)
        self.paused = False
        if wait_active:
            wait_until(self._slot_active, timeout, message=f"slot {self.slot_name} active")
        return self

    def _slot_active(self) -> bool:
        if not self.running:
            raise RuntimeError(f"pg_recvlogical exited: {self.log_text()}")
        row = self.cluster.slot(self.slot_name)
        return bool(row and row["active"])

    def _signal(self, signum: signal.Signals) -> None:
        if self._proc is None or self._proc.poll() is not None:
            raise RuntimeError(f"pg_recvlogical for {self.slot_name} is not running")
        self._proc.send_signal(signum)

    def pause(self) -> None:
        """SIGSTOP: the connection stays open, nothing is read or confirmed any more."""
        self._signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        self._signal(signal.SIGCONT)
        self.paused = False

    def kill(self, timeout: float = 10.0) -> None:
        """SIGKILL: the process dies without a goodbye; the server notices the closed socket."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.kill()
        proc.wait(timeout)
        self.paused = False

    def stop(self, timeout: float = 2.0) -> None:
        """Ask it to finish (SIGINT, resending it while it lives); SIGKILL after ``timeout``.

        SIGINT is resent because pg_recvlogical 18 forgets one that arrives during its 5 s pause
        before reconnecting (15 exits at once); SIGTERM is not used because 15 does not catch it.
        """
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            proc.send_signal(signal.SIGINT)
            if self.paused:
                proc.send_signal(signal.SIGCONT)
                self.paused = False
            try:
                proc.wait(min(0.5, max(deadline - time.monotonic(), 0.01)))
            except subprocess.TimeoutExpired:
                continue
        if proc.poll() is None:
            self.kill()

    def destroy(self) -> None:
        """Stop, then delete the output and the log; the slot itself is left as it is."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
        _UNDESTROYED.discard(self)

    def output_size(self) -> int:
        """Bytes of pgoutput messages written so far."""
        try:
            return self.output_path.stat().st_size
        except FileNotFoundError:
            return 0
