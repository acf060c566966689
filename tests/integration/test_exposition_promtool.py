"""The fast renderer's output, as Prometheus' own linter reads it (real promtool, no daemon)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from metrics_fixture import SNAPSHOT, many_slots

from slotwatch.serve.exposition import Exposition
from slotwatch.serve.render import render
from slotwatch.serve.store import Snapshot

PROMTOOL = Path("/usr/bin/promtool")


class _Fixed:
    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot

    def snapshot(self) -> Snapshot:
        return self._snapshot


@pytest.mark.parametrize("snapshot", [SNAPSHOT, many_slots(1000)], ids=["fixture", "1000-slots"])
def test_promtool_accepts_the_rendered_exposition(snapshot: Snapshot) -> None:
    assert PROMTOOL.exists(), f"{PROMTOOL} is missing: apt-get install prometheus"
    body = Exposition(_Fixed(snapshot)).response(None, None).body  # with the process metrics
    assert body.startswith(render(snapshot))
    checked = subprocess.run(
        [str(PROMTOOL), "check", "metrics"],
        input=body,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == b""
    assert checked.stderr.strip() == b""
