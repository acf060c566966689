"""What docs/contract.md promises, as data the deploy tests check the shipped files against.

Read from the contract itself (§2 states, §3 metrics, §7 alerts), so there is no third list to
keep in step: tests/unit/test_contract.py holds the code's metric table and the contract to each
other, and the alert rules, dashboards and scrape configs are checked against what is read here.
"""

from __future__ import annotations

from slotwatch.reference import contract_alerts, contract_metric_names, contract_states

# docs/contract.md §3: every metric family slotwatch promises (sample names; counters keep
# `_total`). A rule or dashboard may use these and nothing else of slotwatch's.
METRIC_NAMES = frozenset(contract_metric_names())

# Promised in the contract but not yet in the metric table (slotwatch/serve/metrics.py): the
# families being built beside this list. Remove a name when its family joins the table; the
# contract test fails until you do, and fails for any promised name missing from both.
NOT_YET_EXPORTED: frozenset[str] = frozenset()

# What the scraper adds to every target; the rules and the dashboard may use it too.
SCRAPE_METRICS = frozenset({"up"})

# The job name the shipped scrape configs use and SlotwatchDown looks for.
SCRAPE_JOB = "slotwatch"

SLOT_STATES = tuple(contract_states())

# The labels each alert must carry besides severity: the contract says "the target/slot labels
# it concerns"; which those are is written here, for every alert §7 names (checked).
ALERT_LABELS: dict[str, frozenset[str]] = {
    "SlotwatchDown": frozenset({"job"}),
    "SlotwatchTargetUnreachable": frozenset({"target"}),
    "PowerSyncSlotMissing": frozenset({"target"}),
    "PowerSyncSlotInactive": frozenset({"target", "slot"}),
    "PowerSyncSlotWedged": frozenset({"target", "slot"}),
    "PowerSyncSlotAtRisk": frozenset({"target", "slot"}),
    "PowerSyncSlotLost": frozenset({"target", "slot"}),
    "PowerSyncLivenessDown": frozenset({"target", "probe"}),
    "PowerSyncSlotLagging": frozenset({"target", "slot"}),
    "PowerSyncRetainedWALHigh": frozenset({"target", "slot"}),
    "PowerSyncExtraSlots": frozenset({"target"}),
    "PowerSyncCatalogXminOld": frozenset({"target", "slot"}),
    "ForeignSlotRetainingWAL": frozenset({"target", "slot", "owner"}),
    "ForeignSlotFillingBudget": frozenset({"target", "slot", "owner"}),
}

# Alerts the contract names whose rules are being written beside this list: remove a name when
# its rule ships (the rules test fails until you do, as it does for any other missing alert).
NOT_YET_SHIPPED_ALERTS: frozenset[str] = frozenset()

# docs/contract.md §7: alert -> (severity, the labels it must carry besides severity).
CONTRACT_ALERTS = contract_alerts()
ALERTS: dict[str, tuple[str, frozenset[str]]] = {
    name: (severity, ALERT_LABELS.get(name, frozenset()))
    for name, severity in CONTRACT_ALERTS.items()
    if name not in NOT_YET_SHIPPED_ALERTS
}
