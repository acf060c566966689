"""Plain data that flows through slotwatch: rows from a poll, probe results, slot tracks, verdicts.

Everything here is a frozen dataclass, an enum or, for the rows a poll reads, a named tuple, with
no I/O, so that the pure decisions (classify, forecast, guard) can be tested with tables of
hand-made values. LSNs are plain ints (bytes since 0/0), sizes are bytes, times are seconds
(wall-clock epoch for instants).
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

INF = float("inf")


class SlotState(StrEnum):
    """docs/contract.md §2, in order of precedence: the first that applies wins."""

    LOST = "lost"
    AT_RISK = "at_risk"
    SNAPSHOTTING = "snapshotting"
    INACTIVE = "inactive"
    WEDGED = "wedged"
    LAGGING = "lagging"
    HEALTHY = "healthy"


WAL_STATUSES = ("reserved", "extended", "unreserved", "lost")
POLL_ERROR_REASONS = ("connect", "auth", "timeout", "query", "tls", "other")


@dataclass(frozen=True, slots=True)
class ServerRow:
    """Server-wide figures read in the same round trip as the slots."""

    version_num: int
    in_recovery: bool
    current_lsn: int
    max_slot_wal_keep_size: int  # bytes; -1 when unlimited
    wal_segment_size: int
    wal_directory_bytes: int | None  # None when the role may not list pg_wal
    wal_sender_timeout: float  # seconds; 0 disables it
    server_epoch: float  # the server's clock at poll time, seconds since the epoch
    system_identifier: int | None = None  # pg_control_system(): which cluster this is
    # The oldest restart_lsn of any slot of the server, matched or not, and its slot: what
    # actually keeps WAL in pg_wal. None when no slot holds any.
    oldest_restart_lsn: int | None = None
    oldest_restart_slot: str | None = None

    @property
    def wal_retained_bytes(self) -> int | None:
        """Bytes of WAL between the current position and the oldest restart_lsn of any slot."""
        if self.oldest_restart_lsn is None:
            return None
        return max(0, self.current_lsn - self.oldest_restart_lsn)


class SlotRow(NamedTuple):
    """One matching slot as the server reported it, joined with its walsender and stats.

    A row, and so a named tuple: a poll builds one for every slot of the server, and a tuple is
    made in 0.3 us where a frozen dataclass of these 24 fields takes 2.2 us (2 ms a poll at
    1,000 slots). Change one with `row._replace(...)`.
    """

    name: str
    plugin: str | None
    slot_type: str
    database: str | None
    temporary: bool
    active: bool
    active_pid: int | None
    restart_lsn: int | None  # None once the slot is invalidated
    confirmed_flush_lsn: int | None
    wal_status: str | None
    safe_wal_size: int | None  # may be negative while unreserved; None when lost/unlimited
    catalog_xmin_age: int | None
    server_inactive_seconds: float | None = None  # now() - inactive_since (PostgreSQL 17+)
    invalidation_reason: str | None = None  # PostgreSQL 17+
    synced: bool | None = None  # PostgreSQL 17+
    failover: bool | None = None  # PostgreSQL 17+
    sender_pid: int | None = None  # the walsender of pg_stat_replication, if any
    sender_application_name: str | None = None
    sender_state: str | None = None
    sent_lsn: int | None = None
    consumer_busy: bool = False  # a consumer_app session is busy in the slot's database
    spill_bytes: int | None = None  # pg_stat_replication_slots, PostgreSQL 14+
    stream_bytes: int | None = None
    total_bytes: int | None = None


class OtherSlotRow(NamedTuple):
    """A slot of the server that does not match the pattern: watched lightly, never judged.

    Physical slots have no plugin, database or confirmed_flush_lsn.
    """

    name: str
    slot_type: str
    plugin: str | None
    database: str | None
    active: bool
    restart_lsn: int | None
    wal_status: str | None
    server_inactive_seconds: float | None = None  # now() - inactive_since (PostgreSQL 17+)


@dataclass(frozen=True, slots=True)
class PollError:
    reason: str  # one of POLL_ERROR_REASONS
    message: str  # one line, secret-free
    hint: str = ""  # what to change, for a verb's one-line error (not part of the message)
    # The settings name something the server does not have (a database): fixed in the
    # configuration (exit 78), not by waiting for the network or a GRANT.
    misconfigured: bool = False


@dataclass(frozen=True, slots=True)
class PollResult:
    """The outcome of one poll of one target: either server + slots, or an error."""

    target: str
    started_at: float
    duration: float
    server: ServerRow | None = None
    slots: tuple[SlotRow, ...] = ()
    error: PollError | None = None
    others: tuple[OtherSlotRow, ...] = ()  # slots not matching the pattern, in scope

    @property
    def ok(self) -> bool:
        return self.error is None and self.server is not None


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One GET of the liveness URL. `up` is the whole verdict; the rest explains it."""

    url: str
    checked_at: float
    up: bool
    duration: float
    status_code: int | None = None
    touched_age: float | None = None  # seconds since PowerSync's `touched_at`, if parsed
    error: str | None = None  # one line when down


