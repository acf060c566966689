"""The code and its contract agree: the metric table against docs/contract.md §3, the states
against §2, the settings against §6, and docs/reference.md against what the code generates."""

from __future__ import annotations

from typing import get_args

from spec_contract import (
    ALERT_LABELS,
    ALERTS,
    CONTRACT_ALERTS,
    METRIC_NAMES,
    NOT_YET_EXPORTED,
    NOT_YET_SHIPPED_ALERTS,
    SLOT_STATES,
)

from slotwatch import reference
from slotwatch.drop.audit import OUTCOMES, AuditOutcome
from slotwatch.model import SlotState
from slotwatch.serve.metrics import FAMILIES, NAMES
from slotwatch.serve.metrics import SLOT as SLOT_SCOPE

SCOPE_LABELS = {"target", "slot", "probe"}


def test_every_exported_family_is_promised_by_the_contract() -> None:
    assert not NAMES - METRIC_NAMES, "add them to docs/contract.md §3 (add, never rename)"


def test_every_promised_family_is_exported_or_known_to_be_on_its_way() -> None:
    assert METRIC_NAMES - NAMES == NOT_YET_EXPORTED
    assert not NOT_YET_EXPORTED & NAMES, "exported now: remove it from NOT_YET_EXPORTED"


def test_each_family_carries_the_labels_the_contract_writes_for_it() -> None:
    promised = reference.contract_metric_labels()
    for family in FAMILIES:
        labels = set(family.label_names)
        extra = promised.get(family.name, set())
        assert extra <= labels, family.name
        assert labels - SCOPE_LABELS <= extra, f"{family.name}: labels the contract never names"
        if family.scope is SLOT_SCOPE:
            assert {"target", "slot"} <= labels


def test_states_are_the_contracts_in_its_order() -> None:
    assert tuple(state.value for state in SlotState) == SLOT_STATES


def test_every_alert_of_the_contract_says_which_labels_it_carries() -> None:
    assert set(ALERT_LABELS) == set(CONTRACT_ALERTS)
    assert set(ALERTS) | NOT_YET_SHIPPED_ALERTS == set(CONTRACT_ALERTS)
    assert set(CONTRACT_ALERTS.values()) == {"page", "ticket"}


def test_every_setting_the_code_reads_is_explained_by_the_contract() -> None:
    explained = reference.contract_settings()
    variables = [variable for variable, *_ in reference.setting_rows()]
    assert variables
    assert [v for v in variables if v not in explained] == []


def test_the_reference_page_is_what_the_code_generates() -> None:
    committed = reference.PAGE.read_text(encoding="utf-8")
    assert committed == reference.page(), "run: python -m slotwatch.reference"
    assert reference.main(["--check"]) == 0


def test_the_readme_names_every_setting() -> None:
    # The README's settings table is the one a newcomer reads; the contract's alone was kept
    # whole while the README's missed three settings.
    readme = (reference.PAGE.parents[1] / "README.md").read_text(encoding="utf-8")
    variables = [variable for variable, *_ in reference.setting_rows()]
    assert [v for v in variables if f"`{v}`" not in readme] == []


def test_every_audit_outcome_the_code_can_write_is_explained() -> None:
    """The record's outcome is typed: an outcome the code sets that the reference page does not
    explain fails mypy, and one explained that the type does not allow fails here."""
    assert set(OUTCOMES) == set(get_args(AuditOutcome))
    assert all(text.strip() for text in OUTCOMES.values())
