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
SECTIONS = ("poll", "scrape", "memory", "cpu", "scale")
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

pytestmark = pytest.mark.timeout(400)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, object]]:
    output = tmp_path_factory.mktemp("bench") / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=360,
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


def test_the_exporter_comparison_is_written_by_the_command(
    quick_run: tuple[str, dict[str, object]], tmp_path_factory: pytest.TempPathFactory
) -> None:
    # The real postgres_exporter was run beside slotwatch at each N, and the report says so.
    _, results = quick_run
    scaled = results["scale"]
    assert isinstance(scaled, dict)
    assert "postgres_exporter" in scaled["exporter"]
    assert sorted(scaled["per_n"]) == ["1", "10"]
    for rows in scaled["per_n"].values():
        by_name = {row["name"]: row for row in rows}
        assert by_name["statements per poll / scrape"]["slotwatch"] == 1
        assert by_name["series"]["exporter"] > 0
        for name in ("/metrics median", "server time per poll / scrape", "RSS after burst"):
            assert by_name[name]["ratio"] > 0, name
        # The full poll against the floor, and split: its statement alone against the same
        # floor, and the client's share, which is what is left of the full poll.
        full = by_name["full poll vs bare slot query"]
        statement = by_name["its statement alone vs bare slot query"]
        client = by_name["full poll less its statement (parse, judge, render)"]
        least = by_name["its statement + each series' value written, no judging"]
        streaming = by_name["full poll, every slot streamed, vs bare slot query"]
        for row in (full, statement, least, streaming):
            assert row["detail"]["floor_ms"] > 0
            assert row["detail"]["ratio_to_floor"] > 0
        assert math.isclose(client["slotwatch"], full["slotwatch"] - statement["slotwatch"])
    series = [
        next(r for r in rows if r["name"] == "series")["slotwatch"]
        for _, rows in sorted(scaled["per_n"].items(), key=lambda kv: int(kv[0]))
    ]
    assert series[0] < series[1]
    assert {row["name"].split(" vs ")[0] for row in scaled["startup"]} == {
        "slotwatch --help",
        "slotwatch version",
    }
    first_round = scaled["fleet"][0]
    assert first_round["detail"]["within_one_interval"] is True
    report = next(tmp_path_factory.getbasetemp().rglob("results.md")).read_text()
    assert "## 1 slot" in report
    assert "## 10 slots" in report
    assert "| its statement alone vs bare slot query (floor " in report
    assert "| its statement + each series' value written, no judging (floor " in report
    assert " us a slot) | ms |" in report
    assert "load average" in report
