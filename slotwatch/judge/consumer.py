"""Fold readings of the consumer's own metrics into its account: when did it last apply rows?

Pure: `advance` takes the previous account and one new reading. What PowerSync's counters prove
(read from its source, 1.25): `powersync_rows_replicated_total` moves once per row it decodes from
the replication stream for a table in its sync rules, before it writes the row to its storage, and
per chunk of rows its initial snapshot copies; so a rise says it is applying changes now. The other
counters prove less and are only reported: `powersync_data_replicated_bytes_total` counts every
byte any of its PostgreSQL connections reads, its bucket storage's (when that is PostgreSQL) and
the stream's keepalives included; `powersync_chunks_replicated_total` moves per received chunk,
keepalives included; `powersync_transactions_replicated_total` moves only at a commit.
"""

from __future__ import annotations

from slotwatch.model import ConsumerAccount, ConsumerReading


def advance(prev: ConsumerAccount | None, reading: ConsumerReading) -> ConsumerAccount:
    """The account after `reading`. A failed reading keeps what was known, marked down."""
    if not reading.up:
        if prev is None:
            return ConsumerAccount(reading)
        return ConsumerAccount(reading, prev.progress_at, False, prev.last_rows)
    rows = reading.rows
    if rows is None:
        return ConsumerAccount(reading)
    if prev is None or prev.last_rows is None or prev.progress_at is None:
        return ConsumerAccount(reading, reading.checked_at, False, rows)
    before = prev.last_rows
    if rows < before:
        # The process restarted (its counters start at 0 again): a new baseline, not a rise.
        return ConsumerAccount(reading, reading.checked_at, False, rows)
    if rows > before:
        over = max(0.0, reading.checked_at - prev.reading.checked_at)
        return ConsumerAccount(reading, reading.checked_at, True, rows, rows - before, over)
    return ConsumerAccount(reading, prev.progress_at, False, rows)


def progress_age(account: ConsumerAccount, now: float) -> float | None:
    """Seconds since the applied-rows counter was last seen rising (from below); None unknown."""
    if account.progress_at is None:
        return None
    return max(0.0, now - account.progress_at)
