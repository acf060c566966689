"""The metric table: every family slotwatch exports, declared once (docs/contract.md §3).

Each `Family` gives the name exactly as exposed (counters with `_total`), its type, a HELP
sentence with the unit and where the value comes from, its labels, and how to read its value
from the snapshot. The collector, the fast renderer, docs/reference.md and the contract test
all read this table; nothing else lists metrics.

To add a family, add one declaration to `FAMILIES` (where it should appear in /metrics). Its
`scope` says whom its series describe and which labels they all carry; `value` reads one
number per subject (None leaves the series out); `one_of` names the subject's current choice
among fixed ones (a series each: 1 for the current one, 0 for the others; none when there is no
current one); or `series` yields several, each with values for the family's extra `labels`. A
new kind of subject is a new `Scope`.

The three forms are what lets the renderer (`serve.exposition`) skip most of the work: a
`value` or `one_of` family's series are named by the scope's labels (plus the one choice label),
so their text can be kept between renders, keyed by who the subject is and, for `one_of`, by its
current choice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, Literal, NamedTuple, TypeVar

from slotwatch import __version__
from slotwatch.logs import BACKLOG_LINES
from slotwatch.model import (
    WAL_STATUSES,
    ConsumerAccount,
    OtherSlotView,
    ProbeResult,
    ServerRow,
    SlotState,
    SlotView,
)
from slotwatch.serve.store import Snapshot, TargetView

S = TypeVar("S")
Labels = tuple[str, ...]
Series = Iterable[tuple[Labels, float]]
Kind = Literal["gauge", "counter"]
GAUGE: Kind = "gauge"
COUNTER: Kind = "counter"


@dataclass(frozen=True, slots=True)
class Scope(Generic[S]):
    """Whom a family's series describe: the labels every series carries, and the subjects
    (label values, subject) a snapshot holds, in the order /metrics lists them."""

    name: str
    labels: Labels
    subjects: Callable[[Snapshot], Iterable[tuple[Labels, S]]]


class Polled(NamedTuple):
    """A target whose last poll succeeded, with the server row it read."""

    view: TargetView
    server: ServerRow


class Probed(NamedTuple):
    """A target whose liveness probe is enabled and has run at least once."""

    view: TargetView
    result: ProbeResult


PROCESS: Scope[Snapshot] = Scope("process", (), lambda snap: [((), snap)])
TARGET: Scope[TargetView] = Scope(
    "target", ("target",), lambda snap: (((v.name,), v) for v in snap.targets)
)
SERVER: Scope[Polled] = Scope(
    "target, while up",
    ("target",),
    lambda snap: (((v.name,), Polled(v, v.server)) for v in snap.targets if v.server is not None),
)
SLOT: Scope[SlotView] = Scope(
    "slot",
    ("target", "slot"),
    lambda snap: (
        ((v.name, s.row.name), s) for v in snap.targets if v.server is not None for s in v.slots
    ),
)
OTHER_SLOT: Scope[OtherSlotView] = Scope(
    "other slot (the top K by retained WAL)",
    ("target", "slot"),
    lambda snap: (
        ((v.name, o.row.name), o)
        for v in snap.targets
        if v.server is not None
        for o in v.others.top
    ),
)
PROBE: Scope[Probed] = Scope(
    "probe",
    ("target", "probe"),
    lambda snap: (
        ((v.name, v.probe_name), Probed(v, v.probe))
        for v in snap.targets
        if v.probe_enabled and v.probe is not None
    ),
)

CONSUMER: Scope[ConsumerAccount] = Scope(
    "consumer",
    ("target",),
    lambda snap: (
        ((v.name,), v.consumer) for v in snap.targets if v.consumer_enabled and v.consumer
    ),
)


@dataclass(frozen=True, slots=True)
class OneOf(Generic[S]):
    """A one-hot family's series: one per choice, in `choices` order, 1 for the subject's
    `current` choice and 0 for the others; none at all while `current` is None."""

    choices: Labels
    current: Callable[[S], str | None]

    def series_of(self, current: str | None) -> list[tuple[Labels, float]]:
        """The series for a subject whose current choice is `current`: they depend on nothing
        else, which is what lets the renderer keep them by (subject, current)."""
        if current is None:
            return []
        return [((choice,), _flag(choice == current)) for choice in self.choices]

    def series(self, subject: S) -> Series:
        return self.series_of(self.current(subject))


def _progress_age(account: ConsumerAccount) -> float | None:
    if account.progress_at is None:
        return None
    return max(0.0, account.reading.checked_at - account.progress_at)


@dataclass(frozen=True, slots=True)
class Family(Generic[S]):
    """One metric family as exposed: `name` is the exact name of its samples."""

    name: str
    type: Kind
    scope: Scope[S]
    help: str
    value: Callable[[S], float | None] | None = None
    series: Callable[[S], Series] | None = None
    labels: Labels = ()  # beyond the scope's, filled by `series` or `one_of`
    one_of: OneOf[S] | None = None

    def __post_init__(self) -> None:
        forms = (self.value, self.series, self.one_of)
        if sum(form is not None for form in forms) != 1:
            raise ValueError(f"{self.name}: give exactly one of value=, series= and one_of=")
        if bool(self.labels) == (self.value is not None):
            raise ValueError(f"{self.name}: extra labels go with series= or one_of=, only there")
        if self.one_of is not None and len(self.labels) != 1:
            raise ValueError(f"{self.name}: one_of= names its choice with exactly one label")
        if (self.type == COUNTER) != self.name.endswith("_total"):
            raise ValueError(f"{self.name}: counters, and only counters, end in _total")

    @property
    def label_names(self) -> Labels:
        return (*self.scope.labels, *self.labels)

    def samples(self, snapshot: Snapshot) -> Iterator[tuple[Labels, float]]:
        """(label values in `label_names` order, value) for every series of the snapshot."""
        series = self.one_of.series if self.one_of is not None else self.series
        for base, subject in self.scope.subjects(snapshot):
            if series is not None:
                for extra, number in series(subject):
                    yield (*base, *extra), number
            elif self.value is not None:
                one = self.value(subject)
                if one is not None:
                    yield base, one


def _flag(value: bool) -> float:
    return 1 if value else 0


def _ratio(value: float | None) -> float | None:
    # safe_wal_size counts the partly filled current segment, so right after a checkpoint it can
    # exceed max_slot_wal_keep_size a little; negative while unreserved. A share stays in [0, 1].
    return None if value is None else min(1.0, max(0.0, value))


_STATES = tuple(state.value for state in SlotState)


FAMILIES: tuple[Family[Any], ...] = (
    Family(
        "slotwatch_build_info",
        GAUGE,
        PROCESS,
        "Always 1; the version label is the running slotwatch's version.",
        series=lambda _: [((__version__,), 1)],
        labels=("version",),
    ),
    Family(
        "slotwatch_up",
        GAUGE,
        TARGET,
        "1 if the target's last poll succeeded, else 0; present for every configured target.",
        value=lambda v: _flag(v.up),
    ),
    Family(
        "slotwatch_poll_duration_seconds",
        GAUGE,
        TARGET,
        "Seconds the target's last poll took, connect included, whether it succeeded or not.",
        value=lambda v: v.last_poll.duration if v.last_poll is not None else None,
    ),
    Family(
        "slotwatch_last_poll_success_timestamp_seconds",
        GAUGE,
        TARGET,
        "Unix time in seconds when the target's last successful poll finished.",
        value=lambda v: v.last_success,
    ),
    Family(
        "slotwatch_poll_errors_total",
        COUNTER,
        TARGET,
        "Failed polls of the target since slotwatch started, by reason"
        " (connect, auth, timeout, query, tls, other).",
        series=lambda v: (((reason,), count) for reason, count in v.poll_errors.items()),
        labels=("reason",),
    ),
    Family(
        "slotwatch_polls_skipped_total",
        COUNTER,
        TARGET,
        "Polls of the target not started because the previous one was still running.",
        value=lambda v: v.polls_skipped,
    ),
    Family(
        "slotwatch_server_version_num",
        GAUGE,
        SERVER,
        "The server's server_version_num (e.g. 150010 for 15.10), from the last poll.",
        value=lambda p: p.server.version_num,
    ),
    Family(
        "slotwatch_wal_written_bytes_total",
        COUNTER,
        SERVER,
        "The server's current WAL position (pg_current_wal_lsn) as bytes since 0/0, from the"
        " last poll; rate() of it is the WAL write rate.",
        value=lambda p: p.server.current_lsn,
    ),
    Family(
        "slotwatch_wal_rate_bytes_per_second",
        GAUGE,
        SERVER,
        "Bytes of WAL written per second, averaged over the forecast window of recent polls.",
        value=lambda p: p.view.wal_rate,
    ),
    Family(
        "slotwatch_max_slot_wal_keep_size_bytes",
        GAUGE,
        SERVER,
        "The server's max_slot_wal_keep_size in bytes, -1 when unlimited, from the last poll.",
        value=lambda p: p.server.max_slot_wal_keep_size,
    ),
    Family(
        "slotwatch_wal_directory_bytes",
        GAUGE,
        SERVER,
        "Bytes in the server's pg_wal directory (pg_ls_waldir), from the last poll; absent when"
        " the role may not list it.",
        value=lambda p: p.server.wal_directory_bytes,
    ),
    Family(
        "slotwatch_matched_slots",
        GAUGE,
        SERVER,
        "How many slots match the target's slot pattern, from the last poll"
        " (0: PowerSync's slot is gone).",
        value=lambda p: len(p.view.slots),
    ),
    Family(
        "slotwatch_wal_retained_bytes",
        GAUGE,
        SERVER,
        "Bytes of WAL between the server's current position and the oldest restart_lsn of any"
        " slot, matched or not (what actually pins pg_wal), from the last poll; absent when no"
        " slot holds WAL.",
        value=lambda p: p.server.wal_retained_bytes,
    ),
    Family(
        "slotwatch_wal_retained_by",
        GAUGE,
        SERVER,
        "Always 1; the slot label names the slot holding the oldest restart_lsn of the server,"
        " whether it matches the pattern or not, from the last poll.",
        series=lambda p: (
            [((p.server.oldest_restart_slot,), 1)] if p.server.oldest_restart_slot else []
        ),
        labels=("slot",),
    ),
    Family(
        "slotwatch_other_slots",
        GAUGE,
        SERVER,
        "How many slots of the target's scope do not match the slot pattern, by whether a"
        " walsender holds them (active true/false), from the last poll.",
        series=lambda p: [
            (("true",), p.view.others.active),
            (("false",), p.view.others.inactive),
        ],
        labels=("active",),
    ),
    Family(
        "slotwatch_slot_info",
        GAUGE,
        SLOT,
        "Always 1; the labels are the slot's plugin, database and slot_type from"
        " pg_replication_slots (empty when NULL).",
        series=lambda s: [((s.row.plugin or "", s.row.database or "", s.row.slot_type), 1)],
        labels=("plugin", "database", "slot_type"),
    ),
    Family(
        "slotwatch_slot_active",
        GAUGE,
        SLOT,
        "1 if a walsender holds the slot (pg_replication_slots.active), else 0, from the last"
        " poll.",
        value=lambda s: _flag(s.row.active),
    ),
    Family(
        "slotwatch_slot_lag_bytes",
        GAUGE,
        SLOT,
        "Bytes of WAL between the server's current position and the slot's"
        " confirmed_flush_lsn, from the last poll; kept while the slot is inactive.",
        value=lambda s: s.assessment.lag_bytes,
    ),
    Family(
        "slotwatch_slot_retained_wal_bytes",
        GAUGE,
        SLOT,
        "Bytes of WAL between the server's current position and the slot's restart_lsn (what"
        " the slot keeps on disk), from the last poll.",
        value=lambda s: s.assessment.retained_wal_bytes,
    ),
    Family(
        "slotwatch_slot_safe_wal_size_bytes",
        GAUGE,
        SLOT,
        "Bytes of WAL that can still be written before the slot is in danger of invalidation"
        " (pg_replication_slots.safe_wal_size), from the last poll; absent when NULL.",
        value=lambda s: s.row.safe_wal_size,
    ),
    Family(
        "slotwatch_slot_wal_budget_ratio",
        GAUGE,
        SLOT,
        "Share of the WAL budget left, 0 to 1: safe_wal_size divided by max_slot_wal_keep_size"
        " (or SLOTWATCH_WAL_BUDGET_BYTES when unlimited), clamped to [0, 1] because"
        " safe_wal_size counts the partly filled segment; absent without a budget.",
        value=lambda s: _ratio(s.assessment.wal_budget_ratio),
    ),
    Family(
        "slotwatch_slot_wal_status",
        GAUGE,
        SLOT,
        "1 for the slot's wal_status from pg_replication_slots, 0 for the others; absent when"
        " the server reports none.",
        one_of=OneOf(WAL_STATUSES, lambda s: s.row.wal_status),
        labels=("wal_status",),
    ),
    Family(
        "slotwatch_slot_state",
        GAUGE,
        SLOT,
        "1 for the state slotwatch classified the slot in at the last poll, 0 for the other six"
        " (docs/contract.md §2).",
        one_of=OneOf(_STATES, lambda s: s.assessment.state.value),
        labels=("state",),
    ),
    Family(
        "slotwatch_slot_flush_stall_seconds",
        GAUGE,
        SLOT,
        "Seconds the slot's confirmed_flush_lsn has not advanced while WAL waited behind it,"
        " whether or not a walsender held it; 0 when advancing or caught up. The slot reads"
        " wedged only once this passes the stall window and a walsender has held the slot for"
        " the attach grace without confirming, or walsenders keep leaving without confirming"
        " (docs/detection.md).",
        value=lambda s: s.assessment.flush_stall_seconds,
    ),
    Family(
        "slotwatch_slot_inactive_seconds",
        GAUGE,
        SLOT,
        "Seconds since a walsender last held the slot (inactive_since on PostgreSQL 17+, else"
        " as slotwatch observed it); 0 while active.",
        value=lambda s: s.assessment.inactive_seconds,
    ),
    Family(
        "slotwatch_slot_invalidation_eta_seconds",
        GAUGE,
        SLOT,
        "Forecast seconds until safe_wal_size reaches 0 (or the WAL budget is used up), from"
        " the trend over the forecast window; +Inf when not shrinking or unlimited.",
        value=lambda s: s.assessment.invalidation_eta_seconds,
    ),
    Family(
        "slotwatch_slot_catalog_xmin_age",
        GAUGE,
        SLOT,
        "Age in transactions of the slot's catalog_xmin (age(catalog_xmin)), from the last poll.",
        value=lambda s: s.row.catalog_xmin_age,
    ),
    Family(
        "slotwatch_slot_sent_lag_bytes",
        GAUGE,
        SLOT,
        "Bytes of WAL between the server's current position and the walsender's sent_lsn"
        " (pg_stat_replication), from the last poll; absent while inactive.",
        value=lambda s: s.assessment.sent_lag_bytes,
    ),
    Family(
        "slotwatch_slot_spill_bytes_total",
        COUNTER,
        SLOT,
        "Bytes logical decoding spilled to disk for the slot (pg_stat_replication_slots,"
        " PostgreSQL 14+).",
        value=lambda s: s.row.spill_bytes,
    ),
    Family(
        "slotwatch_slot_stream_bytes_total",
        COUNTER,
        SLOT,
        "Bytes of in-progress transactions streamed to the slot's consumer"
        " (pg_stat_replication_slots, PostgreSQL 14+).",
        value=lambda s: s.row.stream_bytes,
    ),
    Family(
        "slotwatch_slot_decoded_bytes_total",
        COUNTER,
        SLOT,
        "Bytes of WAL decoded for the slot (pg_stat_replication_slots.total_bytes,"
        " PostgreSQL 14+).",
        value=lambda s: s.row.total_bytes,
    ),
    Family(
        "slotwatch_other_slot_info",
        GAUGE,
        OTHER_SLOT,
        "Always 1, for each of the SLOTWATCH_OTHER_SLOTS_TOP other slots holding the most WAL;"
        " the labels are its slot_type, plugin and database (empty when NULL) and owner, a"
        " guess from the name (powersync, supabase_realtime, debezium, airbyte, electric,"
        " physical, unknown).",
        series=lambda o: [
            ((o.row.slot_type, o.row.plugin or "", o.row.database or "", o.owner), 1)
        ],
        labels=("slot_type", "plugin", "database", "owner"),
    ),
    Family(
        "slotwatch_other_slot_retained_wal_bytes",
        GAUGE,
        OTHER_SLOT,
        "Bytes of WAL between the server's current position and the other slot's restart_lsn,"
        " from the last poll; absent when it holds none (restart_lsn NULL).",
        value=lambda o: o.retained_wal_bytes,
    ),
    Family(
        "slotwatch_other_slot_active",
        GAUGE,
        OTHER_SLOT,
        "1 if a walsender (or a standby) holds the other slot, else 0, from the last poll.",
        value=lambda o: _flag(o.row.active),
    ),
    Family(
        "slotwatch_other_slot_inactive_seconds",
        GAUGE,
        OTHER_SLOT,
        "Seconds since anything last held the other slot (inactive_since on PostgreSQL 17+,"
        " else since slotwatch first saw it inactive); 0 while active.",
        value=lambda o: o.inactive_seconds,
    ),
    Family(
        "slotwatch_liveness_up",
        GAUGE,
        PROBE,
        "1 if the last GET of the liveness URL answered 2xx within the probe timeout, else 0.",
        value=lambda p: _flag(p.result.up),
    ),
    Family(
        "slotwatch_liveness_status_code",
        GAUGE,
        PROBE,
        "HTTP status code of the last liveness probe; absent when it got no answer.",
        value=lambda p: p.result.status_code,
    ),
    Family(
        "slotwatch_liveness_duration_seconds",
        GAUGE,
        PROBE,
        "Seconds the last liveness probe took.",
        value=lambda p: p.result.duration,
    ),
    Family(
        "slotwatch_liveness_last_success_timestamp_seconds",
        GAUGE,
        PROBE,
        "Unix time in seconds of the last liveness probe that succeeded.",
        value=lambda p: p.view.probe_last_success,
    ),
    Family(
        "slotwatch_liveness_touched_age_seconds",
        GAUGE,
        PROBE,
        "Seconds between PowerSync's touched_at in the last liveness answer and the probe.",
        value=lambda p: p.result.touched_age,
    ),
    Family(
        "slotwatch_consumer_up",
        GAUGE,
        CONSUMER,
        "1 if the last read of the consumer's own metrics (SLOTWATCH_CONSUMER_METRICS_URL)"
        " answered 2xx with Prometheus text within the probe timeout, else 0.",
        value=lambda c: _flag(c.reading.up),
    ),
    Family(
        "slotwatch_consumer_progress_age_seconds",
        GAUGE,
        CONSUMER,
        "Seconds since the consumer's powersync_rows_replicated_total was last seen rising, as"
        " of the last read of its metrics (from the first read, before any rise); absent until"
        " a read carried it.",
        value=_progress_age,
    ),
)

# Counted by the process itself between polls, not read from a snapshot: exposed after the table
# with the client library's process metrics (`serve.collector.process_registry`), which are read
# at most once a second. (name, help) of each, all counters without labels.
LOG_LINES_DROPPED = (
    "slotwatch_log_lines_dropped_total",
    "Log lines slotwatch dropped since it started because its stderr took none while"
    f" {BACKLOG_LINES:,} waited (nobody read it); the log says how many once stderr takes"
    " lines again.",
)
PROCESS_COUNTERS = (LOG_LINES_DROPPED,)

NAMES = frozenset(family.name for family in FAMILIES) | {name for name, _ in PROCESS_COUNTERS}
