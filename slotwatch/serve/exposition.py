"""The /metrics body: rendered once per snapshot, negotiated and compressed per request.

The snapshot only changes when a poll or probe lands, so its families are rendered on the first
scrape after a change and kept, keyed by the snapshot's identity; concurrent scrapes of the same
snapshot wait for that one render instead of repeating it. The renderer writes the table
(`serve.metrics`) straight to text, escaping each label value once per render, and is
byte-for-byte what prometheus_client's `generate_latest` (or its OpenMetrics twin) writes for the
same families (tests/unit/test_exposition.py holds it to that). The client library's process
metrics, a few lines that change by the second, are appended, read at most once a second.

Content negotiation is prometheus_client's own (`choose_encoder`): OpenMetrics when the scraper
asks for it, the text format otherwise. gzip, when accepted, compresses the cached part once and
keeps the compressor's state, so a fresh answer only compresses its process lines.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.utils import floatToGoString

from slotwatch.serve.collector import process_registry
from slotwatch.serve.metrics import COUNTER, FAMILIES, Family
from slotwatch.serve.store import Snapshot

OPENMETRICS = "application/openmetrics-text"
# The library's own number format (Go's, e.g. 1.7645900000123e+09), so the bytes match.
_go_float: Callable[[float], str] = floatToGoString
GZIP_LEVEL = 3  # at 1,000 slots: 6 ms and 16x smaller; level 6 takes 4x longer for 9% less
PROCESS_TTL = 1.0  # seconds the process metrics of an answer may be old: a burst shares them


class SnapshotSource(Protocol):
    def snapshot(self) -> Snapshot: ...


def _escape_help(text: str, openmetrics: bool) -> str:
    text = text.replace("\\", r"\\").replace("\n", r"\n")
    return text.replace('"', r"\"") if openmetrics else text


def _escape_label(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


@dataclass(frozen=True, slots=True)
class _Prepared:
    """What a render needs of one family that does not depend on the snapshot."""

    family: Family[Any]
    head: str  # its # HELP and # TYPE lines
    signature: tuple[str, ...]  # label names in exposition order (sorted, as the library does)
    order: tuple[tuple[int, str], ...]  # (index into the sample's values, 'name="')


def _prepare(family: Family[Any], openmetrics: bool) -> _Prepared:
    # The text format names a counter family after its samples; OpenMetrics without `_total`.
    shown = family.name.removesuffix("_total") if openmetrics and family.type == COUNTER else (
        family.name
    )
    head = (
        f"# HELP {shown} {_escape_help(family.help, openmetrics)}\n"
        f"# TYPE {shown} {family.type}\n"
    )
    names = family.label_names
    order = tuple(sorted(((i, f'{n}="') for i, n in enumerate(names)), key=lambda p: p[1]))
    return _Prepared(family, head, tuple(sorted(names)), order)


_TEXT = tuple(_prepare(f, openmetrics=False) for f in FAMILIES)
_OPENMETRICS = tuple(_prepare(f, openmetrics=True) for f in FAMILIES)


def render(snapshot: Snapshot, *, openmetrics: bool = False) -> bytes:
    """The table's families for `snapshot`, exactly as the client library would write them
    (for OpenMetrics, without the closing `# EOF`: the process metrics follow)."""
    out: list[str] = []
    escaped: dict[str, str] = {}
    label_sets: dict[tuple[tuple[str, ...], tuple[str, ...]], str] = {}
    numbers: dict[float, str] = {}
    for prepared in _OPENMETRICS if openmetrics else _TEXT:
        out.append(prepared.head)
        name = prepared.family.name
        for values, value in prepared.family.samples(snapshot):
            key = (prepared.signature, values)
            labels = label_sets.get(key)
            if labels is None:
                parts = []
                for index, prefix in prepared.order:
                    raw = values[index]
                    text = escaped.get(raw)
                    if text is None:
                        text = escaped[raw] = _escape_label(raw)
                    parts.append(f'{prefix}{text}"')
                labels = label_sets[key] = "{" + ",".join(parts) + "}" if parts else ""
            number = numbers.get(value)
            if number is None:
                number = numbers[value] = _go_float(value)
            out.append(f"{name}{labels} {number}\n")
    return "".join(out).encode()


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
    body: bytes


@dataclass(frozen=True, slots=True)
class Response:
    body: bytes
    content_type: str
    content_encoding: str | None


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
        return Response(body.body, content_type, encoding)

    def _fresh(self, body: _Body, snapshot: Snapshot) -> bool:
        return body.snapshot is snapshot and time.monotonic() - body.tail_at < self._process_ttl

    def _build(self, snapshot: Snapshot, openmetrics: bool, packed: bool) -> _Body:
        """Under the lock: reuse this snapshot's render and recent process lines if there are."""
        part = self._parts.get(openmetrics)
        if part is None or part.snapshot is not snapshot:
            part = _Part(snapshot, render(snapshot, openmetrics=openmetrics))
            self._parts[openmetrics] = part
            self.renders += 1
        tail_at, tail = self._tails.get(openmetrics, (-self._process_ttl, b""))
        if time.monotonic() - tail_at >= self._process_ttl:
            tail_at = time.monotonic()
            tail = (generate_openmetrics if openmetrics else generate_latest)(self._process)
            self._tails[openmetrics] = (tail_at, tail)
        return _Body(snapshot, tail_at, part.gzipped(tail) if packed else part.body + tail)
