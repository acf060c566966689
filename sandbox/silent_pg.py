"""Servers that take a PostgreSQL client's connection and then stop answering, on 127.0.0.1.

- `SilentPostgres` speaks the startup handshake itself (no SSL, trust: AuthenticationOk, the
  usual ParameterStatus, BackendKeyData, ReadyForQuery), then reads every message and answers
  none: a frozen backend or a proxy gone silent after login. statement_timeout cannot fire in
  it, and the kernel acknowledges every byte, so only the client's own deadline ends a wait.
- `FreezingProxy` forwards a client's connection to a real server byte for byte until the
  client sends a statement carrying `marker` (the `/* slotwatch: ... */` comment each statement
  of slotwatch/poll/sql/ starts with); from then on it forwards nothing either way and keeps
  both connections open. The statement never reaches the server.

Both run in threads of the test process and keep every connection open until `close()`.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from typing import Self

_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104
_PARAMETERS = (
    ("server_version", "16.0"),
    ("server_encoding", "UTF8"),
    ("client_encoding", "UTF8"),
    ("DateStyle", "ISO, MDY"),
    ("integer_datetimes", "on"),
    ("standard_conforming_strings", "on"),
    ("TimeZone", "UTC"),
)


def _message(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!I", len(body) + 4) + body


def _read_exactly(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


class _Listener:
    """A loopback listener whose connections are each served by `_serve` in a thread."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = int(self._sock.getsockname()[1])
        self.accepted = 0
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name=type(self).__name__, daemon=True).start()

    def dsn(self, **params: str) -> str:
        """A DSN to this listener; sslmode=disable, as neither stand-in speaks TLS."""
        base = {"host": "127.0.0.1", "port": str(self.port), "sslmode": "disable"}
        base.update({"user": "postgres", "dbname": "app"}, **params)
        return " ".join(f"{key}={value}" for key, value in base.items())

    def _keep(self, conn: socket.socket) -> None:
        with self._lock:
            self._open.append(conn)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return  # closed
            self.accepted += 1
            self._keep(conn)
            threading.Thread(target=self._guarded, args=(conn,), daemon=True).start()

    def _guarded(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError, EOFError):
            self._serve(conn)

    def _serve(self, conn: socket.socket) -> None:  # pragma: no cover - each stand-in's own
        raise NotImplementedError

    def close(self) -> None:
        self._sock.close()
        with self._lock:
            conns, self._open = self._open, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SilentPostgres(_Listener):
    """Completes the startup handshake, then never answers anything."""

    def __init__(self) -> None:
        self.messages = 0  # messages received after the handshake (each one unanswered)
        super().__init__()

    def _serve(self, conn: socket.socket) -> None:
        while True:
            (length,) = struct.unpack("!I", _read_exactly(conn, 4))
            body = _read_exactly(conn, length - 4)
            if struct.unpack("!I", body[:4])[0] in (_SSL_REQUEST, _GSSENC_REQUEST):
                conn.sendall(b"N")
                continue
            break  # the startup packet itself
        hello = _message(b"R", struct.pack("!I", 0))
        for key, value in _PARAMETERS:
            hello += _message(b"S", key.encode() + b"\0" + value.encode() + b"\0")
        hello += _message(b"K", struct.pack("!II", 4242, 2424)) + _message(b"Z", b"I")
        conn.sendall(hello)
        while True:
            kind = _read_exactly(conn, 1)
            (length,) = struct.unpack("!I", _read_exactly(conn, 4))
            _read_exactly(conn, length - 4)
            if kind == b"X":  # Terminate
                return
            self.messages += 1


class FreezingProxy(_Listener):
    """Forwards to 127.0.0.1:`upstream_port` until the client sends `marker`, then freezes.

    With `cut`, the message that carries the marker still reaches the server, and then the
    client's connection is closed before any answer: the statement runs, its client never learns.
    """

    def __init__(self, upstream_port: int, marker: bytes, *, cut: bool = False) -> None:
        self.upstream_port = upstream_port
        self.marker = marker
        self.cut = cut
        self.frozen = threading.Event()
        super().__init__()

    def _serve(self, conn: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        self._keep(upstream)
        threading.Thread(target=self._pipe, args=(upstream, conn, False), daemon=True).start()
        self._pipe(conn, upstream, True)

    def _pipe(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        tail = b""  # the end of the last chunk: a marker split across two reads is still seen
        with contextlib.suppress(OSError):
            while True:
                chunk = source.recv(65536)
                if not chunk:
                    with contextlib.suppress(OSError):
                        sink.shutdown(socket.SHUT_WR)
                    return
                if from_client and self.marker in tail + chunk:
                    self.frozen.set()
                    if self.cut:
                        sink.sendall(chunk)
                        source.shutdown(socket.SHUT_RDWR)  # the client sees the server go
                        continue
                if self.frozen.is_set():
                    # Frozen: read on so nothing pushes back, forward nothing, close nothing.
                    continue
                sink.sendall(chunk)
                tail = chunk[-len(self.marker) :]
