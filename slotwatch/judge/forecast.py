"""Forecast, from a slot's recent samples, how long until it is invalidated or exhausts its budget.

Pure functions over plain numbers and `Sample`s: no clock, no I/O.

Choices, and why:

* The remaining budget is forecast from its own slope (bytes of budget lost per second), not
  from the WAL write rate. A slot whose consumer keeps up loses no budget however fast WAL is
  written; only the budget's own trend tells a healthy slot from a dying one. A WAL-rate
  estimate ("remaining / WAL rate") is the worst case of a consumer that stops *now*: it is
  short for every busy healthy slot and would page on it, so it is not used.
* The level is the latest remaining budget (`safe_wal_size` under a limit); the trend is taken
  from the retained WAL (`current_lsn - restart_lsn`), whose slope is exactly minus the budget's.
  `safe_wal_size` itself only moves in whole WAL segments as `restart_lsn` crosses them: on a
  quiet healthy slot it falls steadily for as long as a segment takes to fill, then jumps back,
  and that coarse saw-tooth would read as a steady shrink.
* The slope is a Theil-Sen estimate (median of pairwise slopes), robust to outliers and noise,
  over pairs at least half the sampled span apart: close pairs inside one confirm cycle see the
  full WAL rate as a shrink, far pairs see the net trend (flat for a healthy slot).
* A "shrink" whose whole fall over the sampled span stays within the interquartile range of what
  the trend does not explain is the saw-tooth sampled unluckily, and counts as no shrink.
* No ETA until the samples span half the window: a few samples a poll apart are mostly the
  saw-tooth. Until then the ETA is +Inf ("unknown"); the budget ratio and `wal_status` are what
  flag a slot already close to the edge, so nothing is lost at start-up. A frozen slot reads as
  shrinking at the true rate within about half a window of its consumer stopping.
* A slot whose restart_lsn held still over the window (a stopped consumer) has the shape of the
  server's own WAL position: every such slot of a target is the same fit, made once a poll
  (`_fit` is keyed by the shape, each value less the first, which changes no slope).
* The WAL rate is the mean (bytes written / time), not a median: WAL comes in bursts and every
  byte of a burst counts against the budget, where a median of a bursty series reads 0.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import math
import operator
import statistics
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import sub, truediv
from typing import TypeVar

from slotwatch.model import INF, Sample, Trend

# Theil-Sen is quadratic in the number of points; a window thinned to this many evenly spaced
# points keeps one estimate near a millisecond without changing the trend it reads.
MAX_SLOPE_POINTS = 128

# Fraction of the window the samples must span before their slope is trusted.
MIN_SPAN_FRACTION = 0.5

# Pairs used for the budget slope must be at least this fraction of the sampled span apart.
PAIR_SEPARATION_FRACTION = 0.5


@dataclass(frozen=True, slots=True)
class Forecast:
    """How much budget a slot has left, how fast it is losing it, and when it runs out."""

    eta_seconds: float  # 0 when exhausted; INF when not shrinking, unknown or unlimited
    remaining_bytes: int | None  # None when there is no budget to measure against
    budget_bytes: int | None  # max_slot_wal_keep_size, or the configured budget when unlimited
    ratio: float | None  # remaining / budget; None without a (positive) budget
    shrink_bytes_per_second: float | None  # None until the samples span enough time


def theil_sen_slope(
    points: Sequence[tuple[float, float]], min_separation: float = 0.0
) -> float | None:
    """Median of the slopes between every pair of points at least `min_separation` apart in time.

    None when no such pair exists (in particular with fewer than two distinct times).
    """
    ordered = sorted(points, key=_time)
    return _slope([at for at, _ in ordered], [value for _, value in ordered], min_separation)


def _slope(times: Sequence[float], values: Sequence[float], min_separation: float) -> float | None:
    """`theil_sen_slope` over two columns already in time order."""
    if len(times) > MAX_SLOPE_POINTS:
        step = (len(times) - 1) / (MAX_SLOPE_POINTS - 1)
        picks = [round(i * step) for i in range(MAX_SLOPE_POINTS)]
        times, values = [times[k] for k in picks], [values[k] for k in picks]
    pairs = _pairs(tuple(times), min_separation)
    if pairs is None:
        return None
    later, earlier, gaps = pairs
    # The pairs depend on the times alone, and every slot of a target is sampled at the same
    # times: they are worked out once (below) and each slot only gathers and divides, in C.
    slopes: list[float] = list(map(truediv, map(sub, later(values), earlier(values)), gaps))
    return statistics.median(slopes)


Gather = Callable[[Sequence[float]], Sequence[float]]


# A target's slots share one entry; a few targets polled at once share the cache.
@functools.lru_cache(maxsize=16)
def _pairs(
    times: tuple[float, ...], min_separation: float
) -> tuple[Gather, Gather, list[float]] | None:
    """For sorted `times`: who the pairs at least `min_separation` apart are, and their gaps.

    Each pair (i, j) has j after every point closer than `min_separation` to i and after every
    point at i's own time; since the times are sorted, j runs over a suffix of them.
    """
    later: list[int] = []
    earlier: list[int] = []
    for i, t_i in enumerate(times):
        first = max(
            bisect.bisect_left(times, t_i + min_separation), bisect.bisect_right(times, t_i)
        )
        later += range(first, len(times))
        earlier += [i] * (len(times) - first)
    if not later:
        return None
    gaps = [times[j] - times[i] for i, j in zip(earlier, later, strict=True)]
    return _gather(later), _gather(earlier), gaps


def _gather(indices: list[int]) -> Gather:
    if len(indices) == 1:
        only = indices[0]
        return lambda values: (values[only],)
    return operator.itemgetter(*indices)


def wal_rate(points: Sequence[tuple[float, int]]) -> float | None:
    """Mean WAL bytes written per second over `(time, current_lsn)` points; None if no time passed.

    A position that goes backwards (a restore or crash recovery onto an older timeline) adds
    nothing: the positions on either side are not comparable, so that step counts as zero bytes
    while its time still counts. The rate is therefore never negative.
    """
    ordered = sorted(points, key=_time)
    if len(ordered) < 2:
        return None
    elapsed = ordered[-1][0] - ordered[0][0]
    if elapsed <= 0:
        return None
    written = sum(
        max(0, later - earlier) for (_, earlier), (_, later) in itertools.pairwise(ordered)
    )
    return written / elapsed


def wal_budget(max_slot_wal_keep_size: int, wal_budget_bytes: int | None) -> int | None:
    """The budget a slot is measured against: the server's limit, else the configured one."""
    if max_slot_wal_keep_size >= 0:
        return max_slot_wal_keep_size
    return wal_budget_bytes


