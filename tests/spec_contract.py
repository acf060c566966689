"""The names SPEC §3 (metrics) and §7 (alerts) promise, as data the deploy tests check against.

SPEC.md lives outside the repository, so CI cannot read it: this copy is the repository's record
of the contract. Change it only together with SPEC.md (adding is fine; renaming never is).
"""

from __future__ import annotations

# SPEC §3, every metric family slotwatch exports (sample names; counters keep `_total`).
PER_TARGET_METRICS = frozenset(
    {
        "slotwatch_up",
        "slotwatch_poll_duration_seconds",
        "slotwatch_last_poll_success_timestamp_seconds",
        "slotwatch_poll_errors_total",
        "slotwatch_server_version_num",
        "slotwatch_wal_written_bytes_total",
        "slotwatch_wal_rate_bytes_per_second",
        "slotwatch_max_slot_wal_keep_size_bytes",
        "slotwatch_wal_directory_bytes",
        "slotwatch_matched_slots",
    }
)
PER_SLOT_METRICS = frozenset(
    {
        "slotwatch_slot_info",
        "slotwatch_slot_active",
        "slotwatch_slot_lag_bytes",
        "slotwatch_slot_retained_wal_bytes",
        "slotwatch_slot_safe_wal_size_bytes",
        "slotwatch_slot_wal_budget_ratio",
        "slotwatch_slot_wal_status",
        "slotwatch_slot_state",
        "slotwatch_slot_flush_stall_seconds",
        "slotwatch_slot_inactive_seconds",
        "slotwatch_slot_invalidation_eta_seconds",
        "slotwatch_slot_catalog_xmin_age",
        "slotwatch_slot_sent_lag_bytes",
        "slotwatch_slot_spill_bytes_total",
        "slotwatch_slot_stream_bytes_total",
        "slotwatch_slot_decoded_bytes_total",
    }
)
LIVENESS_METRICS = frozenset(
    {
        "slotwatch_liveness_up",
        "slotwatch_liveness_status_code",
        "slotwatch_liveness_duration_seconds",
        "slotwatch_liveness_last_success_timestamp_seconds",
        "slotwatch_liveness_touched_age_seconds",
    }
)
PROCESS_METRICS = frozenset({"slotwatch_build_info"})
# SPEC §3 "Whole server" and "Other slots": every slot of the server, matched or not.
WHOLE_SERVER_METRICS = frozenset({"slotwatch_wal_retained_bytes", "slotwatch_wal_retained_by"})
OTHER_SLOT_METRICS = frozenset(
    {
        "slotwatch_other_slots",
        "slotwatch_other_slot_retained_wal_bytes",
        "slotwatch_other_slot_active",
        "slotwatch_other_slot_inactive_seconds",
        "slotwatch_other_slot_info",
    }
)

METRIC_NAMES = (
    PER_TARGET_METRICS
    | PER_SLOT_METRICS
    | LIVENESS_METRICS
    | PROCESS_METRICS
    | WHOLE_SERVER_METRICS
    | OTHER_SLOT_METRICS
)

# What the scraper adds to every target; the rules and the dashboard may use it too.
SCRAPE_METRICS = frozenset({"up"})

# The job name the shipped scrape configs use and SlotwatchDown looks for.
SCRAPE_JOB = "slotwatch"

SLOT_STATES = ("lost", "at_risk", "snapshotting", "inactive", "wedged", "lagging", "healthy")

# SPEC §7: alert -> (severity, the labels it must carry besides severity).
ALERTS: dict[str, tuple[str, frozenset[str]]] = {
    "SlotwatchDown": ("page", frozenset({"job"})),
    "SlotwatchTargetUnreachable": ("page", frozenset({"target"})),
    "PowerSyncSlotMissing": ("page", frozenset({"target"})),
    "PowerSyncSlotInactive": ("page", frozenset({"target", "slot"})),
    "PowerSyncSlotWedged": ("page", frozenset({"target", "slot"})),
    "PowerSyncSlotAtRisk": ("page", frozenset({"target", "slot"})),
    "PowerSyncSlotLost": ("page", frozenset({"target", "slot"})),
    "PowerSyncLivenessDown": ("page", frozenset({"target", "probe"})),
    "PowerSyncSlotLagging": ("ticket", frozenset({"target", "slot"})),
    "PowerSyncRetainedWALHigh": ("ticket", frozenset({"target", "slot"})),
    "PowerSyncExtraSlots": ("ticket", frozenset({"target"})),
    "PowerSyncCatalogXminOld": ("ticket", frozenset({"target", "slot"})),
    "ForeignSlotRetainingWAL": ("ticket", frozenset({"target", "slot", "owner"})),
    "ForeignSlotFillingBudget": ("page", frozenset({"target", "slot", "owner"})),
}
