"""The benchmark runs end to end and writes results a reader (or a CI job) can rely on.

It asserts the shape of the results, never the timings: a busy machine may make any figure
slow, but it must not make the benchmark crash, skip a section or write a malformed file.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = ("poll", "scrape", "memory", "cpu")
# Every comparison bench/README.md promises, by the start of its name.
EXPECTED = (
    "poll latency p50",
    "poll latency p95",
    "poll client CPU",
    "poll server exec",
    "scrape, 1 slot",
    "scrape, 10 slots",
    "scrape, 100 slots",
    "RSS after",
    "tracemalloc peak per slot",
    "observe+classify per slot",
)

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, object]]:
    output = tmp_path_factory.mktemp("bench") / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=200,
        check=False,
        cwd=ROOT,
    )
    assert proc.returncode == 0, f"bench failed:\n{proc.stdout}\n{proc.stderr[-4000:]}"
    return proc.stdout, json.loads(output.read_text())


def test_quick_run_covers_every_comparison(quick_run: tuple[str, dict[str, object]]) -> None:
    stdout, results = quick_run
    meta = results["meta"]
    assert isinstance(meta, dict)
    assert meta["quick"] is True
    assert sorted(meta["section_seconds"]) == sorted(SECTIONS)
    figures = results["figures"]
    assert isinstance(figures, list)
    names = [f["name"] for f in figures]
    for expected in EXPECTED:
        assert any(name.startswith(expected) for name in names), f"{expected!r} missing: {names}"
    for name in names:
        assert name in stdout, f"{name!r} not in the printed table"


def test_every_figure_is_a_well_formed_comparison(
    quick_run: tuple[str, dict[str, object]],
) -> None:
    _, results = quick_run
    figures = results["figures"]
    assert isinstance(figures, list)
    for f in figures:
        label = f["name"]
        assert f["unit"] in {"ms", "us", "KiB"}, label
        assert f["peer_name"], label
        for key in ("slotwatch", "peer", "ratio"):
            assert isinstance(f[key], float), (label, key)
            assert math.isfinite(f[key]), (label, key)
            assert f[key] > 0, (label, key)
        assert math.isclose(f["ratio"], f["slotwatch"] / f["peer"]), label
        if f["limit"] is None:
            assert f["met"] is None, label
            assert f["target"] == "info", label
        else:
            assert f["met"] is (f["ratio"] <= f["limit"]), label


def test_peers_did_the_same_work(quick_run: tuple[str, dict[str, object]]) -> None:
    # The scrape peer must expose as many series as slotwatch (bench/run.py refuses otherwise),
    # and the series count must grow with the slots, or the 100-slot figure measures nothing.
    _, results = quick_run
    figures = results["figures"]
    assert isinstance(figures, list)
    series = [f["detail"]["series"] for f in figures if f["name"].startswith("scrape,")]
    assert len(series) == 3
    assert series == sorted(series)
    assert series[0] < series[1] < series[2]
    poll = next(f for f in figures if f["name"] == "poll latency p50")
    assert poll["detail"]["statements"] == {"slotwatch": 1, "peer": 7}
    assert poll["detail"]["slots_matching"] == 2
