"""Decide each slot's state (docs/contract.md §2), with reasons and figures, from rows and track.

Pure: `observe` advances a slot's memory by one poll, `classify` reads a verdict from it. The
caller owns the clock and the storage, and calls both once per poll per slot, in that order.

How the stall clock is measured: a poll only sees `confirmed_flush_lsn` at poll times, so the
moment it stopped is known to within one poll interval. The clock starts at the *earliest poll
that already saw the current position with at least the lag floor waiting*: that poll proves the
position was stuck by then, and the poll before it either saw another position or too little WAL
to matter. So the stall is measured from below, never above, with at most one poll interval of
error: `wedged` is never claimed early. The local inactivity clock works the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

from slotwatch.judge.forecast import Forecast, invalidation_eta, wal_rate, window_samples
from slotwatch.model import Assessment, Sample, ServerRow, SlotRow, SlotState, SlotTrack, Thresholds
from slotwatch.units import format_bytes, format_duration

# What a stopped consumer's socket buffers can still take in (Linux autotunes a TCP receive plus
# send buffer to a few MiB each): below this much unconfirmed WAL, a walsender that has sent
# everything does not prove that the consumer reads.
SOCKET_BUFFER_BYTES = 16 * 1024 * 1024

# Upper bound on remembered samples per slot, whatever the poll interval and window: memory
# stays flat over weeks even with a window far longer than the poll interval.
MAX_SAMPLES = 512


def observe(
    prev: SlotTrack | None, row: SlotRow, server: ServerRow, at: float, th: Thresholds
) -> SlotTrack:
    """The slot's track after the poll taken at `at` (local clock, seconds since the epoch)."""
    sample = Sample(
        at=at,
        current_lsn=server.current_lsn,
        confirmed_flush_lsn=row.confirmed_flush_lsn,
        restart_lsn=row.restart_lsn,
        safe_wal_size=row.safe_wal_size,
        active=row.active,
    )
    history: Sequence[Sample] = prev.samples if prev is not None else ()
    samples = _bounded([*history, sample], th.forecast_window, at)

    stall_since = _stall_since(prev, history, sample, th)

    inactive_since: float | None = None
    if not row.active:
        earlier = prev.inactive_since if prev is not None else None
        # After the clock steps back, an instant from "the future" would never age: restart.
        inactive_since = earlier if earlier is not None and earlier <= at else at

    return SlotTrack(
        first_seen=prev.first_seen if prev is not None else at,
        last_confirmed_lsn=row.confirmed_flush_lsn,
        stall_since=stall_since,
        inactive_since=inactive_since,
        samples=samples,
    )


def _stall_since(
    prev: SlotTrack | None, history: Sequence[Sample], sample: Sample, th: Thresholds
) -> float | None:
    confirmed = sample.confirmed_flush_lsn
    if (
        prev is None
        or confirmed is None
        or _lag(sample.current_lsn, confirmed) < th.lag_floor_bytes
    ):
        return None
    # A position that went backwards (crash recovery restores the slot as of the last
    # checkpoint) is a new start like an advance, never a negative stall.
    if prev.last_confirmed_lsn != confirmed:
        return None
    if prev.stall_since is not None:
        return min(prev.stall_since, sample.at)
    last = history[-1] if history else None
    if (
        last is not None
        and last.at < sample.at
        and last.confirmed_flush_lsn == confirmed
        and _lag(last.current_lsn, confirmed) >= th.lag_floor_bytes
    ):
        # The previous poll already saw this position with WAL waiting behind it.
        return last.at
    return sample.at


def classify(
    row: SlotRow,
    server: ServerRow,
    track: SlotTrack,
    th: Thresholds,
    polled_once: bool = False,
) -> Assessment:
    """The slot's state for the latest observed poll: the first that applies (docs/contract.md §2).

    `polled_once` is for one-shot commands that have no history: they never claim `wedged`, and
    time inactivity only from the server's own `inactive_since`.
    """
    now = track.samples[-1].at if track.samples else track.first_seen
    current = server.current_lsn
    lag = _lag(current, row.confirmed_flush_lsn) if row.confirmed_flush_lsn is not None else None
    retained = _lag(current, row.restart_lsn) if row.restart_lsn is not None else None
    sent_lag = _lag(current, row.sent_lsn) if row.sent_lsn is not None else None

    stall = 0.0
    if not polled_once and track.stall_since is not None:
        stall = max(0.0, now - track.stall_since)

    inactive, inactive_source = _inactive(row, track, now, polled_once)

    forecast = invalidation_eta(
        track.samples, server.max_slot_wal_keep_size, th.wal_budget_bytes, th.forecast_window, now
    )
    recent = window_samples(track.samples, th.forecast_window, now)
    rate = wal_rate([(sample.at, sample.current_lsn) for sample in recent])

    def verdict(state: SlotState, reasons: list[str]) -> Assessment:
        return Assessment(
            state=state,
            reasons=tuple(reasons),
            lag_bytes=lag,
            retained_wal_bytes=retained,
            sent_lag_bytes=sent_lag,
            flush_stall_seconds=stall,
            inactive_seconds=inactive,
            invalidation_eta_seconds=forecast.eta_seconds,
            wal_budget_bytes=forecast.budget_bytes,
            wal_budget_ratio=forecast.ratio,
            wal_rate_bytes_per_second=rate,
        )

    lost = _lost_reasons(row)
    if lost:
        return verdict(SlotState.LOST, lost)

    at_risk = _at_risk_reasons(row, forecast, th)
    if at_risk:
        return verdict(SlotState.AT_RISK, at_risk)

    if not row.active and row.consumer_busy:
        where = f" in database {row.database}" if row.database else ""
        return verdict(
            SlotState.SNAPSHOTTING,
            [
                f"no walsender holds the slot, but a consumer session is busy{where}: "
                "initial snapshot copy",
                f"{format_bytes(retained)} of WAL retained while the copy runs",
            ],
        )

    # Reasons that qualify whichever lag-based state follows.
    notes: list[str] = []
    if not row.active:
        if inactive_source is None:
            notes.append(
                "no walsender holds the slot; for how long cannot be told from one poll "
                "(this PostgreSQL does not report inactive_since)"
            )
        elif inactive >= th.inactive_after:
            return verdict(
                SlotState.INACTIVE,
                [
                    f"no walsender for {format_duration(inactive)} ({inactive_source})",
                    f"{format_bytes(retained)} of WAL retained, {format_bytes(lag)} unconfirmed",
                ],
            )
        else:
            notes.append(
                f"no walsender for {format_duration(inactive)}, under the "
                f"{format_duration(th.inactive_after)} allowed for a reconnect"
            )

    waiting = lag is not None and lag >= th.lag_floor_bytes
    if polled_once and waiting:
        notes.append(
            f"{format_bytes(lag)} of WAL waits to be confirmed; whether confirmed_flush_lsn is "
            "stalled cannot be judged from one poll"
        )

    if row.active and stall > 0 and stall >= th.stall_after:
        return verdict(
            SlotState.WEDGED,
            [
                f"confirmed_flush_lsn has not advanced for {format_duration(stall)} "
                f"with {format_bytes(lag)} of WAL waiting",
                *_reading_reasons(row, sent_lag, lag, th),
                *_timeout_reasons(server),
                *notes,
            ],
        )
    if stall > 0:
        notes.append(
            f"confirmed_flush_lsn has not advanced for {format_duration(stall)} with "
            f"{format_bytes(lag)} of WAL waiting (wedged after {format_duration(th.stall_after)})"
        )
        notes.extend(_reading_reasons(row, sent_lag, lag, th) if row.active else [])

    if lag is not None and lag > th.lag_warn_bytes:
        return verdict(
            SlotState.LAGGING,
            [
                f"{format_bytes(lag)} behind (warning above {format_bytes(th.lag_warn_bytes)})",
                *notes,
            ],
        )

    if lag is None:
        summary = "confirmed_flush_lsn is unknown"
    elif stall > 0:
        summary = f"{format_bytes(lag)} behind"
    elif _advanced(track):
        summary = f"advancing; {format_bytes(lag)} behind"
    elif not waiting:
        summary = f"idle: nothing to confirm ({format_bytes(lag)} behind)"
    else:
        summary = f"{format_bytes(lag)} behind"
    return verdict(SlotState.HEALTHY, [summary, *notes])


def _inactive(
    row: SlotRow, track: SlotTrack, now: float, polled_once: bool
) -> tuple[float, str | None]:
    """Seconds without a walsender, and who says so (None when it cannot be told)."""
    if row.active:
        return 0.0, ""
    if row.server_inactive_seconds is not None:
        return max(0.0, row.server_inactive_seconds), "PostgreSQL reports inactive_since"
    if polled_once:
        return 0.0, None
    since = track.inactive_since if track.inactive_since is not None else now
    return (
        max(0.0, now - since),
        "seen by slotwatch; this PostgreSQL does not report inactive_since",
    )


def _advanced(track: SlotTrack) -> bool:
    if len(track.samples) < 2:
        return False
    before, now = track.samples[-2].confirmed_flush_lsn, track.samples[-1].confirmed_flush_lsn
    return before is not None and now is not None and now > before


def _lost_reasons(row: SlotRow) -> list[str]:
    reasons: list[str] = []
    if row.wal_status == "lost":
        reasons.append("PostgreSQL reports wal_status 'lost': WAL the slot needs was removed")
    if row.invalidation_reason:
        reasons.append(f"the slot was invalidated ({row.invalidation_reason})")
    if row.restart_lsn is None:
        reasons.append("restart_lsn is gone: the slot no longer reserves any WAL")
    if reasons:
        reasons.append(
            "the consumer must create a new slot and copy everything again; "
            "this one only has to be dropped"
        )
    return reasons


def _at_risk_reasons(row: SlotRow, forecast: Forecast, th: Thresholds) -> list[str]:
    reasons: list[str] = []
    if row.wal_status == "unreserved":
        reasons.append(
            f"wal_status is 'unreserved' (safe_wal_size {format_bytes(row.safe_wal_size)}): "
            "the next checkpoint may remove WAL the slot needs"
        )
    if forecast.eta_seconds <= 0:
        reasons.append(
            f"its WAL budget of {format_bytes(forecast.budget_bytes)} is used up "
            f"({format_bytes(forecast.remaining_bytes)} left)"
        )
    elif forecast.eta_seconds < th.at_risk_eta:
        shrink = forecast.shrink_bytes_per_second
        pace = f" at {format_bytes(shrink)}/s" if shrink else ""
        reasons.append(
            f"forecast to exhaust its WAL budget in {format_duration(forecast.eta_seconds)}"
            f"{pace} ({format_bytes(forecast.remaining_bytes)} left)"
        )
    if forecast.ratio is not None and forecast.ratio < th.at_risk_budget_ratio:
        reasons.append(
            f"{max(0.0, forecast.ratio) * 100:.0f}% of its "
            f"{format_bytes(forecast.budget_bytes)} WAL budget left "
            f"(at risk under {th.at_risk_budget_ratio * 100:.0f}%)"
        )
    return reasons


def _reading_reasons(
    row: SlotRow, sent_lag: int | None, lag: int | None, th: Thresholds
) -> list[str]:
    # The walsender's sent_lsn tells a consumer that stopped reading (the server cannot send)
    # from one that reads but never confirms (it receives everything, acknowledges nothing).
    if sent_lag is None:
        return ["no walsender row to tell whether the consumer still reads"]
    if sent_lag >= th.lag_floor_bytes:
        return [f"the consumer is not reading: its walsender has {format_bytes(sent_lag)} unsent"]
    if lag is not None and lag <= SOCKET_BUFFER_BYTES:
        # A frozen process still "receives" until the kernel's socket buffers are full: all
        # sent proves nothing while the unconfirmed WAL would fit in them.
        return [
            f"its walsender has sent all but {format_bytes(sent_lag)}, but the "
            f"{format_bytes(lag)} unconfirmed may still sit in socket buffers: whether the "
            "consumer reads cannot be told yet"
        ]
    return [
        f"the consumer reads (sent to within {format_bytes(sent_lag)} of the head) "
        "but does not confirm"
    ]


def _timeout_reasons(server: ServerRow) -> list[str]:
    if server.wal_sender_timeout <= 0:
        return ["wal_sender_timeout is 0: the server will never cut a hung consumer"]
    return []


def _lag(current: int, position: int) -> int:
    # A position past the WAL head only happens across a restore; it is nothing behind.
    return max(0, current - position)


def _bounded(samples: list[Sample], window: float, now: float) -> tuple[Sample, ...]:
    # After a clock step backwards, samples from "the future" would poison every slope.
    kept = window_samples(samples, window, now)
    return tuple(kept[-MAX_SAMPLES:])
