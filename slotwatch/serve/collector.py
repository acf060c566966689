"""Renders the latest snapshot as Prometheus metrics, fresh on every scrape (SPEC §3).

A custom collector rather than labelled global gauges: a slot that vanishes from the snapshot
vanishes from /metrics, and a failed target exports `slotwatch_up 0` but no stale slot figures.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from slotwatch import __version__
from slotwatch.model import WAL_STATUSES, SlotState
from slotwatch.serve.store import Store, TargetView

T = ["target"]
S = ["target", "slot"]
P = ["target", "probe"]


class _Families:
    """Every family slotwatch exports, created empty: the same set for describe() and collect()."""

    def __init__(self) -> None:
        g, c = GaugeMetricFamily, CounterMetricFamily
        self.build_info = g("slotwatch_build_info", "slotwatch version", labels=["version"])
        self.up = g("slotwatch_up", "1 if the last poll of the target succeeded", labels=T)
        self.poll_duration = g(
            "slotwatch_poll_duration_seconds", "Duration of the last poll", labels=T
        )
        self.last_success = g(
            "slotwatch_last_poll_success_timestamp_seconds",
            "When the last successful poll finished",
            labels=T,
        )
        self.poll_errors = c(
            "slotwatch_poll_errors", "Failed polls by reason", labels=[*T, "reason"]
        )
        self.polls_skipped = c(
            "slotwatch_polls_skipped",
            "Polls not started because the previous one was still running",
            labels=T,
        )
        self.version = g("slotwatch_server_version_num", "server_version_num", labels=T)
        self.wal_written = c(
            "slotwatch_wal_written_bytes",
            "Current WAL position as bytes since 0/0 (rate() is the WAL write rate)",
            labels=T,
        )
        self.wal_rate = g(
            "slotwatch_wal_rate_bytes_per_second", "WAL write rate over the recent window", labels=T
        )
        self.keep_size = g(
            "slotwatch_max_slot_wal_keep_size_bytes",
            "max_slot_wal_keep_size in bytes, -1 when unlimited",
            labels=T,
        )
        self.wal_dir = g("slotwatch_wal_directory_bytes", "Size of pg_wal", labels=T)
        self.matched = g(
            "slotwatch_matched_slots", "Slots whose name matches the pattern", labels=T
        )
        self.slot_info = g(
            "slotwatch_slot_info", "Slot facts", labels=[*S, "plugin", "database", "slot_type"]
        )
        self.active = g("slotwatch_slot_active", "1 if a walsender holds the slot", labels=S)
        self.lag = g(
            "slotwatch_slot_lag_bytes", "Current WAL position minus confirmed_flush_lsn", labels=S
        )
        self.retained = g(
            "slotwatch_slot_retained_wal_bytes", "Current WAL position minus restart_lsn", labels=S
        )
        self.safe = g(
            "slotwatch_slot_safe_wal_size_bytes", "safe_wal_size as PostgreSQL reports it", labels=S
        )
        self.budget_ratio = g(
            "slotwatch_slot_wal_budget_ratio",
            "Remaining WAL budget over the budget (safe_wal_size / max_slot_wal_keep_size)",
            labels=S,
        )
        self.wal_status = g(
            "slotwatch_slot_wal_status", "1 for the slot's wal_status", labels=[*S, "wal_status"]
        )
        self.state = g("slotwatch_slot_state", "1 for the slot's state", labels=[*S, "state"])
        self.stall = g(
            "slotwatch_slot_flush_stall_seconds",
            "How long confirmed_flush_lsn has not advanced while WAL waited behind it",
            labels=S,
        )
        self.inactive = g(
            "slotwatch_slot_inactive_seconds", "How long no walsender has held the slot", labels=S
        )
        self.eta = g(
            "slotwatch_slot_invalidation_eta_seconds",
            "Forecast seconds until the slot is invalidated or exhausts its WAL budget",
            labels=S,
        )
        self.xmin_age = g(
            "slotwatch_slot_catalog_xmin_age", "Age in transactions of catalog_xmin", labels=S
        )
        self.sent_lag = g(
            "slotwatch_slot_sent_lag_bytes",
            "Current WAL position minus the walsender's sent_lsn",
            labels=S,
        )
        self.spill = c("slotwatch_slot_spill_bytes", "Bytes spilled to disk by decoding", labels=S)
        self.stream = c("slotwatch_slot_stream_bytes", "Bytes streamed in progress", labels=S)
        self.decoded = c("slotwatch_slot_decoded_bytes", "Bytes decoded for the slot", labels=S)
        self.live_up = g("slotwatch_liveness_up", "1 if the liveness probe succeeded", labels=P)
        self.live_code = g(
            "slotwatch_liveness_status_code", "HTTP status of the last probe", labels=P
        )
        self.live_duration = g(
            "slotwatch_liveness_duration_seconds", "Duration of the last probe", labels=P
        )
        self.live_success = g(
            "slotwatch_liveness_last_success_timestamp_seconds",
            "When the probe last succeeded",
            labels=P,
        )
        self.live_touched = g(
            "slotwatch_liveness_touched_age_seconds",
            "Age of PowerSync's touched_at in the last probe",
            labels=P,
        )

    def all(self) -> list[Metric]:
        return list(vars(self).values())


class SlotwatchCollector(Collector):
    def __init__(self, store: Store) -> None:
        self._store = store

    def describe(self) -> Iterator[Metric]:
        # Registration calls describe(): answer without touching the store or the database.
        yield from _Families().all()

    def collect(self) -> Iterator[Metric]:
        f = _Families()
        f.build_info.add_metric([__version__], 1)
        for view in self._store.snapshot().targets:
            _target(f, view)
        yield from f.all()


def _target(f: _Families, view: TargetView) -> None:
    t = [view.name]
    f.up.add_metric(t, 1 if view.up else 0)
    for reason, count in view.poll_errors.items():
        f.poll_errors.add_metric([*t, reason], count)
    f.polls_skipped.add_metric(t, view.polls_skipped)
    if view.last_poll is not None:
        f.poll_duration.add_metric(t, view.last_poll.duration)
    if view.last_success is not None:
        f.last_success.add_metric(t, view.last_success)
    _probe(f, view)
    server = view.server
    if server is None:
        return
    f.version.add_metric(t, server.version_num)
    f.wal_written.add_metric(t, server.current_lsn)
    if view.wal_rate is not None:
        f.wal_rate.add_metric(t, view.wal_rate)
    f.keep_size.add_metric(t, server.max_slot_wal_keep_size)
    if server.wal_directory_bytes is not None:
        f.wal_dir.add_metric(t, server.wal_directory_bytes)
    f.matched.add_metric(t, len(view.slots))
    for slot in view.slots:
        row, a = slot.row, slot.assessment
        s = [view.name, row.name]
        f.slot_info.add_metric([*s, row.plugin or "", row.database or "", row.slot_type], 1)
        f.active.add_metric(s, 1 if row.active else 0)
        if a.lag_bytes is not None:
            f.lag.add_metric(s, a.lag_bytes)
        if a.retained_wal_bytes is not None:
            f.retained.add_metric(s, a.retained_wal_bytes)
        if row.safe_wal_size is not None:
            f.safe.add_metric(s, row.safe_wal_size)
        if a.wal_budget_ratio is not None:
            f.budget_ratio.add_metric(s, a.wal_budget_ratio)
        if row.wal_status is not None:
            for status in WAL_STATUSES:
                f.wal_status.add_metric([*s, status], 1 if row.wal_status == status else 0)
        for state in SlotState:
            f.state.add_metric([*s, state.value], 1 if a.state is state else 0)
        f.stall.add_metric(s, a.flush_stall_seconds)
        f.inactive.add_metric(s, a.inactive_seconds)
        f.eta.add_metric(s, a.invalidation_eta_seconds)
        if row.catalog_xmin_age is not None:
            f.xmin_age.add_metric(s, row.catalog_xmin_age)
        if a.sent_lag_bytes is not None:
            f.sent_lag.add_metric(s, a.sent_lag_bytes)
        for family, value in (
            (f.spill, row.spill_bytes),
            (f.stream, row.stream_bytes),
            (f.decoded, row.total_bytes),
        ):
            if value is not None:
                family.add_metric(s, value)


def _probe(f: _Families, view: TargetView) -> None:
    probe = view.probe
    if not view.probe_enabled or probe is None:
        return
    p = [view.name, view.probe_name]
    f.live_up.add_metric(p, 1 if probe.up else 0)
    if probe.status_code is not None:
        f.live_code.add_metric(p, probe.status_code)
    f.live_duration.add_metric(p, probe.duration)
    if view.probe_last_success is not None:
        f.live_success.add_metric(p, view.probe_last_success)
    if probe.touched_age is not None:
        f.live_touched.add_metric(p, probe.touched_age)


def build_registry(store: Store) -> CollectorRegistry:
    """slotwatch's own registry: its collector plus the process and platform metrics."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(SlotwatchCollector(store))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry
