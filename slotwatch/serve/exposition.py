"""The /metrics answer: rendered once per snapshot, negotiated and compressed per request.

The snapshot only changes when a poll or probe lands, so its families are rendered
(`serve.render`) on the first scrape after a change and kept, keyed by the snapshot's identity;
concurrent scrapes of the same snapshot wait for that one render instead of repeating it. The
client library's process metrics, a few lines that change by the second, follow it, read at most
once a second; the two are sent one after the other, never joined.

Content negotiation is prometheus_client's own (`choose_encoder`): OpenMetrics when the scraper
asks for it, the text format otherwise. gzip, when accepted, compresses the cached part once and
keeps the compressor's state, so a fresh answer only compresses its process lines.
"""

from __future__ import annotations

import threading
import time
import zlib
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from slotwatch.serve.collector import process_registry
from slotwatch.serve.render import Renderer
from slotwatch.serve.store import Snapshot

OPENMETRICS = "application/openmetrics-text"
GZIP_LEVEL = 3  # at 1,000 slots: 6 ms and 16x smaller; level 6 takes 4x longer for 9% less
PROCESS_TTL = 1.0  # seconds the process metrics of an answer may be old: a burst shares them


class SnapshotSource(Protocol):
    def snapshot(self) -> Snapshot: ...


def accepts_gzip(accept_encoding: str | None) -> bool:
    """True when `gzip` is listed without `q=0` (RFC 9110 §12.5.3)."""
    for item in (accept_encoding or "").split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() in ("gzip", "x-gzip"):
            q = params.strip().lower().removeprefix("q=")
            try:
                return not params or float(q) > 0
            except ValueError:
                return True
    return False


@dataclass
class _Part:
    """One format's render of one snapshot, and its gzip stream kept open at the end."""

    snapshot: Snapshot
    body: bytes
    # The gzip stream of `body`, flushed but not finished, and its compressor positioned there.
    gzip: tuple[bytes, Any] | None = None

    def gzipped(self, tail: bytes) -> bytes:
        if self.gzip is None:
            compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
            head = compressor.compress(self.body) + compressor.flush(zlib.Z_SYNC_FLUSH)
            self.gzip = (head, compressor)
        head, compressor = self.gzip
        state = compressor.copy()
        return head + state.compress(tail) + state.flush()


@dataclass(frozen=True, slots=True)
class _Body:
    snapshot: Snapshot
    tail_at: float  # when the process metrics in it were read
    chunks: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Response:
    chunks: tuple[bytes, ...]  # sent one after the other: the cached render is never copied
    content_type: str
    content_encoding: str | None

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)


class Exposition:
    """Answers /metrics from the store's latest snapshot; never reads the database.

    A whole answer is kept per format and encoding until the snapshot changes or its process
    metrics are `process_ttl` seconds old, so a burst of scrapers is served the same bytes.
    """

    def __init__(
        self,
        store: SnapshotSource,
        process: CollectorRegistry | None = None,
        *,
        process_ttl: float = PROCESS_TTL,
    ) -> None:
        self._store = store
        self._process = process if process is not None else process_registry()
        self._process_ttl = process_ttl
        self._lock = threading.Lock()
        self._parts: dict[bool, _Part] = {}
        self._renderers = {False: Renderer(), True: Renderer(openmetrics=True)}
        self._tails: dict[bool, tuple[float, bytes]] = {}
        self._bodies: dict[tuple[bool, bool], _Body] = {}
        self.renders = 0  # how many times a snapshot was rendered: once per snapshot and format

    def response(self, accept: str | None, accept_encoding: str | None) -> Response:
        _, content_type = choose_encoder(accept or "")
        openmetrics = content_type.startswith(OPENMETRICS)
        packed = accepts_gzip(accept_encoding)
        encoding = "gzip" if packed else None
        snapshot = self._store.snapshot()
        key = (openmetrics, packed)
        body = self._bodies.get(key)
        if body is None or not self._fresh(body, snapshot):
            with self._lock:
                body = self._bodies.get(key)
                if body is None or not self._fresh(body, snapshot):
                    body = self._bodies[key] = self._build(snapshot, openmetrics, packed)
        return Response(body.chunks, content_type, encoding)

    def _fresh(self, body: _Body, snapshot: Snapshot) -> bool:
        return body.snapshot is snapshot and time.monotonic() - body.tail_at < self._process_ttl

    def _build(self, snapshot: Snapshot, openmetrics: bool, packed: bool) -> _Body:
        """Under the lock: reuse this snapshot's render and recent process lines if there are."""
        part = self._parts.get(openmetrics)
        if part is None or part.snapshot is not snapshot:
            part = _Part(snapshot, self._renderers[openmetrics].render(snapshot))
            self._parts[openmetrics] = part
            self.renders += 1
        tail_at, tail = self._tails.get(openmetrics, (-self._process_ttl, b""))
        if time.monotonic() - tail_at >= self._process_ttl:
            tail_at = time.monotonic()
            tail = (generate_openmetrics if openmetrics else generate_latest)(self._process)
            self._tails[openmetrics] = (tail_at, tail)
        return _Body(snapshot, tail_at, (part.gzipped(tail),) if packed else (part.body, tail))
