"""A fleet on one cluster: the overlap warning names pairs, but never floods the journal."""

from __future__ import annotations

from dataclasses import replace

from structlog.testing import capture_logs

from bench.run import synthetic_poll
from slotwatch.model import Thresholds
from slotwatch.serve.store import TargetView
from slotwatch.wiring import OVERLAP_WARNINGS, Recorder


def test_hundreds_of_targets_on_one_cluster_log_a_bounded_number_of_warnings() -> None:
    names = [f"db{k:03d}" for k in range(300)]  # 44,850 overlapping pairs
    recorder = Recorder(
        [TargetView(n, "powersync", "powersync_selfhost%", Thresholds()) for n in names]
    )
    with capture_logs() as logs:
        for round_ in range(2):
            for name in names:
                polled = synthetic_poll(name, round_, [])
                assert polled.server is not None
                server = replace(polled.server, system_identifier=7_000_000_000)
                recorder.record_poll(replace(polled, server=server))
    overlaps = [e for e in logs if "same slots twice" in e["event"]]
    assert len(overlaps) == OVERLAP_WARNINGS + 1
    assert "further overlaps are not logged" in overlaps[-1]["event"]
    pairs = {frozenset((e["target"], e["other_target"])) for e in overlaps[:-1]}
    assert len(pairs) == OVERLAP_WARNINGS
