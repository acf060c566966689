"""The drop guard as a table: which facts and flags allow a drop, and what the refusal says."""

from __future__ import annotations

import pytest

from slotwatch.drop.guard import DropRequest, SlotFacts, database_check, evaluate, fast_checks
from slotwatch.model import SlotState

PATTERN = "powersync_selfhost%"
SLOT = "powersync_selfhost1_17f9"
PRIMARY_SLOT = SlotFacts(exists=True, in_recovery=False, active=False, synced=None, failover=None)


def facts(**changes: object) -> SlotFacts:
    values = {
        "exists": PRIMARY_SLOT.exists,
        "in_recovery": PRIMARY_SLOT.in_recovery,
        "active": PRIMARY_SLOT.active,
        "synced": PRIMARY_SLOT.synced,
        "failover": PRIMARY_SLOT.failover,
        "state": SlotState.WEDGED,
    }
    values.update(changes)
    return SlotFacts(**values)  # type: ignore[arg-type]


# (id, slot, facts, request flags, allowed, words the first refusal must contain)
CASES = [
    ("wedged inactive slot", SLOT, facts(), {}, True, ""),
    ("inactive state", SLOT, facts(state=SlotState.INACTIVE), {}, True, ""),
    ("lost slot", SLOT, facts(state=SlotState.LOST), {}, True, ""),
    ("at risk slot", SLOT, facts(state=SlotState.AT_RISK), {}, True, ""),
    (
        "decoy: '_' is literal, so x does not match",
        "powersyncxselfhost1_0000",
        facts(),
        {},
        False,
        "does not match the slot pattern",
    ),
    ("other slot", "debezium_orders", facts(), {}, False, "does not match the slot pattern"),
    ("missing slot", SLOT, facts(exists=False), {}, False, "does not exist"),
    ("standby", SLOT, SlotFacts(in_recovery=True), {}, False, "standby"),
    ("synced slot", SLOT, facts(synced=True), {}, False, "synced"),
    ("failover slot", SLOT, facts(failover=True), {}, False, "failover"),
    ("active without --terminate", SLOT, facts(active=True), {}, False, "--terminate"),
    ("active with --terminate", SLOT, facts(active=True), {"terminate": True}, True, ""),
    ("healthy", SLOT, facts(state=SlotState.HEALTHY), {}, False, "state is healthy"),
    ("lagging", SLOT, facts(state=SlotState.LAGGING), {}, False, "state is lagging"),
    (
        "snapshotting",
        SLOT,
        facts(state=SlotState.SNAPSHOTTING),
        {},
        False,
        "state is snapshotting",
    ),
    ("wedged", SLOT, facts(state=SlotState.WEDGED), {}, True, ""),
    ("inactive", SLOT, facts(state=SlotState.INACTIVE), {}, True, ""),
    ("lost", SLOT, facts(state=SlotState.LOST), {}, True, ""),
    (
        "healthy with --force but no reason",
        SLOT,
        facts(state=SlotState.HEALTHY),
        {"force": True},
        False,
        "--reason",
    ),
    (
        "healthy with --force and a blank reason",
        SLOT,
        facts(state=SlotState.HEALTHY),
        {"force": True, "reason": "  "},
        False,
        "--reason",
    ),
    (
        "healthy with --force --reason",
        SLOT,
        facts(state=SlotState.HEALTHY),
        {"force": True, "reason": "re-sync after restore"},
        True,
        "",
    ),
    (
        "lagging with --reason but no --force",
        SLOT,
        facts(state=SlotState.LAGGING),
        {"reason": "why not"},
        False,
        "state is lagging",
    ),
    ("state unknown", SLOT, facts(state=None), {}, False, "unknown"),
    (
        "slot of another database than the target's slot_database",
        SLOT,
        facts(database="app"),
        {"slot_database": "postgres"},
        False,
        f"slot '{SLOT}' is in database 'app', not in the target's slot_database 'postgres'",
    ),
    (
        "physical slot, target limited to one database",
        SLOT,
        facts(database=None),
        {"slot_database": "app"},
        False,
        "in no database (a physical slot), not in the target's slot_database 'app'",
    ),
    (
        "another database, even with --terminate --force --reason",
        SLOT,
        facts(database="app", active=True, state=SlotState.HEALTHY),
        {"slot_database": "postgres", "terminate": True, "force": True, "reason": "x"},
        False,
        "not in the target's slot_database 'postgres'",
    ),
    (
        "slot of the target's slot_database",
        SLOT,
        facts(database="app"),
        {"slot_database": "app"},
        True,
        "",
    ),
    ("no slot_database: every database", SLOT, facts(database="other"), {}, True, ""),
]


