"""A stand-in for PowerSync's ``/probes/liveness`` endpoint: a real HTTP server in a thread.

In ``ok`` mode it answers as PowerSync 1.x does: 200 with
``{"ready":true,"started":true,"touched_at":"2026-11-27T10:09:27.544Z"}``. The other modes are
the ways a probe can go wrong, switchable at runtime with :meth:`LivenessServer.set_mode`:

- ``stale``: 400 with the same body and a ``touched_at`` 30 s old (PowerSync's own "not live")
- ``fail``: 500; ``garbage``: 200 with a body that is not JSON
- ``hang``: accept the request and answer nothing until :meth:`release` or :meth:`stop`
- ``huge``: 200 with a 10 MB body, streamed in chunks
- ``redirect``: 302 to another host; ``redirect_loop``: 302 to itself, forever
- ``slow_redirect``: each hop waits :attr:`LivenessServer.drip` seconds, then 302 to the next hop
  on the same origin (three hops, then an ``ok`` answer)
- ``reset``: read the request, then reset the connection (RST, no answer)
- ``chunked``: 200 with an endless chunked body
- ``header_drip``: the status line and headers one byte every :attr:`LivenessServer.drip` seconds
- ``body_drip``: headers at once, then the body one byte every ``drip`` seconds
- ``gzip_bomb``: a 1 GiB run of zeros, gzipped (~1 MB on the wire); ``double_gzip_bomb``: the same
  gzipped twice (``Content-Encoding: gzip, gzip``, ~2 kB on the wire)
"""

from __future__ import annotations

import functools
import json
import socket
import struct
import zlib
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from http import HTTPStatus

from sandbox.standin_http import HTTPStandin, StandinHandler

MODES = (
    "ok",
    "stale",
    "fail",
    "hang",
    "garbage",
    "huge",
    "redirect",
    "redirect_loop",
    "slow_redirect",
    "reset",
    "chunked",
    "header_drip",
    "body_drip",
    "gzip_bomb",
    "double_gzip_bomb",
)
SLOW_REDIRECT_HOPS = 3
BOMB_BYTES = 1 << 30
PROBE_PATHS = ("/probes/liveness", "/probes/readiness", "/probes/startup")
HUGE_BODY_BYTES = 10 * 1000 * 1000
STALE_AGE_SECONDS = 30.0
REDIRECT_LOCATION = "http://redirected.invalid/probes/liveness"
_CHUNK = b"x" * 65536


def powersync_timestamp(when: datetime) -> str:
    """``2026-11-27T10:09:27.544Z``: UTC, milliseconds, as JavaScript's toISOString() writes it."""
    utc = when.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _gzip(chunks: Iterable[bytes]) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = [packer.compress(chunk) for chunk in chunks]
    out.append(packer.flush())
    return b"".join(out)


@functools.cache
def gzip_bomb() -> bytes:
    """BOMB_BYTES of zeros, gzipped once (made once per process: it takes a few seconds)."""
    zeros = b"\0" * (1 << 20)
    return _gzip(zeros for _ in range(BOMB_BYTES >> 20))


@functools.cache
def double_gzip_bomb() -> bytes:
    """The bomb gzipped again: a couple of kB that a stacked decoder turns into 1 GiB."""
    return _gzip([gzip_bomb()])


def probe_body(age_seconds: float = 0.0) -> bytes:
    touched = datetime.now(UTC) - timedelta(seconds=age_seconds)
    body = {"ready": True, "started": True, "touched_at": powersync_timestamp(touched)}
    return json.dumps(body, separators=(",", ":")).encode()