def remaining_budget(
    sample: Sample, max_slot_wal_keep_size: int, wal_budget_bytes: int | None
) -> int | None:
    """Bytes of WAL the slot may still fall behind before invalidation (limit) or the budget.

    With a server limit that is `safe_wal_size` as PostgreSQL computes it (negative while
    unreserved). Unlimited, it is the configured budget minus the WAL the slot retains.
    None when it cannot be told: no budget, or no `restart_lsn` (the slot is lost).
    """
    if sample.restart_lsn is None:
        return None
    if max_slot_wal_keep_size >= 0:
        return sample.safe_wal_size
    if wal_budget_bytes is None:
        return None
    return wal_budget_bytes - max(0, sample.current_lsn - sample.restart_lsn)


def window_samples(samples: Sequence[Sample], window: float, now: float) -> list[Sample]:
    """The samples taken within `window` before `now`, plus the newest older one as a baseline."""
    # One rule for samples and trends: `_picks`, over the samples' times.
    return _take(samples, _picks(tuple([s.at for s in samples]), window, now))


_T = TypeVar("_T")

# Which points of a series a window keeps: runs of it (slices, in order), or, for a series out of
# time order, the indices of the points in time order.
Picks = tuple[slice, ...] | list[int]


def _picks(times: tuple[float, ...], window: float, now: float) -> Picks:
    """The one window rule, as the points of `times` it keeps: those within `window` before
    `now`, plus the newest older one (the first of its ties) as a baseline, in time order;
    points from after `now` (a clock stepped back) go."""
    if all(map(operator.le, times, times[1:])):  # in time order, as a track keeps it
        end = bisect.bisect_right(times, now)
        start = bisect.bisect_left(times, now - window, 0, end)
        if start == 0:
            return (slice(0, end),)
        older = bisect.bisect_left(times, times[start - 1], 0, start)
        if older == start - 1:
            return (slice(older, end),)
        return (slice(older, older + 1), slice(start, end))
    cutoff = now - window
    recent: list[int] = []
    baseline: int | None = None
    for i, at in enumerate(times):
        if at > now:
            continue
        if at >= cutoff:
            recent.append(i)
        elif baseline is None or at > times[baseline]:
            baseline = i
    if baseline is not None:
        recent.insert(0, baseline)
    recent.sort(key=times.__getitem__)  # stable: ties keep the baseline first
    return recent


