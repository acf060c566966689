"""The scheduler has a worker for every job that may run at once, so no target waits for another."""

from __future__ import annotations

from pydantic import SecretStr

from slotwatch.config.settings import Target
from slotwatch.model import Thresholds
from slotwatch.service import (
    FIRST_POLL_BATCH,
    FIRST_POLL_SPACING,
    first_poll_offsets,
    workers_for,
)


def _target(name: str, liveness_url: str | None) -> Target:
    return Target(
        name=name,
        dsn=SecretStr("host=127.0.0.1"),
        admin_dsn=None,
        slot_pattern="powersync_selfhost%",
        liveness_url=liveness_url,
        probe_name="powersync",
        consumer_app="powersync/%",
        thresholds=Thresholds(),
    )


def test_every_poll_and_every_probe_has_its_own_worker() -> None:
    probed = tuple(_target(f"p{k}", "http://127.0.0.1:8080/") for k in range(300))
    bare = tuple(_target(f"b{k}", None) for k in range(200))
    # 500 polls and 300 probes can all be in flight at once (each job runs one at a time).
    assert workers_for(probed + bare) >= 500 + 300
    assert workers_for(()) >= 1


def test_a_fleets_first_polls_are_spread_within_one_interval() -> None:
    # 500 targets: ten every 200 ms, all within 10 s of the start (a 15 s interval).
    offsets = first_poll_offsets(500, 15.0)
    assert offsets[:FIRST_POLL_BATCH] == [0.0] * FIRST_POLL_BATCH
    assert offsets[FIRST_POLL_BATCH] == FIRST_POLL_SPACING
    assert len(set(offsets)) == 500 // FIRST_POLL_BATCH
    assert max(offsets) < 10.0
    # A fleet too large for that spacing in one interval is spread over the interval instead.
    crowded = first_poll_offsets(3000, 15.0)
    assert max(crowded) < 15.0
    assert len(set(crowded)) == 3000 // FIRST_POLL_BATCH
    # A small fleet is polled at once; none, nothing.
    assert first_poll_offsets(FIRST_POLL_BATCH, 15.0) == [0.0] * FIRST_POLL_BATCH
    assert first_poll_offsets(0, 15.0) == []