class _Handler(StandinHandler["LivenessServer"]):
    content_type = "application/json; charset=utf-8"
    paths = PROBE_PATHS
    not_found_body = b'{"error":"not found"}'

    def _serve(self, mode: str) -> None:
        special = {
            "huge": self._send_huge,
            "slow_redirect": self._send_slow_redirect,
            "reset": self._reset,
            "chunked": self._send_chunked,
            "header_drip": self._drip_headers,
            "body_drip": self._drip_body,
        }.get(mode)
        if special is not None:
            special()
            return
        self._send(*self._answer(mode, self.path))

    @staticmethod
    def _answer(mode: str, path: str) -> tuple[HTTPStatus, bytes, dict[str, str]]:
        if mode == "stale":
            return HTTPStatus.BAD_REQUEST, probe_body(STALE_AGE_SECONDS), {}
        if mode == "fail":
            return HTTPStatus.INTERNAL_SERVER_ERROR, b'{"error":"internal error"}', {}
        if mode == "garbage":
            return HTTPStatus.OK, b"<html><body>upstream says hi</body></html>", {}
        if mode == "redirect":
            return HTTPStatus.FOUND, b"", {"Location": REDIRECT_LOCATION}
        if mode == "redirect_loop":
            return HTTPStatus.FOUND, b"", {"Location": path}
        if mode == "gzip_bomb":
            return HTTPStatus.OK, gzip_bomb(), {"Content-Encoding": "gzip"}
        if mode == "double_gzip_bomb":
            return HTTPStatus.OK, double_gzip_bomb(), {"Content-Encoding": "gzip, gzip"}
        return HTTPStatus.OK, probe_body(), {}

    def _send_huge(self) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", self.content_type)
        self.send_header("Content-Length", str(HUGE_BODY_BYTES))
        self.end_headers()
        remaining = HUGE_BODY_BYTES
        while remaining > 0 and not self.server.owner._stopping.is_set():
            chunk = _CHUNK[: min(len(_CHUNK), remaining)]
            self.wfile.write(chunk)
            remaining -= len(chunk)

    def _pause(self) -> bool:
        """Wait one drip interval; False once the server is stopping."""
        return not self.server.owner._stopping.wait(self.server.owner.drip)

    def _send_slow_redirect(self) -> None:
        hop = int(self.path.partition("?hop=")[2] or 0)
        if not self._pause():
            return
        if hop >= SLOW_REDIRECT_HOPS:
            self._send(HTTPStatus.OK, probe_body())
            return
        location = f"{self.path.partition('?')[0]}?hop={hop + 1}"
        self._send(HTTPStatus.FOUND, b"", {"Location": location})

    def _reset(self) -> None:
        # SO_LINGER with a zero timeout: close() sends RST instead of FIN.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True

    def _send_chunked(self) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", self.content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        chunk = b"%x\r\n%b\r\n" % (len(_CHUNK), _CHUNK)
        while not self.server.owner._stopping.is_set():
            self.wfile.write(chunk)

    def _drip_headers(self) -> None:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Drip: "
        head += b"x" * 100_000 + b"\r\n\r\n"
        for byte in head:
            self.wfile.write(bytes([byte]))
            self.wfile.flush()
            if not self._pause():
                return

    def _drip_body(self) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", self.content_type)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.flush()
        for _ in range(1000):
            self.wfile.write(b" ")
            self.wfile.flush()
            if not self._pause():
                return


class LivenessServer(HTTPStandin):
    """The endpoint on 127.0.0.1 (a free port), started by :meth:`start` or ``with``."""

    modes = MODES
    mode_noun = "liveness mode"

    def __init__(self, mode: str = "ok", *, drip: float = 1.0) -> None:
        self.drip = drip  # seconds between bytes (drips) or before each hop (slow_redirect)
        super().__init__(_Handler, mode)
        self._thread_name = f"liveness-{self.port}"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The liveness URL, as ``SLOTWATCH_LIVENESS_URL`` expects it."""
        return f"{self.base_url}/probes/liveness"

    def set_mode(self, mode: str) -> None:
        if mode in MODES and mode.endswith("gzip_bomb"):
            double_gzip_bomb()  # made here, before a probe's deadline runs, not in the handler
        super().set_mode(mode)
