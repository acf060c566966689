"""The child process behind :class:`sandbox.replicator.Replicator`: a pgoutput stream that confirms
the way PowerSync does, at moments its parent decides.

Run by path (``python stream_client.py CONFIG_JSON``), so it imports nothing from the checkout:
only the standard library and psycopg2, whose ``LogicalReplicationConnection`` speaks the
streaming replication protocol. It reads commands from stdin and reports what it did on stdout,
one JSON object per line each way; its stderr is the parent's log file.

How it confirms, as PowerSync's pgwire client does (see ``../shared/CONTEXT.md``):

- a status reply every ``status_interval`` seconds on a timer, the first one ``first_confirm``
  seconds after the walsender attached (PowerSync's first confirm comes ~10 s after it attaches);
- the position it confirms moves only at the end of a committed transaction it has applied, or
  to a keepalive's position when everything received so far is applied (psycopg2 forwards the
  flush position to a keepalive's ``wal_end`` only then);
- rows are applied at ``rows_per_second`` (unbounded when null): one large transaction is read as
  slowly as it is applied, so the walsender waits on the socket with ``sent_lsn`` parked at the
  commit, and the commit is confirmed only once its last row is applied.

With ``confirming`` false it reads but never sends a status reply (psycopg2 answers a keepalive
that asks for a reply, which a server with ``wal_sender_timeout = 0`` never sends). With
``session_seconds`` set it drops its connection after that long attached and re-attaches
``reconnect_after`` seconds later: with ``confirming`` false, a crash loop.

Commands (stdin): ``freeze`` (stop reading and replying, connection kept: a wedged process),
``thaw``, ``confirming``, ``rate``, ``session`` (each with a ``value``), ``detach`` (drop the
connection; re-attach after ``for`` seconds, or only on ``attach`` when ``for`` is null),
``attach``, ``stop``.
Reports (stdout): ``attached`` (``pid`` of the walsender), ``status`` (a reply was sent;
``applied``, the commit end it carries, 0 before the first), ``detached``
(``reason``), ``progress`` (cumulative ``rows``, ``bytes``, ``transactions``, ``chunks``), each
with ``at``, this machine's monotonic clock (shared by every process on it).
"""

from __future__ import annotations

import json
import os
import select
import struct
import sys
import time
from typing import Any

import psycopg2
import psycopg2.extras

# psycopg2's own status timer is kept out of the way: this client sends its replies itself.
NO_LIBRARY_TIMER = 10**6
PROGRESS_EVERY = 0.1
ROW_MESSAGES = frozenset(b"IUDT")


class Stop(Exception):
    """The parent asked to stop, or closed our stdin."""


