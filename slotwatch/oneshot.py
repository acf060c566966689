"""One poll and one probe of each target, for the one-shot verbs (status, check, drop)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from slotwatch.probe import Prober
from slotwatch.service import connections, target_views
from slotwatch.settings import Settings, Target
from slotwatch.store import Snapshot, Store


def poll_once(settings: Settings, targets: tuple[Target, ...]) -> Snapshot:
    """Poll and probe every target at once; a one-shot store knows it has no stall window."""
    store = Store(target_views(targets), one_shot=True)
    conns = connections(settings, targets)

    def one(target: Target) -> None:
        try:
            store.record_poll(conns[target.name].poll())
        finally:
            conns[target.name].close()
        if target.liveness_url is not None:
            prober = Prober(target.liveness_url, settings.probe_timeout)
            try:
                store.record_probe(target.name, prober.probe())
            finally:
                prober.close()

    with ThreadPoolExecutor(max_workers=max(1, len(targets))) as pool:
        list(pool.map(one, targets))
    return store.snapshot()
