"""Stall and attachment, poll by poll: what an operator sees while walsenders come and go.

Each story is a timeline (who holds the slot, what it confirms, what the consumer's own metrics
say) played through a target's memory as the daemon plays it, and the state of every poll is
checked, not only the last: the point of these rules is that no poll reads a false `wedged`, and
that a crash loop reads `wedged` on every poll once it does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pytest

from slotwatch.judge.classify import ATTACH_GRACE, attach_grace
from slotwatch.judge.memory import Memory, busy_slots
from slotwatch.model import (
    Assessment,
    ConsumerReading,
    PollResult,
    ServerRow,
    SlotRow,
    SlotState,
    Thresholds,
)

KiB = 1024
MiB = 1024**2
START = 1024**4  # an LSN far from 0/0
W = 256 * KiB  # bytes of WAL per second in every story
SLOT = "powersync_selfhost1_180c"

WEDGED, HEALTHY, LAGGING = SlotState.WEDGED, SlotState.HEALTHY, SlotState.LAGGING
INACTIVE, SNAPSHOTTING = SlotState.INACTIVE, SlotState.SNAPSHOTTING

# The run next to a real PowerSync: 2 s polls, 30 s stall window, 20 s inactive window.
FIELD = Thresholds(stall_after=30.0, inactive_after=20.0, lag_floor_bytes=256 * KiB)
# The crash-loop measurement: 8 s stall window, 6 s inactive window.
LOOP = Thresholds(stall_after=8.0, inactive_after=6.0, lag_floor_bytes=64 * KiB)
DEFAULTS = Thresholds()

Holder = Callable[[float], int | None]
Position = Callable[[float], int]


def server(current: int, sender_timeout: float = 0.0) -> ServerRow:
    return ServerRow(
        version_num=150000,
        in_recovery=False,
        current_lsn=current,
        max_slot_wal_keep_size=-1,
        wal_segment_size=16 * MiB,
        wal_directory_bytes=None,
        wal_sender_timeout=sender_timeout,
        server_epoch=0.0,
    )


def row(
    current: int,
    confirmed: int,
    pid: int | None,
    *,
    busy: bool = False,
    inactive: float | None = None,
) -> SlotRow:
    return SlotRow(
        name=SLOT,
        plugin="pgoutput",
        slot_type="logical",
        database="app",
        temporary=False,
        active=pid is not None,
        active_pid=pid,
        restart_lsn=confirmed - 64 * KiB,
        confirmed_flush_lsn=confirmed,
        wal_status="reserved",
        safe_wal_size=None,
        catalog_xmin_age=3,
        server_inactive_seconds=inactive if pid is None else None,
        sender_pid=pid,
        sender_application_name="powersync/1.25.0" if pid else None,
        sender_state="streaming" if pid else None,
        sent_lsn=current if pid else None,
        consumer_busy=busy,
    )


def frozen(_at: float) -> int:
    return START


def confirms_from(moment: float) -> Position:
    """Stuck at START until `moment`, then following the WAL head (a consumer that caught up)."""
    return lambda at: START if at < moment else START + int(at * W) - 32 * KiB


def held_during(*spans: tuple[float, float], pid: int = 4242) -> Holder:
    """A walsender holds the slot during each [start, end); a new pid for every span."""

    def holder(at: float) -> int | None:
        for number, (start, end) in enumerate(spans):
            if start <= at < end:
                return pid + number
        return None

    return holder


def cycling(attached: float, away: float, first: float = 0.0, pid: int = 5000) -> Holder:
    """Attach for `attached` s, leave for `away` s, again and again: a crash loop."""
    period = attached + away

    def holder(at: float) -> int | None:
        if at < first:
            return None
        cycle, phase = divmod(at - first, period)
        return pid + int(cycle) if phase < attached else None

    return holder


@dataclass(frozen=True)
class Timeline:
    until: float
    interval: float
    holder: Holder
    confirmed: Position = frozen
    th: Thresholds = FIELD
    start: float = 0.0
    busy: Callable[[float], bool] = lambda _at: False
    server_inactive: bool = False  # PostgreSQL 17+: the server times inactivity itself
    readings: Sequence[ConsumerReading] = field(default_factory=tuple)


def play(story: Timeline) -> list[tuple[float, Assessment]]:
    memory = Memory("default", story.th, consumer_fresh_for=25.0)
    pending = sorted(story.readings, key=lambda reading: reading.checked_at)
    seen: list[tuple[float, Assessment]] = []
    steps = round((story.until - story.start) / story.interval)
    for step in range(steps + 1):
        at = story.start + step * story.interval
        while pending and pending[0].checked_at <= at:
            memory.record_consumer(pending.pop(0))
        current = START + int(at * W)
        pid = story.holder(at)
        inactive = _released_for(story, at) if pid is None and story.server_inactive else None
        slot_row = row(
            current, min(story.confirmed(at), current), pid, busy=story.busy(at), inactive=inactive
        )
        judgement = memory.judge(PollResult("default", at, 0.0, server(current), (slot_row,)))
        assert judgement is not None
        seen.append((at, judgement.slots[0].assessment))
    return seen


def _released_for(story: Timeline, at: float) -> float:
    """What PostgreSQL 17 reports: seconds since a walsender last held the slot (0.1 s steps)."""
    back = 0.0
    while at - back > story.start and story.holder(at - back - 0.1) is None:
        back += 0.1
    return back


def states(seen: list[tuple[float, Assessment]]) -> list[tuple[float, SlotState]]:
    return [(at, a.state) for at, a in seen]


def first(seen: list[tuple[float, Assessment]], state: SlotState) -> float | None:
    return next((at for at, a in seen if a.state is state), None)


def reasons_at(seen: list[tuple[float, Assessment]], moment: float) -> str:
    return " | ".join(next(a for at, a in seen if at >= moment).reasons)


# --- the grace ------------------------------------------------------------------------------


def test_the_grace_is_three_status_intervals_bounded_by_the_stall_window() -> None:
    assert ATTACH_GRACE == 30.0
    assert attach_grace(DEFAULTS) == 30.0
    assert attach_grace(FIELD) == 30.0
    assert attach_grace(LOOP) == 8.0  # never longer than the stall window


@pytest.mark.parametrize(
    "server_inactive", [pytest.param(False, id="pg15"), pytest.param(True, id="pg17")]
)
def test_reattach_after_six_minutes_without_a_walsender_is_not_wedged(
    server_inactive: bool,
) -> None:
    """Outage 6 min (inactive), PowerSync attaches at 360 s and first confirms 10 s later."""
    seen = play(
        Timeline(
            until=420,
            interval=2,
            holder=held_during((0, 10), (360, 10_000)),
            confirmed=confirms_from(370),
            server_inactive=server_inactive,
        )
    )
    assert WEDGED not in {state for _, state in states(seen)}
    assert first(seen, INACTIVE) is not None
    assert first(seen, INACTIVE) < 360
    grace = [a for at, a in seen if 360 <= at < 370]
    assert {a.state for a in grace} <= {HEALTHY, LAGGING}
    text = reasons_at(seen, 368)
    assert "re-attached 8s ago after 5m" in text  # 5m50s without one, as the polls saw it
    assert "waiting for its first confirm (wedged if none within 30s)" in text
    # the stall clock keeps its meaning: it counts the outage too
    assert next(a for at, a in seen if at == 368).flush_stall_seconds > 300
    after = [a.state for at, a in seen if at >= 372]
    assert after
    assert set(after) == {HEALTHY}


def test_reattach_after_a_snapshot_reads_snapshotting_then_healthy() -> None:
    """A new slot inactive for the whole 10 min copy, then streaming; first confirm after 10 s."""
    seen = play(
        Timeline(
            until=660,
            interval=2,
            holder=held_during((600, 10_000)),
            confirmed=confirms_from(610),
            busy=lambda at: at < 600,
        )
    )
    assert {state for at, state in states(seen) if at < 600} == {SNAPSHOTTING}
    assert {state for at, state in states(seen) if at >= 600} == {HEALTHY}
    assert "re-attached 4s ago after 9m without a walsender" in reasons_at(seen, 604)


def test_a_reattached_walsender_that_never_confirms_is_wedged_after_the_grace() -> None:
    seen = play(Timeline(until=420, interval=2, holder=held_during((360, 10_000))))
    wedged_at = first(seen, WEDGED)
    assert wedged_at is not None
    assert 360 + 30 <= wedged_at <= 360 + 30 + 2 * 2
    assert {state for at, state in states(seen) if at >= wedged_at} == {WEDGED}
    assert "attached 30s ago and has not confirmed (a new walsender gets 30s)" in reasons_at(
        seen, wedged_at
    )


def test_a_new_walsender_taking_over_without_a_gap_gets_the_grace() -> None:
    """pid 4242 confirms, leaves, and pid 4243 takes the slot between two polls."""
    seen = play(
        Timeline(
            until=120,
            interval=2,
            holder=held_during((0, 80), (80, 10_000)),
            confirmed=lambda at: (
                START + int(min(at, 70) * W) - 32 * KiB
                if at < 90
                else START + int(at * W) - 32 * KiB
            ),
        )
    )
    assert WEDGED not in {state for _, state in states(seen)}
    assert "a new walsender (pid 4243) took the slot 6s ago" in reasons_at(seen, 86)


# --- frozen, unchanged ----------------------------------------------------------------------


def test_a_frozen_stream_is_wedged_within_the_stall_window_and_two_polls() -> None:
    """Attached and confirming, then frozen at 100 s: the grace never delays this."""
    seen = play(
        Timeline(
            until=200,
            interval=2,
            holder=held_during((0, 10_000)),
            confirmed=lambda at: START + int(min(at, 100) * W) - 32 * KiB,
        )
    )
    wedged_at = first(seen, WEDGED)
    floor = 100 + (FIELD.lag_floor_bytes - 32 * KiB) / W
    assert wedged_at is not None
    assert floor + 30 <= wedged_at <= floor + 30 + 2 * 2
    assert {state for at, state in states(seen) if at >= wedged_at} == {WEDGED}


def test_a_wedged_slot_whose_walsender_is_cut_stays_wedged_until_inactive() -> None:
    """wal_sender_timeout cuts a frozen consumer: no flicker to healthy on the way to inactive."""
    seen = play(
        Timeline(
            until=260,
            interval=2,
            holder=held_during((0, 200)),
            confirmed=lambda at: START + int(min(at, 100) * W) - 32 * KiB,
        )
    )
    wedged_at = first(seen, WEDGED)
    assert wedged_at is not None
    assert wedged_at < 200
    after = [state for at, state in states(seen) if at >= wedged_at]
    assert after == [WEDGED] * after.count(WEDGED) + [INACTIVE] * after.count(INACTIVE)
    assert "held it for" in reasons_at(seen, 204)
    assert "before it left" in reasons_at(seen, 204)


# --- crash loops ----------------------------------------------------------------------------


@pytest.mark.parametrize("interval", [0.5, 1.0, 2.0])
@pytest.mark.parametrize(
    "server_inactive", [pytest.param(False, id="pg15"), pytest.param(True, id="pg17")]
)
def test_attach_4s_leave_4s_reads_wedged_on_every_poll_once_wedged(
    interval: float, server_inactive: bool
) -> None:
    """The measured crash loop: 8 s window, 6 s inactive window, never a confirm."""
    th = LOOP
    seen = play(
        Timeline(
            until=120,
            interval=interval,
            holder=cycling(4, 4, first=2),
            th=th,
            start=0,
            server_inactive=server_inactive,
        )
    )
    wedged_at = first(seen, WEDGED)
    assert wedged_at is not None
    # The loop starts at 2 s; WAL over the floor by then (64 KiB at 256 KiB/s).
    assert wedged_at <= 2 + th.stall_after + attach_grace(th) + 2 * interval
    later = {state for at, state in states(seen) if at >= wedged_at}
    assert later == {WEDGED}, states(seen)
    assert "re-attached" in reasons_at(seen, 60)
    assert "without confirming" in reasons_at(seen, 60)


def test_the_crash_loop_reason_counts_attaches_over_time() -> None:
    seen = play(Timeline(until=40, interval=1, holder=cycling(4, 4), th=LOOP, start=-2))
    assert "re-attached 6 times in 40s without confirming" in reasons_at(seen, 40)


def test_powersync_crash_loop_with_the_defaults_is_wedged_and_stays_wedged() -> None:
    """Attach, fail after 5 s, retry after 30 s; 15 s polls, 5 min window, 2 min inactive."""
    seen = play(
        Timeline(until=900, interval=15, holder=cycling(20, 30, first=0), th=DEFAULTS, start=-15)
    )
    wedged_at = first(seen, WEDGED)
    assert wedged_at is not None
    assert wedged_at <= 300 + attach_grace(DEFAULTS) + 2 * 15
    assert {state for at, state in states(seen) if at >= wedged_at} == {WEDGED}


def test_pg17_sees_a_crash_loop_faster_than_the_polls() -> None:
    """Attaches of 2 s every 37 s, polled every 15 s: most are never seen attached, but
    PostgreSQL 17's inactive_since restarts each time, so each counts as a failed attempt."""
    seen = play(
        Timeline(
            until=900,
            interval=15,
            holder=cycling(2, 35, first=1),
            th=DEFAULTS,
            start=0,
            server_inactive=True,
        )
    )
    wedged_at = first(seen, WEDGED)
    assert wedged_at is not None
    assert {state for at, state in states(seen) if at >= wedged_at} == {WEDGED}


def test_one_failed_attach_then_a_reconnect_that_confirms_is_never_wedged() -> None:
    """PowerSync attaches, errors after 3 s, retries 30 s later and confirms 10 s after that."""
    seen = play(
        Timeline(
            until=480,
            interval=2,
            holder=held_during((0, 5), (400, 403), (433, 10_000)),
            confirmed=lambda at: (
                START + int(min(at, 5) * W) - 32 * KiB
                if at < 443
                else START + int(at * W) - 32 * KiB
            ),
        )
    )
    assert WEDGED not in {state for _, state in states(seen)}
    assert {state for at, state in states(seen) if at >= 444} == {HEALTHY}


def test_idle_over_ten_stall_windows_with_a_crash_loop_is_never_wedged() -> None:
    """Nothing to confirm (no WAL over the floor): nothing is at stake, whoever comes and goes."""
    memory = Memory("default", LOOP)
    for step in range(200):
        at = step * 0.5
        pid = cycling(4, 4)(at)
        current = START + step * 10  # a few bytes of heartbeat
        judgement = memory.judge(
            PollResult("default", at, 0.0, server(current), (row(current, START, pid),))
        )
        assert judgement is not None
        assert judgement.slots[0].assessment.state is not WEDGED


# --- the consumer's own account ---------------------------------------------------------------