def _take(items: Sequence[_T], picks: Picks) -> list[_T]:
    """The items that `picks` keeps, in its order."""
    if isinstance(picks, list):
        return [items[i] for i in picks]
    return [item for run in picks for item in items[run]]


def _taken(times: tuple[float, ...], picks: Picks) -> tuple[float, ...]:
    if len(picks) == 1 and isinstance(picks, tuple):
        return times[picks[0]]  # one run: the slice is the tuple, no copy point by point
    return tuple(_take(times, picks))


def _taken_values(values: array[float], picks: Picks) -> array[float]:
    if isinstance(picks, list):
        return array("d", [values[i] for i in picks])
    kept = values[picks[0]]  # a slice is sized to fit
    for run in picks[1:]:
        kept += values[run]
    return kept


def grown_trend(trend: Trend, at: float, retained: float, window: float, most: int) -> Trend:
    """`trend` with the point (`at`, `retained`) added, cut by the window rule (`_picks`) to the
    window before `at` and then to its newest `most` points.

    Which points stay depends on the times alone, which every slot of a target shares: that is
    worked out once a poll (`_cut`), and the slots share the times it keeps as one tuple.
    """
    values = trend.retained + array("d", (retained,))
    times, picks = _cut((*trend.times, at), window, most)
    if picks is None:
        return Trend(times, values)
    return Trend(times, _taken_values(values, picks))


@functools.lru_cache(maxsize=16)
def _cut(
    times: tuple[float, ...], window: float, most: int
) -> tuple[tuple[float, ...], Picks | None]:
    """The times a trend at `times` keeps (see `grown_trend`), and which of its values go with
    them; None when it keeps them all, in order."""
    picks = _picks(times, window, times[-1])
    if picks == (slice(0, len(times)),) and len(times) <= most:
        return times, None
    kept = _taken(times, picks)
    if len(kept) > most:  # a poll interval far below the window: the newest `most` points
        if not isinstance(picks, list):
            picks = [i for run in picks for i in range(len(times))[run]]
        picks, kept = picks[-most:], kept[-most:]
    return kept, picks


def trend_of(samples: Sequence[Sample]) -> Trend:
    """The retained-WAL trend of `samples`, in their order."""
    return Trend(tuple([s.at for s in samples]), array("d", [retained_of(s) for s in samples]))


def retained_of(sample: Sample) -> float:
    if sample.restart_lsn is None:
        return math.nan
    return float(sample.restart_lsn - sample.current_lsn)


def invalidation_eta(
    samples: Sequence[Sample],
    max_slot_wal_keep_size: int,
    wal_budget_bytes: int | None,
    window: float,
    now: float,
) -> Forecast:
    """Forecast seconds from `now` until the slot's remaining budget reaches zero.

    0 when it already has, or when the slot has lost its `restart_lsn`; +Inf when the budget is
    not shrinking, when there is no budget (unlimited and none configured), or when the recent
    samples are too few or too close together to tell.
    """
    recent = window_samples(samples, window, now)
    if not recent:
        budget = wal_budget(max_slot_wal_keep_size, wal_budget_bytes)
        return Forecast(INF, None, budget, None, None)
    return trend_eta(
        trend_of(recent),
        recent[-1],
        max_slot_wal_keep_size,
        wal_budget_bytes,
        window=window,
        now=now,
    )


