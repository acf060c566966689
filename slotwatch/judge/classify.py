"""Decide each slot's state (docs/contract.md §2), with reasons and figures, from rows and track.

Pure: `observe` advances a slot's memory by one poll, `classify` reads a verdict from it. The
caller owns the clock and the storage, and calls both once per poll per slot, in that order.

How the stall clock is measured: a poll only sees `confirmed_flush_lsn` at poll times, so the
moment it stopped is known to within one poll interval. The clock starts at the *earliest poll
that already saw the current position with at least the lag floor waiting*: that poll proves the
position was stuck by then, and the poll before it either saw another position or too little WAL
to matter. So the stall is measured from below, never above, with at most one poll interval of
error: `wedged` is never claimed early. The local inactivity clock works the same way.

Stall and attachment: the stall clock keeps its meaning (it runs whether or not a walsender holds
the slot), but only time a walsender holds the slot is evidence of a wedge. A slot reads `wedged`
once the clock is past the stall window and either a walsender has held it for the attach grace
without the position moving (now, or before it left), or walsenders have left twice without
the position moving (a crash loop); both stay true across detach and re-attach until the
position moves, so a crash loop reads `wedged` on every poll instead of flickering.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from slotwatch.judge.forecast import (
    Forecast,
    grown_trend,
    invalidation_eta,
    retained_of,
    trend_eta,
)
from slotwatch.model import (
    Assessment,
    Attachment,
    ConsumerAccount,
    Sample,
    ServerRow,
    SlotRow,
    SlotState,
    SlotTrack,
    Thresholds,
    Trend,
    Tries,
)
from slotwatch.units import format_bytes, format_duration

# What a stopped consumer's socket buffers can still take in (Linux autotunes a TCP receive plus
# send buffer to a few MiB each): below this much unconfirmed WAL, a walsender that has sent
# everything does not prove that the consumer reads.
SOCKET_BUFFER_BYTES = 16 * 1024 * 1024

# Upper bound on remembered samples per slot, whatever the poll interval and window: memory
# stays flat over weeks even with a window far longer than the poll interval.
MAX_SAMPLES = 512

# How long a walsender that has just attached may hold a stalled slot without confirming before the
# slot can read `wedged` (never longer than the stall window). PowerSync sends a status reply every
# 10 s on a timer and its first confirm comes ~10 s after it attaches (9.9 s measured, with a
# 307 MB backlog); the reply it sends then may still carry the old position if its first batch is
# not yet committed to storage, so a second reply 10 s later is the first that must move. Three
# status intervals leave one interval for a loaded host, and stay well under PowerSync's 30 s
# retry back-off and the default 5 min window.
ATTACH_GRACE = 30.0

# Walsenders that left without the position moving, before the slot reads as crash-looping: one
# failure is a reconnect (PowerSync retries ~30 s later and then confirms); two are a pattern.
CRASH_LOOP_FAILURES = 2


@dataclass(frozen=True, slots=True)
class ConsumerEvidence:
    """The consumer's own account as it bears on one slot at one poll (built by the caller)."""

    account: ConsumerAccount
    fresh: bool  # its latest reading is recent enough to speak for this poll
    shared: str | None = None  # why it cannot speak for this slot alone, if it cannot


def attach_grace(th: Thresholds) -> float:
    """The grace of a newly attached walsender: ATTACH_GRACE, bounded by the stall window."""
    return min(th.stall_after, ATTACH_GRACE)


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
    # The last two polls in full (after a clock step back, none from "the future"); the window
    # as a trend, which is all the forecast reads of older polls.
    samples = (*[s for s in history[-1:] if s.at <= at], sample)
    trend = _bounded(prev.trend if prev is not None else Trend(), sample, th.forecast_window)

    stall_since = _stall_since(prev, history, sample, th)

    inactive_since: float | None = None
    inactive_seconds = 0.0
    if not row.active:
        earlier = prev.inactive_since if prev is not None else None
        # After the clock steps back, an instant from "the future" would never age: restart.
        inactive_since = earlier if earlier is not None and earlier <= at else at
        inactive_seconds = (
            max(0.0, row.server_inactive_seconds)
            if row.server_inactive_seconds is not None
            else at - inactive_since
        )

    moved = prev is None or prev.last_confirmed_lsn != row.confirmed_flush_lsn
    confirmed_since = (
        at
        if moved or prev is None or prev.confirmed_since is None
        else (min(prev.confirmed_since, at))
    )
    walsender, tries = _attachment(prev, row, at, moved, confirmed_since)

    return SlotTrack(
        first_seen=prev.first_seen if prev is not None else at,
        last_confirmed_lsn=row.confirmed_flush_lsn,
        stall_since=stall_since,
        inactive_since=inactive_since,
        samples=samples,
        trend=trend,
        confirmed_since=confirmed_since,
        walsender=walsender,
        tries=tries,
        inactive_seconds=inactive_seconds,
    )