@dataclass(frozen=True, slots=True)
class ConsumerReading:
    """One GET of the consumer's own Prometheus endpoint (PowerSync's telemetry port), parsed.

    Counter values are summed over their series; None when the endpoint did not carry them.
    """

    url: str
    checked_at: float
    up: bool
    duration: float
    rows: float | None = None  # powersync_rows_replicated_total
    data_bytes: float | None = None  # powersync_data_replicated_bytes_total
    transactions: float | None = None  # powersync_transactions_replicated_total
    chunks: float | None = None  # powersync_chunks_replicated_total
    lag_seconds: float | None = None  # powersync_replication_lag_seconds
    error: str | None = None  # one line when down


@dataclass(frozen=True, slots=True)
class ConsumerAccount:
    """The consumer's own account so far: its latest reading and when it last applied rows.

    `progress_at` is the reading at which the applied-rows counter was first seen at its present
    value (the first successful reading, before any rise): seconds since then are measured from
    below, like slotwatch's other clocks. `rising` says it rose between the last two readings.
    """

    reading: ConsumerReading
    progress_at: float | None = None  # None until a reading carried the counter
    rising: bool = False
    last_rows: float | None = None  # the counter at the last successful reading
    rose_by: float = 0.0  # how much it rose between the last two readings
    rose_over: float = 0.0  # over how many seconds


@dataclass(frozen=True, slots=True)
class Thresholds:
    """The knobs of docs/contract.md §2, in seconds and bytes."""

    stall_after: float = 300.0
    inactive_after: float = 120.0
    lag_floor_bytes: int = 1024 * 1024
    lag_warn_bytes: int = 256 * 1024 * 1024
    at_risk_eta: float = 3600.0
    wal_budget_bytes: int | None = None  # used when max_slot_wal_keep_size = -1
    at_risk_budget_ratio: float = 0.2
    forecast_window: float = 600.0  # how far back the rate and slope look
    other_slots_top: int = 10  # other slots exported one by one; 0 turns them off


@dataclass(frozen=True, slots=True)
class Sample:
    """What the forecaster and stall tracker need from one poll of one slot."""

    at: float
    current_lsn: int
    confirmed_flush_lsn: int | None
    restart_lsn: int | None
    safe_wal_size: int | None
    active: bool


@dataclass(frozen=True, slots=True)
class Trend:
    """A slot's retained WAL over the forecast window, column by column, oldest first.

    `retained[i]` is `restart_lsn - current_lsn` (minus the WAL the slot holds back) at
    `times[i]`, NaN where the slot had no restart_lsn. The times are the polls' own float
    objects, shared by every slot of the target, and the values a flat array of doubles: a slot
    keeps one point for every poll of the window, at a sixth of what a Sample costs.
    Never changed once built: each poll builds a new one.
    """

    times: tuple[float, ...] = ()
    retained: array[float] = field(default_factory=lambda: array("d"))

    def __len__(self) -> int:
        return len(self.times)