class Detach(Exception):
    """The connection is to be dropped now (a command, the end of a session, or an error)."""

    def __init__(self, reason: str, reattach_after: float | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.reattach_after = reattach_after


class Client:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.status_interval = float(config["status_interval"])
        self.first_confirm = float(config["first_confirm"])
        self.rows_per_second: float | None = config["rows_per_second"]
        self.confirming = bool(config["confirming"])
        self.session_seconds: float | None = config["session_seconds"]
        self.reconnect_after = float(config["reconnect_after"])
        self.frozen = False
        self.attach_requested = False
        self.counters = {"rows": 0, "bytes": 0, "transactions": 0, "chunks": 0}
        self._stdin = b""
        self._last_progress = 0.0

    # -- talking to the parent -----------------------------------------------------------

    def report(self, event: str, **fields: Any) -> None:
        line = json.dumps({"event": event, "at": time.monotonic(), **fields})
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def progress(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_progress >= PROGRESS_EVERY:
            self._last_progress = now
            self.report("progress", **self.counters)

    def wait(self, seconds: float, extra: list[int] | None = None) -> list[int]:
        """Wait up to ``seconds`` for a command (handled here) or for ``extra`` to be readable."""
        fds = [sys.stdin.fileno(), *(extra or [])]
        ready, _, _ = select.select(fds, [], [], max(seconds, 0.0))
        if sys.stdin.fileno() in ready:
            chunk = os.read(sys.stdin.fileno(), 65536)
            if not chunk:
                raise Stop
            self._stdin += chunk
            while b"\n" in self._stdin:
                line, self._stdin = self._stdin.split(b"\n", 1)
                if line.strip():
                    self.command(json.loads(line))
        return [fd for fd in ready if fd != sys.stdin.fileno()]

    def command(self, cmd: dict[str, Any]) -> None:
        name = cmd["cmd"]
        if name == "stop":
            raise Stop
        if name == "freeze":
            self.frozen = True
        elif name == "thaw":
            self.frozen = False
        elif name == "confirming":
            self.confirming = bool(cmd["value"])
        elif name == "rate":
            self.rows_per_second = cmd["value"]
        elif name == "session":
            self.session_seconds = cmd["value"]
        elif name == "attach":
            self.attach_requested = True
        elif name == "detach":
            raise Detach("detach requested", cmd.get("for"))
        else:
            raise ValueError(f"unknown command {name!r}")
        self.report("ack", cmd=name)

    # -- the stream -------------------------------------------------------------------

    def run(self) -> None:
        while True:
            try:
                self.session()
                reattach_after: float | None = self.reconnect_after
            except Detach as why:
                self.report("detached", reason=why.reason)
                reattach_after = why.reattach_after
            self.attach_requested = False
            if reattach_after is None:
                while not self.attach_requested:
                    self.wait(1.0)
            else:
                deadline = time.monotonic() + reattach_after
                while not self.attach_requested and (left := deadline - time.monotonic()) > 0:
                    self.wait(left)

    def session(self) -> None:
        try:
            conn = psycopg2.connect(
                self.config["dsn"],
                connection_factory=psycopg2.extras.LogicalReplicationConnection,
            )
        except psycopg2.Error as exc:
            raise Detach(f"connect failed: {str(exc).strip()}", self.reconnect_after) from None
        try:
            self.stream(conn)
        except psycopg2.Error as exc:
            raise Detach(f"stream ended: {str(exc).strip()}", self.reconnect_after) from None
        finally:
            conn.close()

    def stream(self, conn: Any) -> None:
        cur = conn.cursor()
        cur.start_replication(
            slot_name=self.config["slot"],
            decode=False,
            options=self.config["options"],
            status_interval=NO_LIBRARY_TIMER,
        )
        self.report("attached", pid=conn.get_backend_pid())
        stream = Stream(self, cur, time.monotonic())
        while True:
            now = time.monotonic()
            if self.session_seconds is not None and now - stream.attached >= self.session_seconds:
                raise Detach("session over", self.reconnect_after)
            if self.frozen:
                self.wait(0.1)
                continue
            stream.reply_if_due(now)
            if now < stream.hold_until:
                self.wait(min(stream.hold_until, stream.next_status) - now)
                continue
            msg = cur.read_message()
            if msg is not None:
                stream.take(msg)
                self.progress()
                continue
            stream.end_of_batch()
            self.wait(min(0.1, max(stream.next_status - time.monotonic(), 0.0)), [conn.fileno()])


class Stream:
    """One attached session: what has been received and applied, and when to reply next."""

    def __init__(self, client: Client, cur: Any, attached: float) -> None:
        self.client = client
        self.cur = cur
        self.attached = attached
        self.next_status = attached + client.first_confirm
        self.applied = 0  # end of the last transaction (or message) fully applied
        self.in_txn = False
        self.txn_rows = 0
        self.txn_began = 0.0
        self.hold_until = 0.0  # reading waits while the rows read so far are being applied
        self.last_io = cur.io_timestamp
        self.got_data = False

    def reply_if_due(self, now: float) -> None:
        if now < self.next_status:
            return
        if self.client.confirming:
            # psycopg2 sends the higher of this and a keepalive position it may hold.
            self.cur.send_feedback(flush_lsn=self.applied, force=True)
            self.client.report("status", applied=self.applied)
        self.next_status = now + self.client.status_interval

    def end_of_batch(self) -> None:
        if self.got_data or self.cur.io_timestamp != self.last_io:
            # One batch off the socket (or a bare keepalive): PowerSync counts a chunk.
            self.client.counters["chunks"] += 1
            self.got_data = False
            self.last_io = self.cur.io_timestamp
            self.client.progress()

    def take(self, msg: Any) -> None:
        counters = self.client.counters
        self.got_data = True
        payload = bytes(msg.payload)
        kind = payload[:1]
        counters["bytes"] += len(payload)
        if kind == b"B":
            self.in_txn, self.txn_rows, self.txn_began = True, 0, time.monotonic()
        elif kind == b"C":
            # Commit: flags (1), commit LSN (8), end LSN (8), timestamp (8).
            (self.applied,) = struct.unpack_from(">Q", payload, 10)
            self.in_txn = False
            counters["transactions"] += 1
            # Reported before the commit can be confirmed: a reader who sees the confirm on the
            # server sees every row of it counted.
            self.client.progress(force=True)
        elif kind == b"M" and not self.in_txn:
            # A non-transactional message (PowerSync's own heartbeat) is applied at once.
            self.applied = msg.data_start
        elif payload[0] in ROW_MESSAGES:
            counters["rows"] += 1
            self.txn_rows += 1
            rate = self.client.rows_per_second
            if rate:
                self.hold_until = self.txn_began + self.txn_rows / rate


def main() -> None:
    client = Client(json.loads(sys.argv[1]))
    try:
        client.run()
    except Stop:
        pass
    except KeyboardInterrupt:
        pass
    client.progress(force=True)


if __name__ == "__main__":
    main()