def _attachment(
    prev: SlotTrack | None, row: SlotRow, at: float, moved: bool, confirmed_since: float
) -> tuple[Attachment | None, Tries]:
    """Who holds the slot now, and the tally of walsenders since the position last moved."""
    tries = Tries() if moved or prev is None else prev.tries
    before = prev.walsender if prev is not None else None
    same = before is not None and row.active and row.active_pid == before.pid
    if prev is not None and before is not None and not same and not moved:
        # It left (or was replaced) with the position stuck: how long it held the slot without
        # confirming, from its first poll (or the last move) to the last poll that saw it. One
        # that never moved the position while it held the slot is a failed attempt.
        held = max(0.0, _last_seen(prev) - max(before.since, confirmed_since))
        tries = replace(
            tries,
            failed=tries.failed + (1 if confirmed_since <= before.since else 0),
            longest_failed_hold=max(tries.longest_failed_hold, held),
        )
    if (
        not row.active
        and prev is not None
        and before is None
        and not moved
        and row.server_inactive_seconds is not None
        and row.server_inactive_seconds < prev.inactive_seconds + _gap(prev, at) - 1.0
    ):
        # PostgreSQL 17+ restarted inactive_since between two polls that both saw no walsender:
        # one attached and left unseen (a crash loop faster than the polls), without confirming.
        first_at = tries.first_at if tries.first_at is not None else at
        tries = replace(tries, count=tries.count + 1, failed=tries.failed + 1, first_at=first_at)
    if not row.active:
        return None, tries
    if same and before is not None:
        return before, tries
    if prev is None:
        # Already there when slotwatch first looked: when it attached is unknown.
        return Attachment(row.active_pid, at, seen_attaching=False), tries
    attached = Attachment(
        row.active_pid,
        at,
        seen_attaching=True,
        after_inactive=prev.inactive_seconds if before is None else None,
    )
    first_at = tries.first_at if tries.first_at is not None else at
    return attached, replace(tries, count=tries.count + 1, first_at=first_at)


def _last_seen(prev: SlotTrack) -> float:
    """When the previous poll was taken."""
    return prev.samples[-1].at if prev.samples else prev.first_seen


def _gap(prev: SlotTrack, at: float) -> float:
    return max(0.0, at - _last_seen(prev))


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
    *,
    wal_rate: float | None = None,
    consumer: ConsumerEvidence | None = None,
) -> Assessment:
    """The slot's state for the latest observed poll: the first that applies (docs/contract.md §2).

    `polled_once` is for one-shot commands that have no history: they never claim `wedged`, and
    time inactivity only from the server's own `inactive_since`. `wal_rate` is the target's WAL
    write rate (one figure per target, computed by its memory); `consumer` is the consumer's own
    account of its progress, when its metrics are read.
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

    forecast = (
        trend_eta(
            track.trend,
            track.samples[-1],
            server.max_slot_wal_keep_size,
            th.wal_budget_bytes,
            window=th.forecast_window,
            now=now,
        )
        if track.samples
        else invalidation_eta((), server.max_slot_wal_keep_size, th.wal_budget_bytes, 0.0, now)
    )

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
            wal_rate_bytes_per_second=wal_rate,
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

    evidence = _wedge_evidence(row, track, now, th) if stall > 0 else []
    if stall > 0 and stall >= th.stall_after and evidence:
        stalled = (
            f"confirmed_flush_lsn has not advanced for {format_duration(stall)} "
            f"with {format_bytes(lag)} of WAL waiting"
        )
        reading = _reading_reasons(row, sent_lag, lag, th) if row.active else []
        busy = _busy(consumer)
        if busy is not None:
            return verdict(
                SlotState.LAGGING,
                [
                    busy,
                    f"{stalled}: it is busy with it (one large transaction, or a catch-up), "
                    "not a wedge",
                    *notes,
                ],
            )
        return verdict(
            SlotState.WEDGED,
            [
                stalled,
                *evidence,
                *(_grace_notes(track, now, th) if row.active else []),
                *reading,
                *_consumer_notes(consumer),
                *(_timeout_reasons(server) if row.active else []),
                *notes,
            ],
        )
    if stall > 0:
        window = (
            f"wedged after {format_duration(th.stall_after)}"
            if stall < th.stall_after
            else "time without a walsender is not wedge evidence"
        )
        notes.append(
            f"confirmed_flush_lsn has not advanced for {format_duration(stall)} with "
            f"{format_bytes(lag)} of WAL waiting ({window})"
        )
        grace = _grace_notes(track, now, th) if row.active else []
        # A walsender in its grace is catching up, not failing to confirm: say only that.
        notes.extend(grace or (_reading_reasons(row, sent_lag, lag, th) if row.active else []))

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


def _wedge_evidence(row: SlotRow, track: SlotTrack, now: float, th: Thresholds) -> list[str]:
    """Why a stall is the consumer's doing, from time a walsender held the slot; [] if it is not.

    Time without a walsender is never evidence: a slot whose walsender has only just attached
    gets the grace first, unless earlier walsenders already failed in this stall.
    """
    grace = attach_grace(th)
    tries = track.tries
    reasons: list[str] = []
    if tries.failed >= CRASH_LOOP_FAILURES and tries.first_at is not None:
        reasons.append(
            f"re-attached {tries.count} times in {format_duration(now - tries.first_at)} without "
            "confirming: each walsender left without moving confirmed_flush_lsn (a crash loop)"
        )
    walsender = track.walsender if row.active else None
    if walsender is not None and _held(walsender, track, now) >= grace:
        if walsender.seen_attaching:
            reasons.append(
                f"its walsender (pid {walsender.pid}) attached "
                f"{format_duration(now - walsender.since)} ago and has not confirmed "
                f"(a new walsender gets {format_duration(grace)})"
            )
        else:
            reasons.append(
                f"a walsender (pid {walsender.pid}) has held the slot for "
                f"{format_duration(_held(walsender, track, now))} without confirming"
            )
    if tries.longest_failed_hold >= grace:
        reasons.append(
            f"an earlier walsender held it for {format_duration(tries.longest_failed_hold)} "
            "without confirming before it left"
        )
    return reasons


def _held(walsender: Attachment, track: SlotTrack, now: float) -> float:
    since = max(walsender.since, track.confirmed_since or walsender.since)
    return max(0.0, now - since)


def _grace_notes(track: SlotTrack, now: float, th: Thresholds) -> list[str]:
    walsender = track.walsender
    if walsender is None or not walsender.seen_attaching:
        return []
    grace = attach_grace(th)
    age = now - walsender.since
    if _held(walsender, track, now) >= grace:
        return []
    if walsender.after_inactive is not None:
        came = (
            f"re-attached {format_duration(age)} ago after "
            f"{format_duration(walsender.after_inactive)} without a walsender"
        )
    else:
        came = f"a new walsender (pid {walsender.pid}) took the slot {format_duration(age)} ago"
    return [
        f"{came}; waiting for its first confirm (wedged if none within {format_duration(grace)})"
    ]


def _busy(consumer: ConsumerEvidence | None) -> str | None:
    """The consumer's own proof that it is applying changes, or None."""
    if consumer is None or consumer.shared is not None or not consumer.fresh:
        return None
    account = consumer.account
    if not account.reading.up or not account.rising:
        return None
    over = account.rose_over
    # Readings a probe interval apart: under 10 s the whole seconds of format_duration say 0s.
    span = format_duration(over) if over >= 10 else f"{over:.1f}s"
    return (
        f"the consumer is applying changes: its powersync_rows_replicated_total rose by "
        f"{account.rose_by:.0f} in the last {span} (its own metrics)"
    )


def _consumer_notes(consumer: ConsumerEvidence | None) -> list[str]:
    """What the consumer's own account adds to a wedge (the #700 blindness, made visible)."""
    if consumer is None:
        return []
    account = consumer.account
    reading = account.reading
    if consumer.shared is not None:
        return [f"its own metrics cannot speak for this slot: {consumer.shared}"]
    if not reading.up:
        return [f"its own metrics endpoint did not answer ({reading.error})"]
    if not consumer.fresh:
        return ["its own metrics were not read recently enough to speak for this poll"]
    notes = []
    if account.progress_at is not None and account.last_rows is not None:
        age = max(0.0, reading.checked_at - account.progress_at)
        notes.append(
            f"its own powersync_rows_replicated_total has not risen for {format_duration(age)}"
        )
    elif account.last_rows is None:
        notes.append("its own metrics carry no powersync_rows_replicated_total")
    if reading.lag_seconds is not None:
        notes.append(
            f"PowerSync's own powersync_replication_lag_seconds claims "
            f"{format_duration(reading.lag_seconds)}"
        )
    return notes


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


def _bounded(trend: Trend, sample: Sample, window: float) -> Trend:
    # After a clock step backwards, points from "the future" would poison every slope.
    return grown_trend(trend, sample.at, retained_of(sample), window, MAX_SAMPLES)
