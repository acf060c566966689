"""The benchmark's own arithmetic: its percentile, its bound on a Python exporter and its
streamed slots (pure)."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from bench.scale import least_exporter, percentile, streamed
from slotwatch.judge.memory import Memory
from slotwatch.model import PollResult, ServerRow, SlotRow, SlotState, Thresholds

GiB = 1024**3


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


def test_streamed_slots_each_follow_the_head_and_read_healthy() -> None:
    # The "every slot streamed" row must time the judgement of healthy streaming slots, each
    # with a trend of its own: not one shared fit, and not slots the judge calls wedged.
    rng = random.Random(3)  # noqa: S311 - positions, not secrets
    memory = Memory("bench", Thresholds())
    idle = tuple(
        SlotRow(
            f"powersync_selfhost{k}_{k:04x}",
            "pgoutput",
            "logical",
            "app",
            False,
            False,
            None,
            10_000,
            10_000,
            "reserved",
            4 * GiB,
            1,
        )
        for k in range(20)
    )
    judged = None
    for poll in range(50):  # past a full window of 15 s polls: every slot is forecast
        head = 10**9 + poll * 5_000_000
        server = ServerRow(150000, False, head, 4 * GiB, 16 * 1024**2, None, 60.0, 0.0)
        result = streamed(PollResult("bench", 1e9 + 15.0 * poll, 0.01, server, idle), rng)
        assert result.server is server
        for row in result.slots:
            assert row.active
            assert row.sent_lsn == head
            assert row.restart_lsn is not None
            assert row.confirmed_flush_lsn is not None
            assert row.restart_lsn <= row.confirmed_flush_lsn <= head
            assert row.safe_wal_size == 4 * GiB - (head - row.restart_lsn)
        judged = memory.judge(replace(result, started_at=1e9 + 15.0 * poll))
    assert judged is not None
    assert {view.assessment.state for view in judged.slots} == {SlotState.HEALTHY}
    assert len({view.row.restart_lsn for view in judged.slots}) == len(idle)
