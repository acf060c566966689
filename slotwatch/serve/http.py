"""The HTTP face of the daemon: GET /metrics, /healthz and /status (SPEC §4), read-only.

Every answer is built from the store's latest snapshot; no request ever waits on the database.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from slotwatch.errors import ConfigError
from slotwatch.logs import get_logger

log = get_logger("slotwatch.http")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    registry: CollectorRegistry
    health: Callable[[], tuple[bool, str]]
    status: Callable[[], dict[str, Any]]


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "slotwatch"
    sys_version = ""

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, CONTENT_TYPE_LATEST, generate_latest(self.server.registry))
        elif path == "/healthz":
            ok, why = self.server.health()
            self._send(200 if ok else 503, "text/plain; charset=utf-8", f"{why}\n".encode())
        elif path == "/status":
            body = json.dumps(self.server.status(), indent=2, allow_nan=False).encode()
            self._send(200, "application/json", body + b"\n")
        elif path == "/":
            links = b"slotwatch: /metrics /healthz /status\n"
            self._send(200, "text/plain; charset=utf-8", links)
        else:
            self._send(404, "text/plain; charset=utf-8", b"not found\n")

    def do_HEAD(self) -> None:
        self.do_GET()

    def _send(self, code: int, content_type: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's signature
        log.debug("http request", client=self.client_address[0], line=format % args)


class HttpServer:
    """Serves in a background thread until `stop()`."""

    def __init__(
        self,
        address: tuple[str, int],
        registry: CollectorRegistry,
        health: Callable[[], tuple[bool, str]],
        status: Callable[[], dict[str, Any]],
    ) -> None:
        host, port = address
        server_class = _Server6 if ":" in host else _Server
        try:
            self._server = server_class((host, port), _Handler)
        except OSError as exc:
            shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            raise ConfigError(
                f"cannot listen on {shown}: {exc.strerror or exc};"
                " is another slotwatch running? set SLOTWATCH_LISTEN to a free address"
            ) from None
        self._server.registry = registry
        self._server.health = health
        self._server.status = status
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="slotwatch-http", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
