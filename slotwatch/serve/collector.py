"""The metric table as prometheus_client families, for a registry (docs/contract.md §3).

A custom collector rather than labelled global gauges: a slot that vanishes from the snapshot
vanishes from /metrics, and a failed target exports `slotwatch_up 0` but no stale slot figures.
Every family, its HELP and its labels come from `serve.metrics.FAMILIES`; this module only
hands them to the client library (which also supplies the process metrics).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from slotwatch.logs import dropped_lines
from slotwatch.serve.metrics import COUNTER, FAMILIES, LOG_LINES_DROPPED, Family
from slotwatch.serve.store import Snapshot


class SnapshotSource(Protocol):
    def snapshot(self) -> Snapshot: ...


def client_family(family: Family[Any]) -> Metric:
    """An empty prometheus_client family for a table entry (counters lose `_total`: the
    client library adds it back to every sample)."""
    if family.type == COUNTER:
        return CounterMetricFamily(family.name, family.help, labels=family.label_names)
    return GaugeMetricFamily(family.name, family.help, labels=family.label_names)


def client_families(snapshot: Snapshot) -> Iterator[Metric]:
    """Every family of the table, filled from `snapshot`, in table order."""
    for family in FAMILIES:
        metric = client_family(family)
        for labels, value in family.samples(snapshot):
            metric.add_metric(list(labels), value)  # type: ignore[attr-defined]
        yield metric


class SlotwatchCollector(Collector):
    def __init__(self, store: SnapshotSource) -> None:
        self._store = store

    def describe(self) -> Iterator[Metric]:
        # Registration calls describe(): answer without touching the store or the database.
        return (client_family(family) for family in FAMILIES)

    def collect(self) -> Iterator[Metric]:
        return client_families(self._store.snapshot())


class ProcessCounters(Collector):
    """What the process counts between polls (`metrics.PROCESS_COUNTERS`), read when collected."""

    def collect(self) -> Iterator[Metric]:
        name, text = LOG_LINES_DROPPED
        # The client library adds `_total` back to a counter's sample.
        yield CounterMetricFamily(name.removesuffix("_total"), text, value=dropped_lines())


def process_registry() -> CollectorRegistry:
    """slotwatch's process counters, then the client library's process and platform metrics,
    on a registry of their own."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(ProcessCounters())
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


def build_registry(store: SnapshotSource) -> CollectorRegistry:
    """slotwatch's own registry: its collector, its process counters, and the process and
    platform metrics."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(SlotwatchCollector(store))
    registry.register(ProcessCounters())
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry
