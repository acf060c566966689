"""Tables for the forecast: robust slopes, the WAL rate, and the invalidation ETA of a slot."""

from __future__ import annotations

import itertools
import math
import random
import statistics
from array import array
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from slotwatch.judge import forecast
from slotwatch.judge.forecast import (
    Forecast,
    grown_trend,
    invalidation_eta,
    remaining_budget,
    theil_sen_slope,
    trend_eta,
    trend_of,
    wal_rate,
    window_samples,
)
from slotwatch.model import INF, Sample, Trend

MiB = 1024**2
GiB = 1024**3
SEGMENT = 16 * MiB
WINDOW = 600.0
AT_RISK_ETA = 3600.0


# --- theil_sen_slope --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("points", "min_separation", "expected"),
    [
        pytest.param([], 0.0, None, id="no-points"),
        pytest.param([(5.0, 1.0)], 0.0, None, id="one-point"),
        pytest.param([(5.0, 1.0), (5.0, 9.0)], 0.0, None, id="one-distinct-time"),
        pytest.param([(0.0, 0.0), (10.0, 20.0)], 0.0, 2.0, id="two-points"),
        pytest.param([(t, 7.0 - 3.0 * t) for t in range(10)], 0.0, -3.0, id="falling-line"),
        pytest.param([(20.0, 40.0), (0.0, 0.0), (10.0, 20.0)], 0.0, 2.0, id="unordered-input"),
        pytest.param(
            [(t, 2.0 * t + (1e9 if t in (3, 7) else 0.0)) for t in range(20)],
            0.0,
            2.0,
            id="two-wild-outliers-ignored",
        ),
        pytest.param(
            [(0.0, 0.0), (1.0, 100.0), (10.0, 10.0)],
            5.0,
            -4.5,  # pairs (0, 10) at +1 and (1, 10) at -10; (0, 1) is too close
            id="close-pair-excluded-by-separation",
        ),
        pytest.param([(0.0, 0.0), (1.0, 5.0)], 5.0, None, id="no-pair-far-enough-apart"),
    ],
)
def test_theil_sen_slope(
    points: list[tuple[float, float]], min_separation: float, expected: object
) -> None:
    assert theil_sen_slope(points, min_separation=min_separation) == expected


# The fast forms (shared pairs, bisected windows) are held to the plain definitions.


def plain_theil_sen(points: list[tuple[float, float]], min_separation: float) -> float | None:
    ordered = sorted(points, key=lambda point: point[0])
    slopes = [
        (y_j - y_i) / (t_j - t_i)
        for i, (t_i, y_i) in enumerate(ordered)
        for t_j, y_j in ordered[i + 1 :]
        if t_j >= t_i + min_separation and t_j > t_i
    ]
    return statistics.median(slopes) if slopes else None


def plain_window(samples: list[Sample], window: float, now: float) -> list[Sample]:
    recent = [s for s in samples if now - window <= s.at <= now]
    older = [s for s in samples if s.at < now - window]
    newest = max((s.at for s in older), default=None)
    baseline = [next(s for s in older if s.at == newest)] if older else []
    return baseline + sorted(recent, key=lambda s: s.at)


@pytest.mark.parametrize("seed", range(40))
def test_fast_forms_match_the_plain_definitions(seed: int) -> None:
    rnd = random.Random(seed)  # noqa: S311 - reproducible test inputs
    for _ in range(50):
        # Whole-second times make ties and exact separations common; some inputs are unsorted.
        times = [float(rnd.choice([rnd.randint(0, 30), rnd.uniform(0, 30)])) for _ in range(40)]
        times = times[: rnd.randint(0, 40)]
        if rnd.random() < 0.5:
            times.sort()
        points = [(t, rnd.uniform(-100, 100)) for t in times]
        separation = rnd.choice([0.0, 0.5, 3.0, rnd.uniform(0, 20)])
        assert theil_sen_slope(points, separation) == plain_theil_sen(points, separation)
        samples = [sample(t, 0, None, -1) for t in times]
        now, window = rnd.uniform(0, 35), rnd.uniform(0, 30)
        got = window_samples(samples, window, now)
        assert [id(s) for s in got] == [id(s) for s in plain_window(samples, window, now)]


