"""The collector, in process, over a hand-made snapshot: what an operator's scrape would read.

No database and no subprocess: tests/metrics_fixture.py writes every figure, so each series can
be checked against the value it must carry, and each absence against the reason for it.
"""

from __future__ import annotations

import re

import pytest
from metrics_fixture import GIB, KEEP, SLOTS, SNAPSHOT
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from slotwatch import __version__
from slotwatch.model import INF
from slotwatch.serve.collector import SlotwatchCollector, build_registry
from slotwatch.serve.metrics import COUNTER, FAMILIES, NAMES, Family
from slotwatch.serve.store import Snapshot

Sample = tuple[str, dict[str, str], float]


class _Fixed:
    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot

    def snapshot(self) -> Snapshot:
        return self._snapshot


def _exposition(snapshot: Snapshot = SNAPSHOT) -> str:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(SlotwatchCollector(_Fixed(snapshot)))
    return generate_latest(registry).decode()


@pytest.fixture(scope="module")
def samples() -> list[Sample]:
    return [
        (s.name, s.labels, s.value)
        for family in text_string_to_metric_families(_exposition())
        for s in family.samples
    ]


def _find(samples: list[Sample], name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
    return [
        (lbl, value)
        for n, lbl, value in samples
        if n == name and all(lbl.get(k) == v for k, v in labels.items())
    ]


def _value(samples: list[Sample], name: str, **labels: str) -> float | None:
    found = _find(samples, name, **labels)
    assert len(found) <= 1, found
    return found[0][1] if found else None


HEALTHY, OVERFULL, AT_RISK, LOST = (view.row.name for view in SLOTS)


def test_every_family_of_the_table_is_exposed_with_its_help_and_type() -> None:
    text = _exposition()
    for family in FAMILIES:
        assert f"# HELP {family.name} {family.help}\n" in text
        assert f"# TYPE {family.name} {family.type}\n" in text


def test_every_exposed_sample_name_is_declared_under_that_name() -> None:
    # grep for a name seen on /metrics finds its declaration: counters are declared with _total.
    exposed = set(re.findall(r"^(slotwatch_\w+?)(?:\{| )", _exposition(), flags=re.MULTILINE))
    assert exposed
    assert exposed <= NAMES
    assert {f.name for f in FAMILIES if f.type == COUNTER} <= exposed


def test_a_healthy_slot_reads_as_the_fixture_wrote_it(samples: list[Sample]) -> None:
    slot = {"target": "prod", "slot": HEALTHY}
    assert _value(samples, "slotwatch_slot_lag_bytes", **slot) == 4096
    assert _value(samples, "slotwatch_slot_retained_wal_bytes", **slot) == 20 * 1024 * 1024
    assert _value(samples, "slotwatch_slot_active", **slot) == 1
    assert _value(samples, "slotwatch_slot_sent_lag_bytes", **slot) == 0
    assert _value(samples, "slotwatch_slot_invalidation_eta_seconds", **slot) == INF
    assert _value(samples, "slotwatch_slot_decoded_bytes_total", **slot) == 123_456_789
    states = {lbl["state"]: v for lbl, v in _find(samples, "slotwatch_slot_state", **slot)}
    assert states == {
        "lost": 0,
        "at_risk": 0,
        "snapshotting": 0,
        "inactive": 0,
        "wedged": 0,
        "lagging": 0,
        "healthy": 1,
    }
    statuses = {
        lbl["wal_status"]: v for lbl, v in _find(samples, "slotwatch_slot_wal_status", **slot)
    }
    assert statuses == {"reserved": 1, "extended": 0, "unreserved": 0, "lost": 0}
    assert _find(samples, "slotwatch_slot_info", **slot) == [
        ({**slot, "plugin": "pgoutput", "database": "app", "slot_type": "logical"}, 1)
    ]


def test_a_lost_slot_leaves_out_what_postgresql_no_longer_reports(samples: list[Sample]) -> None:
    slot = {"target": "prod", "slot": LOST}
    for name in (
        "slotwatch_slot_lag_bytes",
        "slotwatch_slot_retained_wal_bytes",
        "slotwatch_slot_safe_wal_size_bytes",
        "slotwatch_slot_wal_budget_ratio",
        "slotwatch_slot_wal_status",
        "slotwatch_slot_catalog_xmin_age",
        "slotwatch_slot_sent_lag_bytes",
        "slotwatch_slot_spill_bytes_total",
    ):
        assert _find(samples, name, **slot) == [], name
    assert _value(samples, "slotwatch_slot_state", **slot, state="lost") == 1
    assert _value(samples, "slotwatch_slot_flush_stall_seconds", **slot) == 612.25
    assert _find(samples, "slotwatch_slot_info", **slot)[0][0]["database"] == ""


def test_a_label_value_with_quotes_backslashes_and_newlines_survives(
    samples: list[Sample],
) -> None:
    info = _find(samples, "slotwatch_slot_info", target="prod", slot=AT_RISK)
    assert info[0][0]["database"] == 'we"ird\\db\nname'


def test_the_budget_ratio_stays_within_zero_and_one(samples: list[Sample]) -> None:
    # safe_wal_size right after a checkpoint counts the partly filled segment: 4 GiB + 14 MiB
    # over a 4 GiB budget must read as all of it left, not 100.3%; unreserved reads as none.
    overfull = next(v for v in SLOTS if v.row.name == OVERFULL)
    assert overfull.row.safe_wal_size is not None
    assert overfull.row.safe_wal_size > KEEP
    ratios = {lbl["slot"]: v for lbl, v in _find(samples, "slotwatch_slot_wal_budget_ratio")}
    assert ratios == {HEALTHY: 0.5, OVERFULL: 1.0, AT_RISK: 0.0}
    assert _value(samples, "slotwatch_slot_safe_wal_size_bytes", slot=OVERFULL) == (
        4 * GIB + 14 * 1024 * 1024
    )


def test_a_target_that_is_down_exports_up_0_and_its_errors_but_no_server_figures(
    samples: list[Sample],
) -> None:
    assert _value(samples, "slotwatch_up", target="replica") == 0
    assert _value(samples, "slotwatch_up", target="prod") == 1
    assert _value(samples, "slotwatch_poll_errors_total", target="replica", reason="timeout") == 7
    assert len(_find(samples, "slotwatch_poll_errors_total", target="replica")) == 6
    assert _value(samples, "slotwatch_poll_duration_seconds", target="replica") == 5.0
    for name in (
        "slotwatch_last_poll_success_timestamp_seconds",
        "slotwatch_server_version_num",
        "slotwatch_wal_written_bytes_total",
        "slotwatch_matched_slots",
    ):
        assert _find(samples, name, target="replica") == [], name
    assert _find(samples, "slotwatch_slot_info", target="replica") == []
    assert _value(samples, "slotwatch_matched_slots", target="prod") == len(SLOTS)
    assert _value(samples, "slotwatch_server_version_num", target="prod") == 150010


def test_probe_series_carry_target_and_probe(samples: list[Sample]) -> None:
    assert _value(samples, "slotwatch_liveness_up", target="prod", probe="powersync") == 1
    assert _value(samples, "slotwatch_liveness_status_code", target="prod") == 200
    assert _value(samples, "slotwatch_liveness_touched_age_seconds", target="prod") == 1.5
    assert _value(samples, "slotwatch_liveness_up", target="replica", probe="api") == 0
    assert _find(samples, "slotwatch_liveness_status_code", target="replica") == []
    assert _find(samples, "slotwatch_build_info") == [({"version": __version__}, 1)]


UNIT_WORDS = {
    "_bytes": "bytes",
    "_bytes_total": "bytes",
    "_seconds": "seconds",
    "_timestamp_seconds": "unix time in seconds",
    "_ratio": "0 to 1",
    "_bytes_per_second": "bytes of wal written per second",
}


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_each_help_is_a_sentence_that_names_its_unit(family: Family[object]) -> None:
    assert family.help[0].isupper() or family.help[0].isdigit(), family.help
    assert family.help.endswith("."), family.help
    assert len(family.help.split()) >= 6, family.help
    for suffix, word in sorted(UNIT_WORDS.items(), key=lambda kv: -len(kv[0])):
        if family.name.endswith(suffix):
            assert word in family.help.lower(), f"{family.name}: HELP should say '{word}'"
            break


def test_registration_describes_without_reading_the_store() -> None:
    class Untouchable:
        def snapshot(self) -> Snapshot:
            raise AssertionError("describe() read the store")

    build_registry(Untouchable())  # registers, so describes: raises if it read the store
    described = [m.name for m in SlotwatchCollector(Untouchable()).describe()]
    assert len(described) == len(set(described)) == len(FAMILIES)
