"""Tables for the classifier: a slot's story poll by poll, and the state an operator must see."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from slotwatch.judge.classify import MAX_SAMPLES, classify, observe
from slotwatch.judge.memory import Memory
from slotwatch.model import (
    INF,
    Assessment,
    PollResult,
    ServerRow,
    SlotRow,
    SlotState,
    SlotTrack,
    Thresholds,
)

KiB = 1024
MiB = 1024**2
GiB = 1024**3
START = 1024 * GiB  # an LSN far from 0/0, so that no position in a story goes below it
TH = Thresholds()
W = 256 * KiB  # WAL rate of the stall stories: far from any budget forecast


def server(current: int, keep: int = 4 * GiB, sender_timeout: float = 60.0) -> ServerRow:
    return ServerRow(
        version_num=170000,
        in_recovery=False,
        current_lsn=current,
        max_slot_wal_keep_size=keep,
        wal_segment_size=16 * MiB,
        wal_directory_bytes=None,
        wal_sender_timeout=sender_timeout,
        server_epoch=0.0,
    )


def slot(
    current: int,
    *,
    behind: int = 10 * KiB,
    retained: int | None = None,
    keep: int = 4 * GiB,
    active: bool = True,
    **fields: Any,
) -> SlotRow:
    """A PowerSync slot `behind` bytes behind the head; other columns consistent unless given."""
    confirmed = current - behind
    restart = confirmed - 64 * KiB if retained is None else current - retained
    values: dict[str, Any] = {
        "name": "powersync_selfhost3_17f9",
        "plugin": "pgoutput",
        "slot_type": "logical",
        "database": "postgres",
        "temporary": False,
        "active": active,
        "active_pid": 4242 if active else None,
        "restart_lsn": restart,
        "confirmed_flush_lsn": confirmed,
        "wal_status": "reserved",
        "safe_wal_size": keep - (current - restart) if keep >= 0 else None,
        "catalog_xmin_age": 12,
        "sender_pid": 4242 if active else None,
        "sender_application_name": "powersync/1.25.0" if active else None,
        "sender_state": "streaming" if active else None,
        "sent_lsn": current if active else None,
    }
    values.update(fields)
    return SlotRow(**values)


@dataclass(frozen=True)
class Poll:
    at: float
    server: ServerRow
    row: SlotRow


@dataclass(frozen=True)
class Story:
    polls: Sequence[Poll]
    th: Thresholds = TH
    polled_once: bool = False


@dataclass(frozen=True)
class Expect:
    state: SlotState
    reasons: tuple[str, ...] = ()  # each must appear in some reason
    absent: tuple[str, ...] = ()  # none may appear in any reason
    figures: dict[str, Any] = field(default_factory=dict)


def play(story: Story) -> Assessment:
    """The story through a target's memory, as the daemon judges it: the last poll's verdict."""
    memory = Memory("default", story.th, one_shot=story.polled_once)
    assessment: Assessment | None = None
    for poll in story.polls:
        judgement = memory.judge(PollResult("default", poll.at, 0.0, poll.server, (poll.row,)))
        assert judgement is not None
        assessment = judgement.slots[0].assessment
    assert assessment is not None
    return assessment


def steady(
    seconds: float,
    *,
    interval: float = 15.0,
    rate: int = 100 * KiB,
    start: float = 0.0,
    keep: int = 4 * GiB,
    sender_timeout: float = 60.0,
    row: Callable[[int, float], SlotRow] | None = None,
) -> list[Poll]:
    """Polls every `interval` for `seconds` while WAL grows at `rate` bytes/s."""
    polls = []
    steps = int(seconds // interval)
    for i in range(steps + 1):
        at = start + i * interval
        current = START + int(at * rate)
        polls.append(
            Poll(
                at,
                server(current, keep, sender_timeout),
                row(current, at) if row is not None else slot(current, keep=keep),
            )
        )
    return polls


def frozen_at(lsn: int, **fields: Any) -> Callable[[int, float], SlotRow]:
    """confirmed_flush_lsn stuck at `lsn` while the head moves on."""
    return lambda current, _at: slot(current, behind=current - lsn, **fields)


def one(current: int = START, *, keep: int = 4 * GiB, **fields: Any) -> list[Poll]:
    return [Poll(0.0, server(current, keep), slot(current, keep=keep, **fields))]


STORIES = [
    # ---- lost beats everything
    pytest.param(
        Story(one(wal_status="lost", restart_lsn=None, safe_wal_size=None, active=False)),
        Expect(
            SlotState.LOST,
            ("wal_status 'lost'", "restart_lsn is gone"),
            figures={"retained_wal_bytes": None, "invalidation_eta_seconds": 0.0},
        ),
        id="lost-wal-status",
    ),
    pytest.param(
        Story(one(wal_status=None, restart_lsn=None, safe_wal_size=None)),
        Expect(SlotState.LOST, ("restart_lsn is gone",), figures={"retained_wal_bytes": None}),
        id="lost-null-restart-lsn",
    ),
    pytest.param(
        Story(
            one(
                invalidation_reason="idle_timeout",
                wal_status="unreserved",
                safe_wal_size=-5 * MiB,
                active=False,
                consumer_busy=True,
            )
        ),
        Expect(SlotState.LOST, ("invalidated (idle_timeout)",), absent=("unreserved",)),
        id="lost-beats-at-risk-and-snapshotting",
    ),
    # ---- at_risk
    pytest.param(
        Story(one(wal_status="unreserved", safe_wal_size=-12 * MiB, retained=5 * GiB)),
        Expect(
            SlotState.AT_RISK,
            ("wal_status is 'unreserved'", "-12.0MiB"),
            figures={"invalidation_eta_seconds": 0.0},
        ),
        id="at-risk-unreserved-negative-safe-wal-size",
    ),
    pytest.param(
        Story(one(retained=int(3.7 * GiB))),
        Expect(
            SlotState.AT_RISK,
            ("8% of its 4.0GiB WAL budget left",),
            figures={"wal_budget_ratio": pytest.approx(0.3 / 4), "wal_budget_bytes": 4 * GiB},
        ),
        id="at-risk-budget-ratio",
    ),
    pytest.param(
        Story(
            one(
                retained=int(3.9 * GiB),
                active=False,
                consumer_busy=True,
                server_inactive_seconds=3000.0,
            )
        ),
        Expect(SlotState.AT_RISK, ("WAL budget left",), absent=("snapshot",)),
        id="at-risk-beats-snapshotting",
    ),
    pytest.param(
        Story(
            # Frozen slot, 2MiB/s of WAL, 3.0GiB left: the budget runs out in under an hour.
            steady(
                600,
                rate=2 * MiB,
                row=lambda current, at: slot(
                    current, behind=current - START, retained=GiB + int(at * 2 * MiB)
                ),
            )
        ),
        Expect(
            SlotState.AT_RISK,
            ("forecast to exhaust its WAL budget in", "at 2.0MiB/s"),
            figures={"invalidation_eta_seconds": pytest.approx((3 * GiB - 1200 * MiB) / (2 * MiB))},
        ),
        id="at-risk-forecast",
    ),
    pytest.param(
        Story(one(keep=-1, retained=int(1.9 * GiB)), th=replace(TH, wal_budget_bytes=2 * GiB)),
        Expect(
            SlotState.AT_RISK,
            ("5% of its 2.0GiB WAL budget left",),
            figures={"wal_budget_bytes": 2 * GiB, "wal_budget_ratio": pytest.approx(0.05)},
        ),
        id="at-risk-unlimited-with-budget",
    ),
    pytest.param(
        Story(one(keep=-1, retained=3 * GiB), th=replace(TH, wal_budget_bytes=2 * GiB)),
        Expect(
            SlotState.AT_RISK,
            ("its WAL budget of 2.0GiB is used up (-1.0GiB left)", "0% of its 2.0GiB"),
            figures={"invalidation_eta_seconds": 0.0, "wal_budget_ratio": pytest.approx(-0.5)},
        ),
        id="at-risk-unlimited-over-budget",
    ),
    pytest.param(
        Story(one(keep=-1, retained=400 * GiB)),
        Expect(
            SlotState.HEALTHY,
            figures={
                "wal_budget_bytes": None,
                "wal_budget_ratio": None,
                "invalidation_eta_seconds": INF,
                "retained_wal_bytes": 400 * GiB,
            },
        ),
        id="unlimited-without-budget-never-at-risk",
    ),
    # ---- snapshotting
    pytest.param(
        Story(one(active=False, consumer_busy=True, server_inactive_seconds=7200.0)),
        Expect(
            SlotState.SNAPSHOTTING,
            ("consumer session is busy in database postgres: initial snapshot copy",),
            figures={"inactive_seconds": 7200.0, "sent_lag_bytes": None},
        ),
        id="snapshotting-beats-inactive",
    ),
    # ---- inactive
    pytest.param(
        Story(one(active=False, server_inactive_seconds=180.0)),
        Expect(
            SlotState.INACTIVE,
            ("no walsender for 3m (PostgreSQL reports inactive_since)",),
            figures={"inactive_seconds": 180.0},
        ),
        id="inactive-server-reports",
    ),
    pytest.param(
        Story(one(active=False, server_inactive_seconds=30.0)),
        Expect(
            SlotState.HEALTHY,
            ("no walsender for 30s, under the 2m allowed for a reconnect",),
            figures={"inactive_seconds": 30.0},
        ),
        id="inactive-server-reports-briefly",
    ),
    pytest.param(
        Story(steady(150, row=lambda current, _at: slot(current, active=False))),
        Expect(
            SlotState.INACTIVE,
            ("no walsender for 2m (seen by slotwatch",),
            figures={"inactive_seconds": 150.0, "sent_lag_bytes": None},
        ),
        id="inactive-seen-locally",
    ),
    pytest.param(
        Story(steady(60, row=lambda current, _at: slot(current, active=False))),
        Expect(SlotState.HEALTHY, ("no walsender for 60s",), figures={"inactive_seconds": 60.0}),
        id="inactive-seen-locally-briefly",
    ),
    pytest.param(
        Story(
            steady(150, row=lambda current, _at: slot(current, active=False))
            + steady(0, start=165, row=lambda current, _at: slot(current))
        ),
        Expect(SlotState.HEALTHY, ("advancing",), figures={"inactive_seconds": 0.0}),
        id="reconnect-clears-inactive",
    ),
    # ---- wedged, and what is not
    pytest.param(
        Story(steady(360, rate=W, row=frozen_at(START))),
        Expect(
            SlotState.WEDGED,
            (
                "confirmed_flush_lsn has not advanced for 5m with 90.0MiB of WAL waiting",
                "the consumer reads (sent to within 0B of the head) but does not confirm",
            ),
            absent=("wal_sender_timeout",),
            figures={"flush_stall_seconds": 345.0, "lag_bytes": 90 * MiB, "sent_lag_bytes": 0},
        ),
        id="wedged-reads-but-does-not-confirm",
    ),
    pytest.param(
        # A SIGSTOP'd consumer on a quiet database: everything was "sent" into its socket
        # buffers, so a small unsent figure must not be read as "it reads".
        Story(steady(360, rate=32 * KiB, row=frozen_at(START))),
        Expect(
            SlotState.WEDGED,
            ("has not advanced for 5m", "whether the consumer reads cannot be told yet"),
            absent=("does not confirm", "not reading"),
            figures={"sent_lag_bytes": 0},
        ),
        id="wedged-all-sent-but-may-sit-in-socket-buffers",
    ),
    pytest.param(
        Story(steady(360, rate=W, sender_timeout=0.0, row=frozen_at(START, sent_lsn=START + MiB))),
        Expect(
            SlotState.WEDGED,
            (
                "the consumer is not reading: its walsender has 89.0MiB unsent",
                "wal_sender_timeout is 0",
            ),
            figures={"sent_lag_bytes": 89 * MiB},
        ),
        id="wedged-not-reading",
    ),
    pytest.param(
        Story(steady(360, rate=W, row=frozen_at(START, sender_pid=None, sent_lsn=None))),
        Expect(
            SlotState.WEDGED,
            ("no walsender row to tell",),
            figures={"sent_lag_bytes": None},
        ),
        id="wedged-without-walsender-row",
    ),
    pytest.param(
        Story(steady(285, rate=W, row=frozen_at(START))),
        Expect(
            SlotState.HEALTHY,
            ("has not advanced for 4m", "(wedged after 5m)", "does not confirm"),
            absent=("advancing",),
            figures={"flush_stall_seconds": 270.0},
        ),
        id="stalled-under-threshold",
    ),
    pytest.param(
        # An hour of a quiet database: a few bytes of heartbeat, never confirmed, never a stall.
        Story(steady(3600, rate=100, row=frozen_at(START))),
        Expect(
            SlotState.HEALTHY,
            ("idle: nothing to confirm",),
            figures={"flush_stall_seconds": 0.0, "lag_bytes": 360_000},
        ),
        id="idle-database-never-wedged",
    ),
    pytest.param(
        Story(
            steady(600, rate=W, row=frozen_at(START))
            + steady(
                0,
                rate=W,
                start=615,
                row=lambda current, _at: slot(current, behind=64 * KiB),
            )
        ),
        Expect(
            SlotState.HEALTHY,
            ("advancing; 64.0KiB behind",),
            figures={"flush_stall_seconds": 0.0},
        ),
        id="advance-clears-stall",
    ),
    pytest.param(
        # Crash recovery restores confirmed_flush_lsn from the last checkpoint: a fresh start.
        Story(
            steady(600, rate=W, row=frozen_at(START + 50 * MiB))
            + steady(30, rate=W, start=615, row=frozen_at(START + 10 * MiB))
        ),
        Expect(SlotState.HEALTHY, figures={"flush_stall_seconds": 30.0}),
        id="confirmed-flush-goes-backwards",
    ),
    pytest.param(
        # No walsender at any poll of the stall (an inactive window longer than it): time
        # without a walsender is inactive time, never evidence of a wedge.
        Story(
            steady(360, rate=W, row=frozen_at(START, active=False)),
            th=replace(TH, inactive_after=600.0),
        ),
        Expect(
            SlotState.HEALTHY,
            ("no walsender for 6m", "has not advanced for 5m", "not wedge evidence"),
            absent=("does not confirm", "not reading"),
            figures={"flush_stall_seconds": 345.0},
        ),
        id="inactive-slot-is-never-wedged",
    ),
    pytest.param(
        # The walsender held the stalled slot, then left 30s ago (PostgreSQL 17 says when): the
        # slot stays wedged until the inactive window, rather than reading healthy in between.
        Story(
            steady(330, rate=W, row=frozen_at(START))
            + steady(
                30,
                rate=W,
                start=345,
                row=lambda current, at: frozen_at(
                    START, active=False, server_inactive_seconds=at - 331.0
                )(current, at),
            )
        ),
        Expect(
            SlotState.WEDGED,
            ("no walsender for 44s", "held it for 5m without confirming before it left"),
            absent=("does not confirm", "not reading"),
        ),
        id="walsender-that-left-a-wedged-slot-keeps-it-wedged",
    ),
    # ---- lagging and healthy
    pytest.param(
        Story(steady(120, rate=MiB, row=lambda current, _at: slot(current, behind=300 * MiB))),
        Expect(
            SlotState.LAGGING,
            ("300.0MiB behind (warning above 256.0MiB)",),
            figures={"lag_bytes": 300 * MiB, "wal_rate_bytes_per_second": pytest.approx(MiB)},
        ),
        id="lagging",
    ),
    pytest.param(
        Story(steady(120)),
        Expect(
            SlotState.HEALTHY,
            ("advancing; 10.0KiB behind",),
            figures={
                "lag_bytes": 10 * KiB,
                "retained_wal_bytes": 74 * KiB,
                "sent_lag_bytes": 0,
                "flush_stall_seconds": 0.0,
                "inactive_seconds": 0.0,
                "invalidation_eta_seconds": INF,
                "wal_budget_bytes": 4 * GiB,
                "wal_budget_ratio": pytest.approx(1.0, abs=1e-4),
                "wal_rate_bytes_per_second": pytest.approx(100 * KiB),
            },
        ),
        id="healthy-all-figures",
    ),
    # ---- one-shot commands
    pytest.param(
        Story(one(behind=300 * MiB), polled_once=True),
        Expect(
            SlotState.LAGGING,
            ("cannot be judged from one poll",),
            figures={"flush_stall_seconds": 0.0},
        ),
        id="once-never-wedged",
    ),
    pytest.param(
        Story(steady(600, rate=W, row=frozen_at(START)), polled_once=True),
        Expect(
            SlotState.HEALTHY,
            ("cannot be judged from one poll",),
            absent=("has not advanced",),
            figures={"flush_stall_seconds": 0.0},
        ),
        id="once-ignores-a-remembered-stall",
    ),
    pytest.param(
        Story(one(active=False), polled_once=True),
        Expect(
            SlotState.HEALTHY,
            ("cannot be told from one poll",),
            figures={"inactive_seconds": 0.0},
        ),
        id="once-inactive-cannot-be-timed",
    ),
    pytest.param(
        Story(one(active=False, server_inactive_seconds=600.0), polled_once=True),
        Expect(SlotState.INACTIVE, ("PostgreSQL reports",), figures={"inactive_seconds": 600.0}),
        id="once-inactive-timed-by-server",
    ),
    pytest.param(
        Story(one(), polled_once=True),
        Expect(
            SlotState.HEALTHY,
            ("idle: nothing to confirm",),
            figures={"invalidation_eta_seconds": INF, "wal_rate_bytes_per_second": None},
        ),
        id="once-healthy-has-no-rate-or-eta",
    ),
]


@pytest.mark.parametrize(("story", "expect"), STORIES)
def test_story(story: Story, expect: Expect) -> None:
    assessment = play(story)
    assert assessment.state == expect.state, assessment.reasons
    text = " | ".join(assessment.reasons)
    for wanted in expect.reasons:
        assert wanted in text
    for unwanted in expect.absent:
        assert unwanted not in text
    for name, value in expect.figures.items():
        assert getattr(assessment, name) == value, name
    assert all(reason and "\n" not in reason for reason in assessment.reasons)


@pytest.mark.parametrize(
    ("interval", "stall_after"),
    [
        pytest.param(15.0, 300.0, id="15s-polls"),
        pytest.param(7.0, 300.0, id="7s-polls"),
        pytest.param(60.0, 300.0, id="60s-polls"),
        pytest.param(45.0, 100.0, id="45s-polls-short-stall"),
    ],
)
def test_stall_clock_is_late_by_at_most_one_interval(interval: float, stall_after: float) -> None:
    """The consumer confirms up to `stopped`, then nothing: wedged no earlier than the truth."""
    th = replace(TH, stall_after=stall_after)
    stopped = 1000.0
    # The stall truly starts once the lag floor of WAL waits behind the frozen position.
    waiting = stopped + (th.lag_floor_bytes - 64 * KiB) / W
    track: SlotTrack | None = None
    wedged_at = None
    at = 0.0
    while at < waiting + stall_after + 3 * interval:
        current = START + int(at * W)
        confirmed = START + int(min(at, stopped) * W) - 64 * KiB
        row = slot(current, behind=current - confirmed)
        track = observe(track, row, server(current), at, th)
        assessment = classify(row, server(current), track, th)
        true_stall = max(0.0, at - waiting)
        assert assessment.flush_stall_seconds <= true_stall
        assert assessment.flush_stall_seconds >= true_stall - interval
        if assessment.state is SlotState.WEDGED and wedged_at is None:
            wedged_at = at
        at += interval
    assert wedged_at is not None
    # One interval late at most on the stall clock, so one poll later than the first poll that
    # could have known.
    assert waiting + stall_after <= wedged_at < waiting + stall_after + 2 * interval


@pytest.mark.parametrize(
    ("interval", "bound"),
    [
        pytest.param(15.0, 600 // 15 + 2, id="15s-polls-hold-the-window"),
        pytest.param(1.0, MAX_SAMPLES, id="1s-polls-hit-the-cap"),
        pytest.param(0.1, MAX_SAMPLES, id="fast-polls-hit-the-cap"),
    ],
)
def test_samples_stay_bounded_over_2000_polls(interval: float, bound: int) -> None:
    track: SlotTrack | None = None
    # 2,000 polls pass the cap (512) and the 15 s window (42 points) several times over.
    for i in range(2_000):
        at = i * interval
        current = START + i * 100 * KiB
        row = slot(current)
        track = observe(track, row, server(current), at, TH)
        classify(row, server(current), track, TH)
        assert len(track.trend) <= bound
        assert len(track.samples) <= 2  # only the last two polls are kept whole
    assert track is not None
    assert len(track.trend) == bound
    assert track.trend.times[-1] == track.samples[-1].at == 1_999 * interval
    assert track.samples[0].at == 1_998 * interval


def test_clock_stepping_back_drops_future_samples() -> None:
    track: SlotTrack | None = None
    for at in (1000.0, 1015.0, 1030.0, 400.0):
        current = START + int(at) * KiB
        track = observe(track, slot(current, active=False), server(current), at, TH)
    assert track is not None
    assert [sample.at for sample in track.samples] == [400.0]
    assert list(track.trend.times) == [400.0]
    assert track.inactive_since == 400.0
    assessment = classify(slot(START, active=False), server(START), track, TH)
    assert assessment.inactive_seconds == 0.0
    assert assessment.flush_stall_seconds >= 0.0
