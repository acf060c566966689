"""The HTTP face of the daemon: GET /, /metrics, /healthz and /status (docs/contract.md §4).

Every answer is built from the store's latest snapshot; no request waits on the database and no
endpoint changes anything. The server is one asyncio loop in a background thread: it accepts,
reads request heads and writes answers for every connection, so an idle or slowly dripping
client costs a file descriptor, never a thread. Answers are computed on a small, fixed pool of
worker threads. A request head must arrive within `head_timeout`, counted from the accept for
a connection's first request and from the first byte of each later one; between requests, a
kept-alive connection may wait `idle_timeout` for that byte, longer than scrapers keep an unused
connection, so a scraper reuses one connection across scrapes and is the one to close it. An
answer must be written within `write_timeout`, or the connection is cut (one that stopped
reading would otherwise hold its descriptor and the rest of its answer). When connections pile
up beyond `max_connections`, the one that has waited longest for a request (idle or mid-head) is
closed to make room. A listen backlog of `backlog` absorbs a burst of scrapers. Errors on a
connection (resets, broken pipes, garbage) end that connection with one debug line.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import io
import json
import resource
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from http.client import HTTPException, parse_headers
from typing import Any

from slotwatch import __version__
from slotwatch.errors import ConfigError
from slotwatch.logs import get_logger
from slotwatch.serve.exposition import Exposition

log = get_logger("slotwatch.http")

BACKLOG = 1024  # the kernel caps it at net.core.somaxconn (4096 on current Linux)
WORKERS = 4
HEAD_TIMEOUT = 10.0  # seconds a connection may take to send a whole request head
# Seconds a kept-alive connection may wait, after an answer, for the first byte of its next
# request. Longer than any common scrape interval (15 s, 30 s, 1 min), so scrapers reuse their
# connection, and longer than the 5 minutes Prometheus' HTTP client (prometheus/common's
# IdleConnTimeout) keeps an unused one, so the client closes it first: a server closing at the
# moment the client sends would lose that scrape. The 30 s margin covers the client's timer
# starting once it has read the answer, a little after ours. A client that vanishes without
# closing holds its descriptor this long; under pressure `_shed` closes it first.
IDLE_TIMEOUT = 330.0
WRITE_TIMEOUT = 30.0  # seconds an answer may take to be written to a slow reader
HEAD_LIMIT = 16 * 1024  # bytes of request line and headers
REQUESTS_PER_CONNECTION = 1000
ACCEPT_BATCH = 16

TEXT = "text/plain; charset=utf-8"

# Every path the server answers, and what it answers with: the landing page and the reference
# page list them from here.
ENDPOINTS = (
    ("/", "this page: links to the endpoints below"),
    (
        "/metrics",
        "Prometheus metrics from the latest poll (OpenMetrics when asked, gzip when accepted)",
    ),
    ("/status", "every target and slot as JSON: its state, the reasons for it, its figures"),
    ("/healthz", "200 while polls run on schedule (even if a database is down), else 503"),
)

LANDING = (
    '<!DOCTYPE html>\n<html lang="en">\n'
    '<head><meta charset="utf-8"><title>slotwatch</title></head>\n<body>\n'
    "<h1>slotwatch</h1>\n"
    f"<p>Watches PostgreSQL logical replication slots consumed by PowerSync."
    f" Version {html.escape(__version__)}.</p>\n<ul>\n"
    + "".join(
        f'<li><a href="{path.lstrip("/")}">{path}</a>: {html.escape(what)}</li>\n'
        for path, what in ENDPOINTS
        if path != "/"
    )
    + "</ul>\n</body>\n</html>\n"
).encode()


def default_max_connections() -> int:
    """Half of the process's file descriptor limit: the rest is left for database connections,
    the probe and the log."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(16, soft // 2)


@dataclass(frozen=True, slots=True)
class _Request:
    method: str
    path: str
    version: str
    headers: Any  # http.client.HTTPMessage


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    content_type: str
    body: bytes | tuple[bytes, ...]  # several chunks are written as they are, never joined
    extra: tuple[tuple[str, str], ...] = ()


class HttpServer:
    """Serves in a background thread from `start()` until `stop()`."""

    def __init__(
        self,
        address: tuple[str, int],
        metrics: Exposition,
        health: Callable[[], tuple[bool, str]],
        status: Callable[[], dict[str, Any]],
        *,
        workers: int = WORKERS,
        backlog: int = BACKLOG,
        max_connections: int | None = None,
        head_timeout: float = HEAD_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
        write_timeout: float = WRITE_TIMEOUT,
    ) -> None:
        host, port = address
        try:
            self._sock = socket.create_server(
                (host, port),
                family=socket.AF_INET6 if ":" in host else socket.AF_INET,
                backlog=backlog,
            )
        except OSError as exc:
            shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            raise ConfigError(
                f"cannot listen on {shown}: {exc.strerror or exc};"
                " is another slotwatch running? set SLOTWATCH_LISTEN to a free address"
            ) from None
        self._metrics = metrics
        self._health = health
        self._status = status
        self._backlog = backlog
        self._max_connections = max_connections or default_max_connections()
        self._head_timeout = head_timeout
        self._idle_timeout = idle_timeout
        self._write_timeout = write_timeout
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="slotwatch-http")
        # Connections waiting for a request (idle between requests or mid-head), oldest first:
        # the ones shed under pressure.
        self._waiting: dict[asyncio.StreamWriter, None] = {}
        self._open: set[asyncio.StreamWriter] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="slotwatch-http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(timeout=10)

    def stop(self) -> None:
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and self._thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop has already ended
                loop.call_soon_threadsafe(stopping.set)
            self._thread.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._sock.close()

    # --- the loop ---------------------------------------------------------------------------

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(_log_loop_error)
        self._loop, self._stopping = loop, asyncio.Event()
        # asyncio accepts up to `backlog` connections per wake-up before any handler runs (and
        # could exhaust the fds before `_shed` gets a say): accept in small batches, then give
        # the kernel's queue its full length back.
        server = await asyncio.start_server(
            self._connection, sock=self._sock, backlog=ACCEPT_BATCH, limit=HEAD_LIMIT
        )
        self._sock.listen(self._backlog)
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            server.close()
            for writer in list(self._open):
                writer.transport.abort()
            await asyncio.sleep(0)  # let the handlers see their connections gone

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) else "?"
        self._open.add(writer)
        self._shed()
        stuck = False
        try:
            for served in range(1, REQUESTS_PER_CONNECTION + 1):
                self._waiting[writer] = None
                try:
                    head = await self._read_head(reader, kept_alive=served > 1)
                finally:
                    self._waiting.pop(writer, None)
                request = _parse(head)
                answer = (
                    _Answer(400, TEXT, b"bad request\n")
                    if request is None
                    else await self._answer_on_a_worker(request)
                )
                # The last answer a connection gets says so: a client told keep-alive would send
                # its next request into the close and lose that scrape.
                keep = (
                    answer.status < 400
                    and request is not None
                    and _keep_alive(request)
                    and served < REQUESTS_PER_CONNECTION
                )
                writer.writelines(_response(answer, request, keep))
                try:
                    await asyncio.wait_for(writer.drain(), timeout=self._write_timeout)
                except TimeoutError:
                    stuck = True
                    raise
                log.debug(
                    "http request",
                    client=client,
                    method=request.method if request else None,
                    path=request.path if request else None,
                    status=answer.status,
                )
                if not keep:
                    break
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                log.debug("http connection closed mid-request", client=client)
        except (TimeoutError, asyncio.LimitOverrunError, ConnectionError, OSError) as exc:
            log.debug("http connection dropped", client=client, error=type(exc).__name__)
        except Exception as exc:  # noqa: BLE001 - one bad connection must not end the server
            log.debug("http connection failed", client=client, error=repr(exc))
        finally:
            await self._close(writer, stuck=stuck)

    async def _close(self, writer: asyncio.StreamWriter, *, stuck: bool) -> None:
        """End the connection. A client that stopped reading is cut: a plain close would wait
        for it to take the rest of its answer, holding the descriptor and that copy of the body
        for as long as it keeps its window shut. One that is merely slow gets write_timeout to
        take the rest; it counts as open until it has."""
        try:
            if stuck:
                writer.transport.abort()
            else:
                writer.close()
            await asyncio.wait_for(writer.wait_closed(), timeout=self._write_timeout)
        except (TimeoutError, ConnectionError, OSError):
            writer.transport.abort()
        finally:
            self._open.discard(writer)

    async def _read_head(self, reader: asyncio.StreamReader, *, kept_alive: bool) -> bytes:
        """The next request head: the head deadline runs from the accept on a new connection, and
        from the request's first byte on a kept-alive one, which may idle until then."""
        if not kept_alive:
            return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=self._head_timeout)
        # A close while idle is an IncompleteReadError with nothing partial: a quiet end.
        first = await asyncio.wait_for(reader.readexactly(1), timeout=self._idle_timeout)
        try:
            # The reader's limit (HEAD_LIMIT) counts the rest only: the head may be a byte longer.
            rest = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=self._head_timeout)
        except asyncio.IncompleteReadError as exc:
            raise asyncio.IncompleteReadError(first + exc.partial, exc.expected) from None
        return first + rest

    def _shed(self) -> None:
        """Close the connections that have waited longest for a request, beyond the limit."""
        while len(self._open) > self._max_connections and self._waiting:
            oldest = next(iter(self._waiting))
            self._waiting.pop(oldest)
            self._open.discard(oldest)
            oldest.transport.abort()

    async def _answer_on_a_worker(self, request: _Request) -> _Answer:
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._pool, self._answer, request
            )
        except Exception as exc:  # a bug behind one endpoint is a 500 and a log line, not a hang
            log.exception("http answer failed", path=request.path, error=repr(exc))
            return _Answer(500, TEXT, b"internal error; see slotwatch's log\n")

    # --- answers, on a worker thread ---------------------------------------------------------

    def _answer(self, request: _Request) -> _Answer:
        if request.method not in ("GET", "HEAD"):
            refusal = b"only GET and HEAD: no endpoint changes anything\n"
            return _Answer(405, TEXT, refusal, (("Allow", "GET, HEAD"),))
        path = request.path.split("?", 1)[0]
        if path == "/metrics":
            metrics = self._metrics.response(
                request.headers.get("Accept"), request.headers.get("Accept-Encoding")
            )
            extra = [("Vary", "Accept, Accept-Encoding")]
            if metrics.content_encoding:
                extra.append(("Content-Encoding", metrics.content_encoding))
            return _Answer(200, metrics.content_type, metrics.chunks, tuple(extra))
        if path == "/healthz":
            ok, why = self._health()
            return _Answer(200 if ok else 503, TEXT, f"{why}\n".encode())
        if path == "/status":
            body = json.dumps(self._status(), indent=2, allow_nan=False).encode()
            return _Answer(200, "application/json", body + b"\n")
        if path == "/":
            return _Answer(200, "text/html; charset=utf-8", LANDING)
        return _Answer(404, TEXT, b"not found\n")


