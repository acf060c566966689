"""An accelerated soak in CI: thousands of polls with slot churn, and the daemon stays flat.

bench/soak.py drives it (the long version runs from there for as long as one likes); here it
runs for a minute over four targets at the shortest interval the settings allow, while slots are
created and dropped without pause and the liveness stand-in fails every few seconds. The figures
after the warm-up and at the end must match: RSS within a few MiB, threads under their fixed
ceiling, fds within the sockets of the probes in flight, and /metrics back to the live slots.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.soak import soak
from sandbox.cluster import Cluster
from sandbox.installs import PgInstall

SECONDS = 60.0
TARGETS = 4
RSS_GROWTH_KIB = 4 * 1024

pytestmark = pytest.mark.timeout(240)


def test_thousands_of_polls_with_slot_churn_leave_rss_fds_and_threads_flat(
    pg_install: PgInstall, tmp_path: Path
) -> None:
    with Cluster(pg_install, max_slot_wal_keep_size="64MB") as cluster:
        result = soak(cluster, SECONDS, targets=TARGETS, workdir=tmp_path)
    print(result.as_dict())
    assert result.polls >= 1000, result
    assert result.slots_created >= 200, result
    assert result.slots_dropped >= result.slots_created - 4
    # A probe holds a socket only while it runs (one per target at most): fds may move by that
    # much from sample to sample, never climb.
    fds = [result.start.fds] + [f.fds for f in result.samples]
    assert max(fds) - min(fds) <= TARGETS + 1, fds
    assert result.end.fds <= result.start.fds + TARGETS, fds
    # Threads come and go within fixed bounds: the scheduler's pool (2 per target + 1), a
    # statement-deadline timer per poll in flight, main, scheduler, HTTP server and a request.
    # A thread leaked per poll would pass this ceiling within a second.
    threads = [result.start.threads] + [f.threads for f in result.samples]
    assert max(threads) <= (2 * TARGETS + 1) + TARGETS + 4, threads
    assert result.end.rss_kib - result.start.rss_kib < RSS_GROWTH_KIB, result
    assert result.series_match_live_slots, "series of dropped slots stayed in /metrics"
