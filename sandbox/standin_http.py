"""What the sandbox's HTTP stand-ins share: a threaded server on 127.0.0.1 (a free port) that
answers GET as its mode says, switchable at runtime, and counts every request.

Every stand-in has an ``ok`` mode and a ``hang`` mode: ``hang`` accepts a request and answers
nothing until :meth:`HTTPStandin.release`, a change of mode, or :meth:`HTTPStandin.stop`, then
closes the connection. What the other modes answer is each stand-in's own
(:meth:`StandinHandler._serve`).
"""

from __future__ import annotations

import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Generic, TypeVar

from sandbox.lifecycle import ServedHTTP

OwnerT = TypeVar("OwnerT", bound="HTTPStandin")


class StandinHandler(BaseHTTPRequestHandler, Generic[OwnerT]):
    """One request to a stand-in: counted, then held (``hang``) or answered by :meth:`_serve`."""

    server: StandinServer[OwnerT]
    protocol_version = "HTTP/1.1"
    content_type: ClassVar[str]  # of every answer _send writes
    # The paths served (the query string aside); any other is answered 404 with not_found_body,
    # whatever the mode. None: every path is served.
    paths: ClassVar[tuple[str, ...] | None] = None
    not_found_body: ClassVar[bytes] = b""

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - base signature
        """Quiet: a test's output should not fill with access logs."""

    def do_GET(self) -> None:
        owner = self.server.owner
        owner._count_hit()
        if self.paths is not None and self.path.split("?")[0] not in self.paths:
            self._send(HTTPStatus.NOT_FOUND, self.not_found_body)
            return
        mode = owner.mode
        try:
            if mode == "hang":
                owner._wait_for_release()
                self.close_connection = True
                return
            self._serve(mode)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            # The client gave up first (a timeout, a size cap): that is its right.
            return

    def _serve(self, mode: str) -> None:
        """Answer the request in ``mode`` (any but ``hang``)."""
        raise NotImplementedError

    def _send(self, status: HTTPStatus, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", self.content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


class StandinServer(ThreadingHTTPServer, Generic[OwnerT]):
    """The listening socket on 127.0.0.1 (a free port); its handlers reach the stand-in as
    ``server.owner``."""

    daemon_threads = True

    def __init__(self, owner: OwnerT, handler: type[StandinHandler[Any]]) -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", 0), handler)


class HTTPStandin(ServedHTTP):
    """A stand-in served by :class:`StandinServer`, in one of :attr:`modes` at a time.

    Subclasses set :attr:`modes`, the noun an unknown mode's error names, and ``_thread_name``
    once the server exists (it may name the port).
    """

    modes: ClassVar[tuple[str, ...]]
    mode_noun: ClassVar[str] = "mode"

    def __init__(self, handler: type[StandinHandler[Any]], mode: str = "ok") -> None:
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._stopping = threading.Event()
        self.mode = "ok"
        self.set_mode(mode)
        self._server = StandinServer(self, handler)

    @property
    def port(self) -> int:
        port: int = self._server.server_address[1]
        return port

    def set_mode(self, mode: str) -> None:
        if mode not in self.modes:
            raise ValueError(
                f"unknown {self.mode_noun} {mode!r}; choose one of {', '.join(self.modes)}"
            )
        if mode == "hang":
            if self._release.is_set():
                self._release = threading.Event()
        else:
            # Requests already held by hang end without an answer.
            self._release.set()
        self.mode = mode

    def release(self) -> None:
        """End the requests held by ``hang`` (without an answer); later ones hang again."""
        held = self._release
        if self.mode == "hang":
            self._release = threading.Event()
        held.set()

    def _wait_for_release(self) -> None:
        release = self._release
        while not release.wait(0.1) and not self._stopping.is_set():
            continue

    def _wake_held(self) -> None:
        self._release.set()