def plain_cut(trend: Trend, window: float, now: float, most: int = 10**6) -> Trend:
    """The window rule by `plain_window`, over samples carrying only the trend's times."""
    points = [sample(t, 0, None, -1) for t in trend.times]
    where = {id(point): i for i, point in enumerate(points)}
    kept = [where[id(point)] for point in plain_window(points, window, now)][-most:]
    return Trend(tuple(trend.times[i] for i in kept), array("d", [trend.retained[i] for i in kept]))


@pytest.mark.parametrize("seed", range(20))
def test_grown_trend_keeps_what_the_window_rule_keeps(seed: int) -> None:
    rnd = random.Random(seed)  # noqa: S311 - reproducible test inputs
    for _ in range(50):
        count = rnd.randint(0, 30)
        times = sorted(float(rnd.randint(0, 60)) for _ in range(count))
        if rnd.random() < 0.2:
            rnd.shuffle(times)  # a clock stepped back leaves a trend out of order
        trend = Trend(tuple(times), array("d", [rnd.uniform(-9, 9) for _ in times]))
        at = float(rnd.choice([rnd.randint(0, 70), 70]))  # now and then a step back
        window, most = rnd.choice([5.0, 20.0, 100.0]), rnd.choice([3, 8, 512])
        got = grown_trend(trend, at, -1.5, window, most)
        grown = Trend((*trend.times, at), trend.retained + array("d", (-1.5,)))
        want = plain_cut(grown, window, at, most)
        assert (got.times, got.retained) == (want.times, want.retained)


def test_slots_of_a_target_share_the_kept_times() -> None:
    times = tuple(float(t) for t in range(0, 600, 15))
    one = grown_trend(Trend(times, array("d", [-1.0] * len(times))), 600.0, -1.0, 300.0, 512)
    other = grown_trend(Trend(times, array("d", [-7.0] * len(times))), 600.0, -9.0, 300.0, 512)
    assert one.times is other.times
    assert other.retained[-1] == -9.0


@pytest.mark.parametrize("count", [4, 5, 6, 7, 8, 41, 120])
def test_quartiles_are_the_statistics_modules(count: int) -> None:
    rnd = random.Random(count)  # noqa: S311 - reproducible test inputs
    for _ in range(100):
        values = sorted(
            rnd.choice([rnd.uniform(-1e9, 1e9), float(rnd.randint(-5, 5))]) for _ in range(count)
        )
        q1, _, q3 = statistics.quantiles(values, n=4)
        assert (forecast._quartile(values, 1), forecast._quartile(values, 3)) == (q1, q3)


def plain_trend_eta(trend: Trend, latest: Sample, keep: int, window: float, now: float) -> float:
    """The ETA by the plain definitions: Theil-Sen over the values, the spread by the
    statistics module over residuals from the absolute times."""
    remaining = latest.safe_wal_size
    assert remaining is not None
    assert remaining > 0
    times, values = list(trend.times), list(trend.retained)
    span = times[-1] - times[0]
    if span < window * 0.5:
        return INF
    slope = plain_theil_sen(list(zip(times, values, strict=True)), span * 0.5)
    if slope is None or slope >= 0:
        return INF
    residuals = [v - slope * t for t, v in zip(times, values, strict=True)]
    q1, _, q3 = statistics.quantiles(residuals, n=4) if len(residuals) >= 4 else (0, 0, 0)
    if -slope * span <= q3 - q1:
        return INF
    return max(0.0, remaining / -slope - max(0.0, now - latest.at))


@pytest.mark.parametrize("seed", range(20))
def test_trend_eta_matches_the_plain_definitions(seed: int) -> None:
    rnd = random.Random(seed)  # noqa: S311 - reproducible test inputs
    keep = 4 * GiB
    for _ in range(20):
        polls, rate = rnd.randint(2, 60), rnd.choice([0, 1e5, 3e6])
        jitter = rnd.choice([0, 16 * MiB])
        current = [int(1e12 + rate * 15 * k) for k in range(polls)]
        restart = [
            int(1e12 - rnd.randint(0, jitter) + rnd.choice([0, rate]) * 15 * k)
            for k in range(polls)
        ]
        samples = [
            sample(1.7e9 + 15.0 * k, c, r, keep)
            for k, (c, r) in enumerate(zip(current, restart, strict=True))
        ]
        trend, latest = trend_of(samples), samples[-1]
        if latest.safe_wal_size is None or latest.safe_wal_size <= 0:
            continue
        got = trend_eta(trend, latest, keep, None, window=600.0, now=latest.at)
        assert got.eta_seconds == pytest.approx(
            plain_trend_eta(trend, latest, keep, 600.0, latest.at), rel=1e-9
        )