def readings(
    until: float, *, rising_until: float, lag: float = 0.0, up: bool = True, every: float = 10
) -> list[ConsumerReading]:
    """PowerSync's metrics every `every` s: rows rise ~7,800/s until `rising_until`, then flat."""
    out = []
    at = 0.0
    while at <= until:
        rows = 7800 * min(at, rising_until)
        out.append(
            ConsumerReading(
                "http://127.0.0.1:9464/metrics",
                at,
                up=up,
                duration=0.01,
                rows=rows if up else None,
                data_bytes=rows * 440 if up else None,
                transactions=3.0 if up else None,
                chunks=at * 2 if up else None,
                lag_seconds=lag if up else None,
                error=None if up else "timed out",
            )
        )
        at += every
    return out


def large_transaction(consumer: list[ConsumerReading]) -> Timeline:
    """A 1 M-row UPDATE committed at 20 s and applied until 150 s: frozen-looking position."""
    return Timeline(
        until=200,
        interval=2,
        holder=held_during((0, 10_000)),
        confirmed=lambda at: (
            START + int(min(at, 20) * W) - 32 * KiB if at < 150 else START + int(at * W) - 32 * KiB
        ),
        readings=consumer,
    )


def test_a_large_transaction_applied_slowly_with_rising_counters_is_never_wedged() -> None:
    seen = play(large_transaction(readings(200, rising_until=150)))
    assert WEDGED not in {state for _, state in states(seen)}
    busy = [a for at, a in seen if 60 <= at < 150]
    assert {a.state for a in busy} == {LAGGING}
    text = " | ".join(busy[0].reasons)
    assert "the consumer is applying changes: its powersync_rows_replicated_total rose by" in text
    assert "not a wedge" in text
    assert {state for at, state in states(seen) if at >= 152} == {HEALTHY}