def _parse(head: bytes) -> _Request | None:
    line, _, rest = head.partition(b"\r\n")
    parts = line.decode("latin-1").split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[1].startswith("/"):
        return None
    try:
        headers = parse_headers(io.BytesIO(rest))
    except (HTTPException, ValueError):
        return None
    return _Request(parts[0], parts[1], parts[2], headers)


def _keep_alive(request: _Request) -> bool:
    connection = (request.headers.get("Connection") or "").lower()
    if request.version == "HTTP/1.0":
        return "keep-alive" in connection
    return "close" not in connection


def _response(answer: _Answer, request: _Request | None, keep: bool) -> tuple[bytes, ...]:
    """The head and the body's chunks: a 2 MiB body is sent as it is cached, not copied."""
    chunks = (answer.body,) if isinstance(answer.body, bytes) else answer.body
    reason = HTTPStatus(answer.status).phrase
    headers = [
        ("Server", "slotwatch"),
        ("Date", formatdate(time.time(), usegmt=True)),
        ("Content-Type", answer.content_type),
        ("Content-Length", str(sum(map(len, chunks)))),
        ("Cache-Control", "no-store"),
        *answer.extra,
        ("Connection", "keep-alive" if keep else "close"),
    ]
    head = f"HTTP/1.1 {answer.status} {reason}\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in headers
    )
    if request is not None and request.method == "HEAD":
        chunks = ()
    return (head.encode("latin-1") + b"\r\n", *chunks)


def _log_loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    # e.g. accept() out of file descriptors: asyncio retries by itself; never a raw traceback.
    exception = context.get("exception")
    log.debug(
        "http server error",
        message=context.get("message"),
        error=repr(exception) if exception is not None else None,
    )
