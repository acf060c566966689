"""The peers slotwatch is measured against: a one-query-per-view poller and labelled gauges.

Each peer produces exactly what slotwatch produces, so that a ratio compares designs, not
features: the naive exporter returns the same `ServerRow` and `SlotRow`s as `db.fetch`, and the
labelled-gauge registry exposes the same series, line for line, as slotwatch's collector.
"""

from __future__ import annotations

from typing import Any

import psycopg
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, Metric

from slotwatch.model import ServerRow, SlotRow
from slotwatch.patterns import like_pattern
from slotwatch.serve.collector import ProcessCounters

# Each statement carries a marker, as slotwatch's do, so a DBA can find it in pg_stat_activity.

_SLOTS = (
    "/* naive-exporter */ SELECT slot_name, plugin, slot_type, database, temporary, active,"
    " active_pid,"
    " pg_wal_lsn_diff(restart_lsn, '0/0'), pg_wal_lsn_diff(confirmed_flush_lsn, '0/0'),"
    " wal_status, safe_wal_size, age(catalog_xmin)"
    " FROM pg_replication_slots WHERE slot_name LIKE %(slot_like)s ESCAPE '\\'"
    " ORDER BY slot_name"
)
_SENDERS = (
    "/* naive-exporter */ SELECT pid, application_name, state, pg_wal_lsn_diff(sent_lsn, '0/0')"
    " FROM pg_stat_replication"
)
_SLOT_STATS = (
    "/* naive-exporter */ SELECT slot_name, spill_bytes, stream_bytes, total_bytes"
    " FROM pg_stat_replication_slots WHERE slot_name LIKE %(slot_like)s ESCAPE '\\'"
)
_SERVER = (
    "/* naive-exporter */ SELECT current_setting('server_version_num')::int, pg_is_in_recovery(),"
    " pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0'), extract(epoch FROM now())"
)
_SETTINGS = (
    "/* naive-exporter */ SELECT name, setting::bigint, unit FROM pg_settings"
    " WHERE name IN ('max_slot_wal_keep_size', 'wal_segment_size', 'wal_sender_timeout')"
)
_WALDIR = "/* naive-exporter */ SELECT coalesce(sum(size), 0) FROM pg_ls_waldir()"
_BUSY = (
    "/* naive-exporter */ SELECT DISTINCT datname FROM pg_stat_activity"
    " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
    " AND state IN ('active', 'idle in transaction')"
    " AND application_name LIKE %(consumer_like)s ESCAPE '\\'"
)
STATEMENTS_PER_POLL = 7

_UNIT_BYTES = {None: 1, "B": 1, "kB": 1024, "8kB": 8192, "MB": 1024**2, "GB": 1024**3}


class NaiveExporter:
    """Reads the facts of one slotwatch poll the way exporters do: one statement per view."""

    def __init__(self, conn: psycopg.Connection[Any], slot_pattern: str, consumer_app: str) -> None:
        self._conn = conn
        self._params = {
            "slot_like": like_pattern(slot_pattern),
            "consumer_like": like_pattern(consumer_app),
        }

    def poll(self) -> tuple[ServerRow, tuple[SlotRow, ...]]:
        run = self._conn.execute
        slots = run(_SLOTS, self._params).fetchall()
        senders = {row[0]: row for row in run(_SENDERS).fetchall()}
        stats = {row[0]: row for row in run(_SLOT_STATS, self._params).fetchall()}
        server = run(_SERVER).fetchone()
        settings = {name: (value, unit) for name, value, unit in run(_SETTINGS).fetchall()}
        waldir = run(_WALDIR).fetchone()
        busy = {row[0] for row in run(_BUSY, self._params).fetchall()}
        assert server is not None
        assert waldir is not None
        keep, keep_unit = settings["max_slot_wal_keep_size"]
        segment, segment_unit = settings["wal_segment_size"]
        server_row = ServerRow(
            version_num=server[0],
            in_recovery=server[1],
            current_lsn=int(server[2]),
            max_slot_wal_keep_size=-1 if keep < 0 else keep * _UNIT_BYTES[keep_unit],
            wal_segment_size=segment * _UNIT_BYTES[segment_unit],
            wal_directory_bytes=int(waldir[0]),
            wal_sender_timeout=settings["wal_sender_timeout"][0] / 1000.0,
            server_epoch=float(server[3]),
        )
        rows = []
        for s in slots:
            sender = senders.get(s[6])
            stat = stats.get(s[0])
            rows.append(
                SlotRow(
                    name=s[0],
                    plugin=s[1],
                    slot_type=s[2],
                    database=s[3],
                    temporary=s[4],
                    active=s[5],
                    active_pid=s[6],
                    restart_lsn=_int(s[7]),
                    confirmed_flush_lsn=_int(s[8]),
                    wal_status=s[9],
                    safe_wal_size=s[10],
                    catalog_xmin_age=s[11],
                    sender_pid=sender[0] if sender else None,
                    sender_application_name=sender[1] if sender else None,
                    sender_state=sender[2] if sender else None,
                    sent_lsn=_int(sender[3]) if sender else None,
                    consumer_busy=s[3] in busy,
                    spill_bytes=stat[1] if stat else None,
                    stream_bytes=stat[2] if stat else None,
                    total_bytes=stat[3] if stat else None,
                )
            )
        return server_row, tuple(rows)


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


class LabelledGauges:
    """The same series as slotwatch's collector, held in labelled Gauges and Counters.

    This is the pattern STYLE.md warns about (series outlive their slot), kept here only as the
    yardstick for scrape cost: its scrape reads values already set, with no per-scrape build.
    Counters must be created with `prometheus_client.disable_created_metrics()` in force, so
    that they do not add `_created` series slotwatch does not export.
    """

    def __init__(self, families: list[Metric]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(ProcessCounters())  # slotwatch's own process lines, as it has
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self._metrics: dict[str, Gauge | Counter] = {}
        self._labels: dict[str, list[str]] = {}
        for family in families:
            # The family's declared label names, in order, so that an empty family (no probe
            # configured) declares the same labels and renders no sample, like slotwatch's.
            names = list(getattr(family, "_labelnames", ()))
            kind = Counter if isinstance(family, CounterMetricFamily) else Gauge
            self._metrics[family.name] = kind(
                family.name, family.documentation, names, registry=self.registry
            )
            self._labels[family.name] = names

    def update(self, families: list[Metric]) -> None:
        """What a labelled-gauge exporter does after each poll: set every series."""
        for family in families:
            metric = self._metrics[family.name]
            names = self._labels[family.name]
            for sample in family.samples:
                child = metric.labels(*(sample.labels[n] for n in names)) if names else metric
                if isinstance(child, Counter):
                    # A counter cannot be set; a real exporter would add the delta instead.
                    child.reset()
                    child.inc(sample.value)
                else:
                    child.set(sample.value)