@pytest.mark.parametrize(
    ("slot", "slot_facts", "flags", "allowed", "words"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_guard_table(
    slot: str, slot_facts: SlotFacts, flags: dict[str, object], allowed: bool, words: str
) -> None:
    request = DropRequest(slot=slot, pattern=PATTERN, **flags)  # type: ignore[arg-type]
    verdict = evaluate(request, slot_facts)
    assert verdict.allowed is allowed, verdict.checks
    if not allowed:
        assert words in verdict.reasons[0]
        assert len(verdict.reasons) == 1, "one refusal, said once"
    else:
        assert verdict.reasons == ()
        assert [c.name for c in verdict.checks][-1] == "state"


def test_fast_checks_stop_at_the_first_failure_and_never_judge_state() -> None:
    # A slot that does not match was never read: nothing may be claimed about it.
    verdict = fast_checks(DropRequest("other", PATTERN), SlotFacts())
    assert [c.name for c in verdict.checks] == ["pattern"]
    # A standby's slots are never read either.
    verdict = fast_checks(DropRequest(SLOT, PATTERN), SlotFacts(in_recovery=True))
    assert [c.name for c in verdict.checks] == ["pattern", "primary"]
    # All fast checks pass without any state: the state is judged later, maybe over a window.
    verdict = fast_checks(DropRequest(SLOT, PATTERN, terminate=True), facts(active=True))
    assert verdict.allowed
    assert "state" not in [c.name for c in verdict.checks]


@pytest.mark.parametrize(
    ("pattern", "slot", "matches"),
    [
        ("powersync_selfhost%", "powersync_selfhost3_17f9", True),
        ("powersync_selfhost%", "powersyncxselfhost_3_17f9", False),
        ("powersync_selfhost%", "powersync_selfhos", False),
        ("powersync_selfhost1_17f9", "powersync_selfhost1_17f9", True),
        ("powersync_selfhost1_17f9", "powersync_selfhost1x17f9", False),
        ("%_prod", "powersync_prod", True),
        ("%_prod", "powersyncprod", False),
    ],
)
def test_pattern_has_one_wildcard(pattern: str, slot: str, matches: bool) -> None:
    verdict = fast_checks(DropRequest(slot, pattern), facts())
    assert verdict.checks[0].passed is matches


def test_a_slot_of_another_database_is_refused_before_anything_else_is_said_of_it() -> None:
    request = DropRequest(SLOT, PATTERN, slot_database="postgres")
    verdict = fast_checks(request, facts(database="app", synced=True, active=True))
    assert [c.name for c in verdict.checks] == ["pattern", "primary", "exists", "database"]
    assert not verdict.allowed
    # The verb's listing asks the same question of each candidate.
    assert not database_check(request, facts(database="app")).passed
    assert database_check(request, facts(database="postgres")).passed
    assert database_check(DropRequest(SLOT, PATTERN), facts(database=None)).passed


def test_database_names_from_the_server_are_shown_escaped_on_one_line() -> None:
    # A database name is anything its creator typed: it must not forge a line of the output.
    request = DropRequest(SLOT, PATTERN, slot_database="app")
    (reason,) = fast_checks(request, facts(database="evil\n  [pass] \x1b[32mok")).reasons
    assert "\n" not in reason
    assert "\x1b" not in reason
    assert "database 'evil\\x0a  [pass] \\x1b[32mok'" in reason
