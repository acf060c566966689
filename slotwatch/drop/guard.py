"""The drop guard: from plain facts about a slot and the operator's flags, allowed or refused.

Pure, so it can be tested with a table. The checks run in two stages: `fast_checks` needs only
the slot's name and one poll (pattern, existence, standby, the target's slot_database,
synced/failover, active without `--terminate`), so a hopeless request is refused before any
observation window; `evaluate` adds the state check once the state is known. The final SQL
statement repeats the checks that can change between here and the drop (exists, matches, in the
target's database, not active), so this guard decides what the operator is told and the
statement decides what actually happens.
"""

from __future__ import annotations

from dataclasses import dataclass

from slotwatch.errors import escaped
from slotwatch.model import SlotState
from slotwatch.patterns import pattern_matches

# States that mean the consumer is doing its job: dropping would only force a full re-snapshot.
# docs/contract.md §5 names healthy and lagging; snapshotting is protected too: dropping a slot in
# the middle of PowerSync's initial copy throws the copy away and starts it again from zero.
PROTECTED_STATES = frozenset({SlotState.HEALTHY, SlotState.LAGGING, SlotState.SNAPSHOTTING})


@dataclass(frozen=True, slots=True)
class DropRequest:
    """What the operator asked for."""

    slot: str
    pattern: str
    terminate: bool = False
    # The target's slot_database: only slots of this database are its own; None is every one.
    slot_database: str | None = None
    force: bool = False
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class SlotFacts:
    """What the server (and the state source) said about the slot. None means "not known"."""

    exists: bool | None = None
    in_recovery: bool | None = None
    active: bool | None = None
    synced: bool | None = None
    failover: bool | None = None
    state: SlotState | None = None
    database: str | None = None  # the slot's database (None: a physical slot, or not known)


@dataclass(frozen=True, slots=True)
class Check:
    """One guard condition: its name, whether it passed, and what to tell the operator."""

    name: str
    passed: bool
    detail: str


@dataclass(frozen=True, slots=True)
class Verdict:
    checks: tuple[Check, ...]

    @property
    def allowed(self) -> bool:
        return all(check.passed for check in self.checks)

    @property
    def reasons(self) -> tuple[str, ...]:
        return tuple(check.detail for check in self.checks if not check.passed)


def shown(text: str, limit: int = 80) -> str:
    """Text from outside (operator input, a database name) as it may be echoed: quoted, control
    characters escaped, cut at `limit`."""
    return f"'{escaped(text[:limit])}{'...' if len(text) > limit else ''}'"


def database_check(request: DropRequest, facts: SlotFacts) -> Check:
    """A target limited to one database (slot_database) owns only that database's slots.

    `check` and the daemon do not watch the others: drop must not touch them either.
    """
    if request.slot_database is None:
        return Check("database", True, "no slot_database: the target watches every database")
    wanted = shown(request.slot_database)
    if facts.database == request.slot_database:
        return Check("database", True, f"the slot is in the target's slot_database {wanted}")
    where = (
        f"in database {shown(facts.database)}"
        if facts.database is not None
        else "in no database (a physical slot)"
    )
    return Check(
        "database",
        False,
        f"slot '{request.slot}' is {where}, not in the target's slot_database {wanted}: "
        "slotwatch drops only slots it watches",
    )


def fast_checks(request: DropRequest, facts: SlotFacts) -> Verdict:
    """The checks that do not depend on the slot's state; later ones are skipped once one fails.

    Skipping keeps the reasons honest: a slot that does not match the pattern was never read,
    so nothing can be said about whether it exists or is active.
    """
    checks: list[Check] = []
    matches = pattern_matches(request.pattern, request.slot)
    checks.append(
        Check(
            "pattern",
            matches,
            f"'{request.slot}' matches the slot pattern '{request.pattern}'"
            if matches
            else f"'{request.slot}' does not match the slot pattern '{request.pattern}'"
            " ('%' is the only wildcard; '_' and every other character match only themselves):"
            " slotwatch drops only slots it watches",
        )
    )
    if not matches:
        return Verdict(tuple(checks))

    if facts.in_recovery:
        checks.append(
            Check(
                "primary",
                False,
                "the server is a standby (in recovery): drop slots on the primary",
            )
        )
        return Verdict(tuple(checks))
    if facts.in_recovery is False:
        checks.append(Check("primary", True, "the server is a primary"))

    if not facts.exists:
        checks.append(
            Check("exists", False, f"slot '{request.slot}' does not exist on this server")
        )
        return Verdict(tuple(checks))
    checks.append(Check("exists", True, f"slot '{request.slot}' exists"))

    database = database_check(request, facts)
    checks.append(database)
    if not database.passed:
        # Not this target's slot: what it is (synced, held) is none of this target's business.
        return Verdict(tuple(checks))

    if facts.synced or facts.failover:
        kind = "synced from the primary" if facts.synced else "a failover slot"
        checks.append(
            Check(
                "not synced/failover",
                False,
                f"the slot is {kind}: PostgreSQL manages it for failover; "
                "dropping it here would break that",
            )
        )
    else:
        checks.append(Check("not synced/failover", True, "not a synced or failover slot"))

    if facts.active and not request.terminate:
        checks.append(
            Check(
                "walsender",
                False,
                "a walsender holds the slot (it is active): add --terminate to end that "
                "connection first",
            )
        )
    elif facts.active:
        checks.append(
            Check("walsender", True, "a walsender holds the slot; --terminate will end it")
        )
    else:
        checks.append(Check("walsender", True, "no walsender holds the slot"))
    return Verdict(tuple(checks))


def state_check(request: DropRequest, state: SlotState) -> Check:
    """Refuse a healthy, lagging or snapshotting slot unless the operator forces it and says why."""
    if state not in PROTECTED_STATES:
        return Check("state", True, f"state is {state.value}")
    reason = (request.reason or "").strip()
    if request.force and reason:
        return Check(
            "state", True, f"state is {state.value}, dropped anyway: --force --reason {reason!r}"
        )
    if request.force:
        return Check(
            "state",
            False,
            f"state is {state.value}: --force needs --reason TEXT saying why (for the audit)",
        )
    return Check(
        "state",
        False,
        f"state is {state.value}: the consumer is working; dropping makes it copy everything "
        "again (use --force --reason TEXT if you must)",
    )


def evaluate(request: DropRequest, facts: SlotFacts) -> Verdict:
    """Every guard condition; the state check only once the fast ones pass and a state is known."""
    fast = fast_checks(request, facts)
    if not fast.allowed:
        return fast
    if facts.state is None:
        return Verdict((*fast.checks, Check("state", False, "the slot's state is unknown")))
    return Verdict((*fast.checks, state_check(request, facts.state)))
