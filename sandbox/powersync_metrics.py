"""A stand-in for PowerSync's own Prometheus endpoint (``telemetry.prometheus_port``): a real HTTP
server on 127.0.0.1 whose replication counters the test drives.

It serves, at any path, the Prometheus text PowerSync 1.25 serves for replication:
``powersync_rows_replicated_total``, ``powersync_data_replicated_bytes_total``,
``powersync_transactions_replicated_total``, ``powersync_chunks_replicated_total`` (counters, 0
from the start) and ``powersync_replication_lag_seconds`` (a gauge, absent until
:attr:`PowerSyncMetrics.lag_seconds` is set: PowerSync has none before its first stream is live).
Rendered with prometheus_client, so the text is what a real exposition library writes.

Where the counters come from:

- :meth:`follow` a :class:`sandbox.replicator.Replicator`: they are its own counts, so they rise
  while it applies a large transaction, ``chunks`` rises on bare keepalives too, and all stay
  flat while it is frozen or detached, as PowerSync's do;
- or :meth:`add` by hand, for a consumer whose account the test writes itself.

Modes (:meth:`set_mode`): ``ok``; ``fail`` answers 503; ``hang`` holds the request unanswered
until :meth:`release`, a change of mode, or the server stops (a frozen node process: its endpoint
times out).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from http import HTTPStatus

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sandbox.replicator import Progress, Replicator
from sandbox.standin_http import HTTPStandin, StandinHandler

MODES = ("ok", "fail", "hang")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# name without _total, HELP text as PowerSync registers it, field of Progress
COUNTERS = (
    ("powersync_data_replicated_bytes", "Uncompressed size of replicated data", "bytes"),
    ("powersync_rows_replicated", "Total number of replicated rows", "rows"),
    (
        "powersync_transactions_replicated",
        "Total number of replicated transactions",
        "transactions",
    ),
    ("powersync_chunks_replicated", "Total number of replication chunks", "chunks"),
)


class _Collector(Collector):
    def __init__(self, owner: PowerSyncMetrics) -> None:
        self.owner = owner

    def collect(self) -> Iterator[Metric]:
        progress = self.owner.progress
        for name, documentation, attribute in COUNTERS:
            yield CounterMetricFamily(name, documentation, value=getattr(progress, attribute))
        lag = self.owner.lag_seconds
        if lag is not None:
            yield GaugeMetricFamily(
                "powersync_replication_lag_seconds",
                "Replication lag between the source database and PowerSync instance",
                value=lag,
            )


class _Handler(StandinHandler["PowerSyncMetrics"]):
    content_type = CONTENT_TYPE

    def _serve(self, mode: str) -> None:
        if mode == "fail":
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, b"unavailable\n")
            return
        self._send(HTTPStatus.OK, generate_latest(self.server.owner.registry))


class PowerSyncMetrics(HTTPStandin):
    """The endpoint on 127.0.0.1 (a free port), started by :meth:`start` or ``with``."""

    modes = MODES

    def __init__(self, lag_seconds: float | None = None) -> None:
        self.lag_seconds = lag_seconds
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))
        self._manual = Progress()
        self._source: Callable[[], Progress] | None = None
        super().__init__(_Handler)
        self._thread_name = "powersync-metrics"

    @property
    def url(self) -> str:
        """The URL ``SLOTWATCH_CONSUMER_METRICS_URL`` takes."""
        return f"http://127.0.0.1:{self.port}/metrics"

    @property
    def progress(self) -> Progress:
        """The counters served now: the followed consumer's plus whatever was added by hand."""
        with self._lock:
            manual, source = self._manual, self._source
        return manual + source() if source is not None else manual

    def follow(self, replicator: Replicator | None) -> None:
        """Serve ``replicator``'s own counts from now on (None: stop following, counters stay)."""
        with self._lock:
            if self._source is not None:
                # Keep what was served so far: a counter never goes back.
                self._manual = self._manual + self._source()
            self._source = (lambda: replicator.progress) if replicator is not None else None

    def add(
        self,
        *,
        rows: int = 0,
        bytes: int = 0,  # noqa: A002 - the counter's own name
        transactions: int = 0,
        chunks: int = 0,
    ) -> None:
        """Move the hand-driven counters forward."""
        if min(rows, bytes, transactions, chunks) < 0:
            raise ValueError("counters only go up")
        with self._lock:
            self._manual = self._manual + Progress(rows, bytes, transactions, chunks)