def trend_eta(
    trend: Trend,
    latest: Sample,
    max_slot_wal_keep_size: int,
    wal_budget_bytes: int | None,
    *,
    window: float,
    now: float,
) -> Forecast:
    """`invalidation_eta` over a trend already cut to the window (as a slot's track keeps it),
    whose newest point is `latest`'s."""
    budget = wal_budget(max_slot_wal_keep_size, wal_budget_bytes)
    if latest.restart_lsn is None:
        # Invalidated: nothing is left, whether or not there was a budget to speak of.
        return Forecast(0.0, 0 if budget is not None else None, budget, _ratio(0, budget), None)
    remaining = remaining_budget(latest, max_slot_wal_keep_size, wal_budget_bytes)
    if remaining is None:
        return Forecast(INF, None, budget, None, None)
    ratio = _ratio(remaining, budget)
    if remaining <= 0:
        return Forecast(0.0, remaining, budget, ratio, None)

    # The trend comes from the retained WAL, whose slope is minus the budget's: safe_wal_size
    # only moves in whole segments as restart_lsn crosses them, and that coarse saw-tooth would
    # read as a steady shrink for as long as one segment takes to fill.
    times: Sequence[float] = trend.times
    values: Sequence[float] = trend.retained.tolist()  # boxed once, not at every pair
    if any(map(math.isnan, values)):  # points from before the slot lost its restart_lsn
        kept = [(at, v) for at, v in zip(times, values, strict=True) if not math.isnan(v)]
        times, values = [at for at, _ in kept], [v for _, v in kept]
    span = times[-1] - times[0] if times else 0.0
    if span <= 0 or span < window * MIN_SPAN_FRACTION:
        return Forecast(INF, remaining, budget, ratio, None)
    first = values[0]
    slope, spread = _fit(tuple(times), tuple([v - first for v in values]), span)
    if slope is None:
        return Forecast(INF, remaining, budget, ratio, None)
    shrink = max(0.0, -slope)
    if shrink == 0 or shrink * span <= spread:
        return Forecast(INF, remaining, budget, ratio, 0.0)
    eta = max(0.0, remaining / shrink - max(0.0, now - latest.at))
    return Forecast(eta, remaining, budget, ratio, shrink)


def _ratio(remaining: int, budget: int | None) -> float | None:
    # A zero budget (max_slot_wal_keep_size = 0) has no meaningful fraction; the ETA and
    # wal_status still speak for such a slot.
    if budget is None or budget <= 0:
        return None
    return remaining / budget


# Slots fitted one after another: a target's stopped consumers share an entry while the slots
# between them that have shapes of their own are fewer than this.
@functools.lru_cache(maxsize=64)
def _fit(
    times: tuple[float, ...], shape: tuple[float, ...], span: float
) -> tuple[float | None, float]:
    """The slope of a trend (over pairs at least half its `span` apart) and, when it shrinks
    the budget, the spread of what it leaves unexplained; 0.0 where that is not needed.

    `shape` is the trend's values less the first: the differences of whole byte counts are exact,
    so every slope is the one the values themselves give.
    """
    slope = _slope(times, shape, span * PAIR_SEPARATION_FRACTION)
    if slope is None or slope >= 0:
        return slope, 0.0
    return slope, _spread(times, shape, slope)


def _spread(times: Sequence[float], values: Sequence[float], slope: float) -> float:
    # The interquartile range of what the trend line does not explain: for a healthy slot that is
    # the saw-tooth of restart_lsn's jumps, and a "trend" whose whole fall over the sampled span
    # stays inside it is that saw-tooth sampled unluckily, not a slot losing its budget. Taken
    # from the first point's time, which moves no quartile and keeps the products small.
    if len(values) < 4:
        return 0.0
    start = times[0]
    residuals = sorted(
        [value - slope * (at - start) for at, value in zip(times, values, strict=True)]
    )
    return _quartile(residuals, 3) - _quartile(residuals, 1)


def _quartile(ordered: Sequence[float], which: int) -> float:
    """Quartile `which` (1 to 3) of `ordered`, as `statistics.quantiles(n=4)` computes it (its
    default, exclusive method), without sorting again."""
    count = len(ordered)
    scaled = which * (count + 1)
    j = min(max(scaled // 4, 1), count - 1)
    delta = scaled - 4 * j
    return (ordered[j - 1] * (4 - delta) + ordered[j] * delta) / 4


_time = operator.itemgetter(0)
