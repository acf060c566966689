"""The /metrics answer: rendered once per snapshot, negotiated and compressed per request.

The snapshot only changes when a poll or probe lands, so its families are rendered
(`serve.render`) on the first scrape after a change, keyed by the snapshot's identity;
concurrent scrapes of the same snapshot wait for that one render instead of repeating it. The
client library's process metrics, a few lines that change by the second, follow it, read at most
once a second; the two are sent one after the other, never joined.

Content negotiation is prometheus_client's own (`choose_encoder`): OpenMetrics when the scraper
asks for it, the text format otherwise. What is kept of a render is its families compressed in
segments (`serve.gzipped`): a family the render did not write again keeps its segment, so a new
snapshot compresses only the families that changed (at 1,000 slots, mostly a few of 40, where
the whole body took 6 ms), and a gzip answer is the segments, then its process lines as the
final segment. The uncompressed body (2.2 MiB at 1,000 slots, where its gzip is 0.1) is made
from the segments only when a scraper asks for it, once per snapshot, and is not kept past it.
"""

from __future__ import annotations

import threading
import time
import weakref
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from slotwatch.serve import gzipped
from slotwatch.serve.collector import process_registry
from slotwatch.serve.render import Renderer
from slotwatch.serve.store import Snapshot

OPENMETRICS = "application/openmetrics-text"
GZIP_LEVEL = 3  # a 1,000-slot body in 6 ms, 16x smaller; level 6 takes 4x longer for 9% less
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
    """One format's render of one snapshot: its families' segments laid end to end, after the
    gzip header, and the CRC-32 and length of their text; the text itself only once asked for."""

    snapshot: weakref.ref[Snapshot]  # not kept alive by its render: its poll's data goes with it
    stream: bytes
    crc: int
    size: int
    body: bytes | None = None

    def gzipped(self, tail: bytes) -> tuple[bytes, bytes]:
        return self.stream, gzipped.ending(tail, self.crc, self.size, GZIP_LEVEL)

    def plain(self) -> bytes:
        if self.body is None:
            self.body = gzipped.inflated(memoryview(self.stream)[len(gzipped.HEADER) :])
        return self.body


@dataclass(frozen=True, slots=True)
class _Body:
    snapshot: weakref.ref[Snapshot]
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
        # Per format, its last render compressed (`_Part` takes its stream).
        self._streams: dict[bool, gzipped.Stream] = {}
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
        return body.snapshot() is snapshot and time.monotonic() - body.tail_at < self._process_ttl

    def _build(self, snapshot: Snapshot, openmetrics: bool, packed: bool) -> _Body:
        """Under the lock: reuse this snapshot's render and recent process lines if there are."""
        part = self._parts.get(openmetrics)
        if part is None or part.snapshot() is not snapshot:
            part = self._render(snapshot, openmetrics)
            self.renders += 1
            # What is kept of older snapshots goes, in either format: an uncompressed body
            # asked for once is not held for as long as nobody asks for one again.
            self._parts = {f: p for f, p in self._parts.items() if p.snapshot() is snapshot}
            self._bodies = {k: b for k, b in self._bodies.items() if b.snapshot() is snapshot}
            self._parts[openmetrics] = part
        tail_at, tail = self._tails.get(openmetrics, (-self._process_ttl, b""))
        if time.monotonic() - tail_at >= self._process_ttl:
            tail_at = time.monotonic()
            tail = (generate_openmetrics if openmetrics else generate_latest)(self._process)
            self._tails[openmetrics] = (tail_at, tail)
        chunks = part.gzipped(tail) if packed else (part.plain(), tail)
        return _Body(part.snapshot, tail_at, chunks)

    def _render(self, snapshot: Snapshot, openmetrics: bool) -> _Part:
        """The families of `snapshot`, compressed again only where they changed."""
        renderer = self._renderers[openmetrics]
        families = renderer.render(snapshot)
        stream = self._streams.pop(openmetrics, None) or gzipped.Stream(GZIP_LEVEL)
        try:
            stream.update(families)
        except BaseException:  # not kept: the next render must write every family again
            renderer.forget()
            raise
        self._streams[openmetrics] = stream
        return _Part(weakref.ref(snapshot), stream.data, stream.crc, stream.size)
