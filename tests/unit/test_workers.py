"""The scheduler has a worker for every job that may run at once, so no target waits for another."""

from __future__ import annotations

from pydantic import SecretStr

from slotwatch.config.settings import Target
from slotwatch.model import Thresholds
from slotwatch.service import workers_for


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