def test_the_same_with_flat_counters_is_wedged_and_says_what_powersync_claims() -> None:
    seen = play(large_transaction(readings(200, rising_until=0, lag=0.0)))
    wedged_at = first(seen, WEDGED)
    floor = 20 + (FIELD.lag_floor_bytes - 32 * KiB) / W
    assert wedged_at is not None
    assert floor + 30 <= wedged_at <= floor + 30 + 2 * 2
    text = reasons_at(seen, wedged_at)
    assert "its own powersync_rows_replicated_total has not risen for" in text
    assert "PowerSync's own powersync_replication_lag_seconds claims 0s" in text


def test_counters_that_stop_rising_give_the_wedge_back() -> None:
    """Applying until 60 s, then frozen mid-transaction: wedged once a reading is flat."""
    seen = play(large_transaction(readings(200, rising_until=60)))
    assert first(seen, LAGGING) is not None
    wedged_at = first(seen, WEDGED)
    assert wedged_at is not None
    assert 70 <= wedged_at <= 74


def test_an_unreachable_metrics_endpoint_changes_nothing_but_the_reasons() -> None:
    seen = play(large_transaction(readings(200, rising_until=150, up=False)))
    wedged_at = first(seen, WEDGED)
    assert wedged_at is not None
    assert "its own metrics endpoint did not answer (timed out)" in reasons_at(seen, wedged_at)


