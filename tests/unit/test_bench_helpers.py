"""The benchmark's own arithmetic: its percentile and its bound on a Python exporter (pure)."""

from __future__ import annotations

import pytest

from bench.scale import least_exporter, percentile


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        (list(range(1, 101)), 0.99, 99),  # p99 of 100 values: the 99th
        (list(range(1, 41)), 0.99, 40),  # of 40: the 40th, the largest
        (list(range(1, 41)), 0.5, 20),
        ([3.0], 0.99, 3.0),
        ([5, 1, 4, 2, 3], 0.0, 1),  # unordered input; q = 0 is the least
    ],
)
def test_percentile_is_the_nearest_rank(values: list[float], q: float, expected: float) -> None:
    assert percentile(values, q) == expected


def test_the_least_exporter_runs_the_statement_and_writes_every_series() -> None:
    body = (
        b"# HELP slotwatch_up Whether the last poll worked.\n"
        b"# TYPE slotwatch_up gauge\n"
        b'slotwatch_up{target="default"} 1.0\n'
        b'slotwatch_slot_lag_bytes{slot="a b",target="default"} 4096.0\n'
        b'slotwatch_slot_invalidation_eta_seconds{slot="a",target="default"} +Inf\n'
        b'slotwatch_slot_wal_budget_ratio{slot="a",target="default"} NaN\n'
    )
    calls: list[int] = []
    poll = least_exporter(lambda: calls.append(1), body)
    written = poll()
    assert isinstance(written, bytes)
    assert calls == [1]
    lines = written.decode().splitlines()
    assert lines == [
        'slotwatch_up{target="default"} 1.0',
        'slotwatch_slot_lag_bytes{slot="a b",target="default"} 4096.0',
        'slotwatch_slot_invalidation_eta_seconds{slot="a",target="default"} inf',
        'slotwatch_slot_wal_budget_ratio{slot="a",target="default"} nan',
    ]
    poll()
    assert calls == [1, 1]  # the statement runs at every poll