def test_stopped_consumers_of_a_target_are_fitted_once() -> None:
    """Slots whose restart_lsn held still share the server's WAL shape: one fit between them."""
    keep = 4 * GiB
    forecast._fit.cache_clear()
    etas = []
    for restart in (10**11 - 64 * MiB, 10**11 - 32 * MiB, 10**11):
        samples = [
            sample(1.7e9 + 15.0 * k, 10**11 + 10 * MiB + k * MiB, restart, keep) for k in range(41)
        ]
        got = trend_eta(
            trend_of(samples), samples[-1], keep, None, window=600.0, now=samples[-1].at
        )
        etas.append(got)
    info = forecast._fit.cache_info()
    assert (info.misses, info.hits) == (1, 2)
    assert [f.shrink_bytes_per_second for f in etas] == [MiB / 15.0] * 3
    # each from its own remaining budget: the newest restart_lsn has the most left
    assert etas[0].eta_seconds < etas[1].eta_seconds < etas[2].eta_seconds


# --- wal_rate ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("points", "expected"),
    [
        pytest.param([], None, id="no-points"),
        pytest.param([(0.0, 100)], None, id="one-point"),
        pytest.param([(3.0, 100), (3.0, 900)], None, id="no-time-passed"),
        pytest.param([(0.0, 0), (10.0, 1000), (20.0, 2000)], 100.0, id="steady"),
        pytest.param([(0.0, 0), (10.0, 0), (20.0, 0), (30.0, 3000)], 100.0, id="one-burst-counts"),
        pytest.param([(0.0, 500), (60.0, 500)], 0.0, id="idle"),
        # A restore onto an older position: the backwards step counts as zero bytes, the WAL
        # written on either side still counts, and the time of the whole span still elapses.
        pytest.param(
            [(0.0, 1000), (10.0, 3000), (20.0, 500), (30.0, 1500)],
            (2000 + 0 + 1000) / 30.0,
            id="backwards-step-is-zero-not-negative",
        ),
        pytest.param([(0.0, 9000), (10.0, 10)], 0.0, id="only-backwards-is-zero"),
        pytest.param([(20.0, 2000), (0.0, 0), (10.0, 1000)], 100.0, id="unordered-input"),
    ],
)
def test_wal_rate(points: list[tuple[float, int]], expected: float | None) -> None:
    assert wal_rate(points) == expected


# --- invalidation_eta -------------------------------------------------------------------------


@dataclass(frozen=True)
class Series:
    """Samples of one slot and the server settings the forecast runs with."""

    samples: list[Sample]
    max_slot_wal_keep_size: int
    wal_budget_bytes: int | None = None

    @property
    def now(self) -> float:
        return self.samples[-1].at

    def forecast(self, now: float | None = None) -> Forecast:
        return invalidation_eta(
            self.samples,
            self.max_slot_wal_keep_size,
            self.wal_budget_bytes,
            WINDOW,
            self.now if now is None else now,
        )