def test_stale_readings_do_not_clear_a_wedge() -> None:
    """The last reading rose, but it is older than the freshness bound (25 s here)."""
    early = [r for r in readings(200, rising_until=150) if r.checked_at < 40]
    seen = play(large_transaction(early))
    wedged_at = first(seen, WEDGED)
    assert wedged_at is not None
    assert "not read recently enough" in reasons_at(seen, wedged_at)


def test_counters_shared_with_a_snapshot_of_another_slot_cannot_clear_a_wedge() -> None:
    """During a sync-rules redeploy the new slot's copy moves the same counter."""
    memory = Memory("default", FIELD, consumer_fresh_for=25.0)
    last: Assessment | None = None
    for step in range(60):
        at = step * 2.0
        if step % 5 == 0:
            memory.record_consumer(
                ConsumerReading("u", at, up=True, duration=0.0, rows=1000.0 * at)
            )
        current = START + int(at * W)
        old = row(current, START, 4242)
        new = row(current, current, None, busy=True)._replace(name=SLOT + "x")
        judgement = memory.judge(PollResult("default", at, 0.0, server(current), (old, new)))
        assert judgement is not None
        last = judgement.slots[0].assessment
    assert last is not None
    assert last.state is WEDGED
    assert "is snapshotting (the counters are the whole process's" in " | ".join(last.reasons)


def test_many_busy_slots_are_named_three_at_a_time_and_counted() -> None:
    """A reason names three of the other slots that share the counters and counts the rest."""
    memory = Memory("default", FIELD, consumer_fresh_for=25.0)
    memory.record_consumer(ConsumerReading("u", 0.0, up=True, duration=0.0, rows=0.0))
    current = START + W
    rows = [row(current, START, 4000 + k)._replace(name=f"{SLOT}{k}") for k in range(7)]
    judgement = memory.judge(PollResult("default", 1.0, 0.0, server(current), tuple(rows)))
    assert judgement is not None
    judgement_rows = tuple(view.row for view in judgement.slots)
    assert busy_slots(judgement_rows) == [(r.name, f"{r.name} is streaming") for r in rows]
    for view in judgement.slots:
        evidence = memory._evidence(memory._consumer, view.row, busy_slots(judgement_rows), 1.0)
        assert evidence is not None
        assert evidence.shared is not None
        named = [f"{r.name} is streaming" for r in rows if r.name != view.row.name][:3]
        assert evidence.shared == "; ".join([*named, "3 more"]) + (
            " (the counters are the whole process's, not one slot's)"
        )