@dataclass(frozen=True, slots=True)
class Attachment:
    """The walsender holding a slot, as slotwatch first saw it."""

    pid: int | None
    since: float  # the first poll that saw this walsender hold the slot
    seen_attaching: bool  # False for one already there when slotwatch first looked
    # Seconds the slot had been without a walsender when it came (as the last poll saw it);
    # None when it took over from another walsender between two polls.
    after_inactive: float | None = None


@dataclass(frozen=True, slots=True)
class Tries:
    """Walsenders that attached since confirmed_flush_lsn last moved, and how they fared."""

    count: int = 0  # attaches seen since the position last moved (the current one included)
    failed: int = 0  # of those, how many left again without the position moving
    first_at: float | None = None  # the poll that saw the first of them
    longest_failed_hold: float = 0.0  # seconds the longest-held of the failed ones held the slot


@dataclass(frozen=True, slots=True)
class SlotTrack:
    """What slotwatch remembers about a slot between polls (pure state, advanced per poll)."""

    first_seen: float
    last_confirmed_lsn: int | None
    stall_since: float | None  # since when confirmed_flush has not moved with WAL waiting
    inactive_since: float | None  # local observation, used when the server cannot tell us
    samples: tuple[Sample, ...] = field(default_factory=tuple)  # the last two polls'
    trend: Trend = field(default_factory=Trend)  # the forecast window's retained WAL
    confirmed_since: float | None = None  # first poll that saw confirmed_flush_lsn where it is
    walsender: Attachment | None = None  # who held the slot at the last poll
    tries: Tries = field(default_factory=Tries)
    inactive_seconds: float = 0.0  # how long the slot had been without a walsender, last poll


@dataclass(frozen=True, slots=True)
class Assessment:
    """The verdict for one slot in one poll: state, why, and the derived figures."""

    state: SlotState
    reasons: tuple[str, ...]
    lag_bytes: int | None
    retained_wal_bytes: int | None
    sent_lag_bytes: int | None
    flush_stall_seconds: float
    inactive_seconds: float
    invalidation_eta_seconds: float  # INF when not shrinking, unlimited or unknown
    wal_budget_bytes: int | None  # the budget the forecast runs against, if any
    wal_budget_ratio: float | None  # remaining / budget
    wal_rate_bytes_per_second: float | None


@dataclass(frozen=True, slots=True)
class SlotView:
    row: SlotRow
    assessment: Assessment


@dataclass(frozen=True, slots=True)
class OtherSlotView:
    """An other slot with what slotwatch makes of it: who probably owns it, what it holds."""

    row: OtherSlotRow
    owner: str  # a guess from the name: see judge/others.py
    retained_wal_bytes: int | None  # current WAL position - restart_lsn
    inactive_seconds: float  # 0 when active


@dataclass(frozen=True, slots=True)
class OtherSlots:
    """The slots of a target that do not match its pattern: counts, and the top K by WAL held."""

    active: int = 0
    inactive: int = 0
    top: tuple[OtherSlotView, ...] = ()


@dataclass(frozen=True, slots=True)
class StateChange:
    """A slot moved from one state to another (or appeared / vanished: None on that side)."""

    target: str
    slot: str
    before: SlotState | None
    after: SlotState | None
    assessment: Assessment | None


@dataclass(frozen=True, slots=True)
class Judgement:
    """One successful poll, judged: every slot's assessment, what changed, the WAL rate."""

    slots: tuple[SlotView, ...]
    changes: list[StateChange]
    wal_rate: float | None
    others: OtherSlots = field(default_factory=OtherSlots)