def safe_wal_size(restart: int, current: int, keep: int) -> int:
    """As PostgreSQL computes it: the end of the segment budget counted from restart_lsn's."""
    return (restart // SEGMENT + keep // SEGMENT + 1) * SEGMENT - current


def sample(at: float, current: int, restart: int | None, keep: int) -> Sample:
    safe = safe_wal_size(restart, current, keep) if restart is not None and keep >= 0 else None
    return Sample(
        at=at,
        current_lsn=current,
        confirmed_flush_lsn=restart,
        restart_lsn=restart,
        safe_wal_size=safe,
        active=True,
    )


def dying(
    rate: float, keep: int, head_start: int, polls: int = 41, interval: float = 15.0
) -> Series:
    """restart_lsn frozen while WAL is written at `rate`: the budget shrinks at exactly `rate`."""
    start = 100 * SEGMENT
    return Series(
        [
            sample(i * interval, start + head_start + int(rate * i * interval), start, keep)
            for i in range(polls)
        ],
        keep,
    )


def healthy_sawtooth(rate: float, keep: int, seed: int, polls: int = 120) -> Series:
    """A consumer confirming every ~10 s: restart_lsn trails the head by up to 10 s of WAL.

    safe_wal_size then only rises when restart_lsn crosses a segment boundary: a saw-tooth.
    """
    rng = random.Random(seed)  # noqa: S311 - seeded, reproducible fixtures, not secrets
    start = 100 * SEGMENT
    samples = []
    for i in range(polls):
        at = i * 15.0 + rng.uniform(0.0, 2.0)
        current = start + int(rate * at)
        restart = current - MiB - int(rng.uniform(0.0, 10.0) * rate)
        samples.append(sample(at, current, restart, keep))
    return Series(samples, keep)


def noisy_dying(rate: float, keep: int, head_start: int, seed: int) -> Series:
    """A frozen slot under bursty WAL, late polls, and two readings from a confused replica."""
    rng = random.Random(seed)  # noqa: S311 - seeded, reproducible fixtures, not secrets
    start = 100 * SEGMENT
    samples = []
    for i in range(41):
        at = i * 15.0 + rng.uniform(0.0, 3.0)
        current = start + head_start + int(rate * at + rng.uniform(-4.0, 4.0) * MiB)
        restart = start + (300 * MiB if i in (17, 33) else 0)
        samples.append(sample(at, current, restart, keep))
    return Series(samples, keep)


def worst_eta(series: Series) -> float:
    """The shortest ETA the forecast ever reported while the series was fed in, poll by poll."""
    return min(
        Series(series.samples[: i + 1], series.max_slot_wal_keep_size).forecast().eta_seconds
        for i in range(len(series.samples))
    )


@pytest.mark.parametrize(
    ("series", "expected_eta", "expected_ratio"),
    [
        pytest.param(
            Series([sample(0.0, 200 * SEGMENT, 199 * SEGMENT, GiB)], GiB),
            INF,
            pytest.approx((GiB - 0) / GiB),
            id="single-sample-is-unknown",
        ),
        pytest.param(
            dying(rate=MiB, keep=GiB, head_start=0),
            # Remaining at the last poll, shrinking by the WAL rate.
            pytest.approx(safe_wal_size(100 * SEGMENT, 100 * SEGMENT + 600 * MiB, GiB) / MiB),
            pytest.approx(safe_wal_size(100 * SEGMENT, 100 * SEGMENT + 600 * MiB, GiB) / GiB),
            id="steady-shrink-limited",
        ),
        pytest.param(
            dying(rate=MiB, keep=GiB, head_start=0, polls=5),
            INF,
            pytest.approx(safe_wal_size(100 * SEGMENT, 100 * SEGMENT + 60 * MiB, GiB) / GiB),
            id="shrinking-but-samples-span-too-little",
        ),
        pytest.param(
            Series(
                [
                    sample(0.0, 200 * SEGMENT, 199 * SEGMENT, GiB),
                    sample(900.0, 200 * SEGMENT + 900 * 100_000, 199 * SEGMENT, GiB),
                ],
                GiB,
            ),
            pytest.approx(safe_wal_size(199 * SEGMENT, 200 * SEGMENT + 900 * 100_000, GiB) / 1e5),
            None,
            id="poll-interval-longer-than-window-uses-baseline",
        ),
        pytest.param(
            Series(
                # Frozen for ten minutes, then (long after) caught up to a steady 400MiB behind.
                dying(rate=MiB, keep=GiB, head_start=0).samples
                + [
                    sample(
                        t,
                        200 * SEGMENT + int(t) * MiB,
                        200 * SEGMENT + int(t) * MiB - 400 * MiB,
                        GiB,
                    )
                    for t in range(2000, 2700, 15)
                ],
                GiB,
            ),
            INF,
            None,
            id="old-shrink-outside-window-forgotten",
        ),
        pytest.param(
            Series(
                [
                    sample(0.0, 200 * SEGMENT, 150 * SEGMENT, GiB),
                    sample(300.0, 200 * SEGMENT, 170 * SEGMENT, GiB),
                    sample(600.0, 200 * SEGMENT, 190 * SEGMENT, GiB),
                ],
                GiB,
            ),
            INF,
            None,
            id="catching-up-is-not-shrinking",
        ),
        pytest.param(
            Series([sample(t, 300 * SEGMENT, 299 * SEGMENT, GiB) for t in range(0, 601, 15)], GiB),
            INF,
            None,
            id="idle-is-not-shrinking",
        ),
        pytest.param(
            Series([sample(0.0, 200 * SEGMENT, 100 * SEGMENT, 64 * MiB)], 64 * MiB),
            0.0,
            pytest.approx(safe_wal_size(100 * SEGMENT, 200 * SEGMENT, 64 * MiB) / (64 * MiB)),
            id="negative-safe-wal-size-is-exhausted",
        ),
        pytest.param(
            Series(
                [
                    sample(0.0, 200 * SEGMENT, 199 * SEGMENT, GiB),
                    Sample(15.0, 200 * SEGMENT, None, None, None, False),
                ],
                GiB,
            ),
            0.0,
            0.0,
            id="lost-restart-lsn-is-exhausted",
        ),
        pytest.param(
            Series([sample(0.0, 200 * SEGMENT + MiB, 200 * SEGMENT, 0)], 0),
            INF,
            None,
            id="zero-limit-has-no-ratio",
        ),
    ],
)
def test_invalidation_eta(series: Series, expected_eta: object, expected_ratio: object) -> None:
    forecast = series.forecast()
    assert forecast.eta_seconds == expected_eta
    if expected_ratio is not None:
        assert forecast.ratio == expected_ratio


@pytest.mark.parametrize(
    ("series", "true_eta"),
    [
        pytest.param(
            dying(rate=MiB, keep=4 * GiB, head_start=0),
            safe_wal_size(100 * SEGMENT, 100 * SEGMENT + 600 * MiB, 4 * GiB) / MiB,
            id="1MiB/s-into-4GiB",
        ),
        pytest.param(
            dying(rate=8 * MiB, keep=8 * GiB, head_start=GiB),
            safe_wal_size(100 * SEGMENT, 100 * SEGMENT + GiB + 600 * 8 * MiB, 8 * GiB) / (8 * MiB),
            id="8MiB/s-into-8GiB",
        ),
        pytest.param(
            dying(rate=50_000, keep=512 * MiB, head_start=100 * MiB),
            safe_wal_size(100 * SEGMENT, 100 * SEGMENT + 100 * MiB + 30_000_000, 512 * MiB)
            / 50_000,
            id="50kB/s-into-512MiB",
        ),
        pytest.param(
            noisy_dying(rate=MiB, keep=2 * GiB, head_start=GiB, seed=7),
            None,
            id="bursty-wal-late-polls-outliers",
        ),
    ],
)
def test_steady_shrink_eta_within_five_percent(series: Series, true_eta: float | None) -> None:
    last = series.samples[-1]
    assert last.safe_wal_size is not None
    expected = true_eta if true_eta is not None else last.safe_wal_size / MiB
    forecast = series.forecast()
    assert forecast.eta_seconds == pytest.approx(expected, rel=0.05)
    # Asked a minute later (the window slides a little), the same samples forecast a minute less.
    later = series.forecast(now=series.now + 60.0)
    assert later.eta_seconds == pytest.approx(forecast.eta_seconds - 60.0, rel=0.01)


@pytest.mark.parametrize(
    ("rate", "keep"),
    [
        pytest.param(10_000, 512 * MiB, id="10kB/s-512MiB"),
        pytest.param(30_000, 64 * MiB, id="30kB/s-64MiB"),
        pytest.param(100_000, 128 * MiB, id="100kB/s-128MiB"),
        pytest.param(100_000, 512 * MiB, id="100kB/s-512MiB"),
        pytest.param(MiB, 512 * MiB, id="1MiB/s-512MiB"),
        pytest.param(3 * MiB, GiB, id="3MiB/s-1GiB"),
        pytest.param(MiB, 4 * GiB, id="1MiB/s-4GiB"),
        pytest.param(20 * MiB, 4 * GiB, id="20MiB/s-4GiB"),
    ],
)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_healthy_sawtooth_never_forecasts_a_short_eta(rate: float, keep: int, seed: int) -> None:
    series = healthy_sawtooth(rate, keep, seed)
    sizes = [s.safe_wal_size for s in series.samples if s.safe_wal_size is not None]
    # The series really saw-tooths: safe_wal_size both falls and jumps back up.
    steps = [b - a for a, b in itertools.pairwise(sizes)]
    assert any(step < 0 for step in steps)
    assert any(step > 0 for step in steps)
    assert worst_eta(series) > 2 * AT_RISK_ETA


@pytest.mark.parametrize(
    ("samples", "keep", "budget", "expected"),
    [
        pytest.param(
            [sample(0.0, 200 * SEGMENT, 199 * SEGMENT, GiB)],
            GiB,
            None,
            Forecast(INF, GiB, GiB, 1.0, None),
            id="limited-single-sample",
        ),
        pytest.param(
            [sample(t, 200 * SEGMENT + int(t) * MiB, 190 * SEGMENT, -1) for t in range(0, 601, 15)],
            -1,
            None,
            Forecast(INF, None, None, None, None),
            id="unlimited-without-budget-never-forecasts",
        ),
        pytest.param(
            [sample(t, 200 * SEGMENT + int(t) * MiB, 200 * SEGMENT, -1) for t in range(0, 601, 15)],
            -1,
            2 * GiB,
            Forecast(
                (2 * GiB - 600 * MiB) / MiB,
                2 * GiB - 600 * MiB,
                2 * GiB,
                (2 * GiB - 600 * MiB) / (2 * GiB),
                float(MiB),
            ),
            id="unlimited-with-budget-shrinking",
        ),
        pytest.param(
            [sample(t, 200 * SEGMENT, 200 * SEGMENT - MiB, -1) for t in range(0, 601, 15)],
            -1,
            2 * GiB,
            Forecast(INF, 2 * GiB - MiB, 2 * GiB, (2 * GiB - MiB) / (2 * GiB), 0.0),
            id="unlimited-with-budget-steady",
        ),
        pytest.param(
            [sample(0.0, 300 * SEGMENT, 100 * SEGMENT, -1)],
            -1,
            GiB,
            Forecast(0.0, GiB - 200 * SEGMENT, GiB, (GiB - 200 * SEGMENT) / GiB, None),
            id="unlimited-over-budget-is-exhausted",
        ),
    ],
)
def test_budget_limited_and_unlimited(
    samples: list[Sample], keep: int, budget: int | None, expected: Forecast
) -> None:
    forecast = invalidation_eta(samples, keep, budget, WINDOW, samples[-1].at)
    assert forecast.remaining_bytes == expected.remaining_bytes
    assert forecast.budget_bytes == expected.budget_bytes
    assert forecast.ratio == expected.ratio
    assert forecast.shrink_bytes_per_second == expected.shrink_bytes_per_second
    assert forecast.eta_seconds == pytest.approx(expected.eta_seconds)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        pytest.param(
            lambda: Sample(0.0, 1000, 900, 800, 5000, True), 5000, id="limited-is-safe-wal-size"
        ),
        pytest.param(lambda: Sample(0.0, 1000, 900, None, None, False), None, id="lost"),
    ],
)
def test_remaining_budget(make: Callable[[], Sample], expected: int | None) -> None:
    assert remaining_budget(make(), GiB, None) == expected
    assert remaining_budget(make(), -1, None) is None
    if expected is not None:
        assert remaining_budget(make(), -1, 10_000) == 10_000 - 200


def test_eta_is_never_nan_or_negative() -> None:
    for seed in range(20):
        rng = random.Random(seed)  # noqa: S311 - seeded, reproducible fixtures, not secrets
        samples = [
            sample(
                float(t),
                200 * SEGMENT + rng.randrange(0, 500 * MiB),
                150 * SEGMENT + rng.randrange(0, 50 * SEGMENT),
                GiB,
            )
            for t in range(0, 1200, 15)
        ]
        eta = invalidation_eta(samples, GiB, None, WINDOW, samples[-1].at).eta_seconds
        assert not math.isnan(eta)
        assert eta >= 0
