"""Where a slot's state comes from before a drop: the running daemon, a watch window, or one poll.

The running daemon's /status is preferred: it has the history a wedge needs. Without a daemon,
an active slot is watched for a window with the daemon's own logic, and an inactive one is
judged from one poll. Each way returns a plain `Reading` that says who judged the slot.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from slotwatch.config.settings import Target, parse_listen
from slotwatch.drop.guard import PROTECTED_STATES, SlotFacts
from slotwatch.errors import SlotwatchError
from slotwatch.model import PollResult, ServerRow, SlotRow, SlotState, SlotView
from slotwatch.poll.fetch import fetch
from slotwatch.poll.probe import Prober
from slotwatch.report import slot_document
from slotwatch.serve.store import Store
from slotwatch.units import format_bytes, format_duration
from slotwatch.wiring import Recorder, target_views

DAEMON_TIMEOUT = 1.5  # an operator in an incident must not wait on a daemon that hangs
# /status is about 1.2 MB for a target of 1,000 slots: this is room for a fleet's, and a bound
# on what an endpoint that is not slotwatch could make drop read.
DAEMON_MAX_BYTES = 64 * 1024 * 1024
# Older than this (two poll intervals at the default 15 s, plus slack), the daemon's view is stale.
DAEMON_MAX_AGE = 60.0
# An observation shorter than this can miss a healthy PowerSync's 10 s acknowledgement cycle.
MIN_SOUND_WINDOW = 20.0


@dataclass(slots=True)
class Reading:
    """The slot's state and figures as judged, and who judged it."""

    document: dict[str, Any]  # the /status slot document (report.slot_document)
    source: str
    liveness: str

    @property
    def state(self) -> SlotState:
        return SlotState(self.document["state"])


@dataclass(frozen=True, slots=True)
class DaemonView:
    """What the running daemon said about one target: its /status URL, entry and slots."""

    url: str
    entry: dict[str, Any]
    slots: dict[str, Any]  # slot documents by slot name


class Vanished(Exception):
    """The slot disappeared while it was being watched: someone else dropped it."""

    def __init__(self, slot: str) -> None:
        super().__init__(slot)
        self.slot = slot


def facts(server: ServerRow | None, row: SlotRow | None) -> SlotFacts:
    """What one poll says about the slot, as the guard takes it; no state yet."""
    if server is None:
        return SlotFacts(in_recovery=True)
    if row is None:
        return SlotFacts(exists=False, in_recovery=False)
    return SlotFacts(
        exists=True,
        in_recovery=False,
        active=row.active,
        synced=row.synced,
        failover=row.failover,
        database=row.database,
    )


# --- the running daemon -----------------------------------------------------------------------


def daemon_url(given: str | None, listen: str) -> str:
    """The daemon's /status: `--daemon-url` when given, else where SLOTWATCH_LISTEN serves."""
    if given:
        return str(given).rstrip("/") + "/status"
    host, port = parse_listen(listen)
    if host in ("0.0.0.0", ""):  # noqa: S104 - a wildcard listen is reached on loopback
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}/status" if ":" in host else f"http://{host}:{port}/status"


def daemon_view(url: str, target: str) -> DaemonView | None:
    """The daemon's fresh view of `target`, or None when no daemon answers, is down or stale.

    poll/fetch.py's GET: DAEMON_TIMEOUT over the whole answer, at most DAEMON_MAX_BYTES.
    """
    got = fetch(url, timeout=DAEMON_TIMEOUT, max_bytes=DAEMON_MAX_BYTES, accept="application/json")
    if got.error is not None or got.status_code != 200:
        return None
    try:
        document = json.loads(got.body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(document, dict):
        return None
    for entry in document.get("targets") or []:
        if isinstance(entry, dict) and entry.get("target") == target:
            if not entry.get("up") or not fresh(entry.get("last_success_at")):
                return None
            slots = {s["slot"]: s for s in entry.get("slots") or [] if isinstance(s, dict)}
            return DaemonView(url, entry, slots)
    return None


def daemon_reading(daemon: DaemonView | None, slot: str) -> Reading | None:
    """The daemon's judgement of `slot`, or None when it has none worth using."""
    if daemon is None:
        return None
    document = daemon.slots.get(slot)
    if document is None:
        return None
    try:
        SlotState(document["state"])
    except (KeyError, ValueError):
        return None
    liveness = daemon.entry.get("liveness")
    if not isinstance(liveness, dict):
        live = "not probed by the daemon"
    else:
        live = "up" if liveness.get("up") else f"down ({liveness.get('error')})"
    when = daemon.entry.get("last_success_at") or "?"
    return Reading(
        dict(document), f"from the running daemon at {daemon.url}, last poll at {when}", live
    )


def fresh(when: object) -> bool:
    """A daemon whose last good poll is old would hand over a stale state: not used then."""
    if not isinstance(when, str):
        return False
    try:
        at = datetime.fromisoformat(when).timestamp()
    except ValueError:
        return False
    return time.time() - at <= DAEMON_MAX_AGE


# --- without a daemon -------------------------------------------------------------------------


def one_poll_reading(target: Target, server: ServerRow, row: SlotRow, liveness: str) -> Reading:
    """An inactive slot needs no window: its state is judged from this one poll."""
    recorder = Recorder(target_views((target,)), one_shot=True)
    recorder.record_poll(PollResult(target.name, time.time(), 0.0, server, (row,)))
    store = recorder.store
    view = _slot_view(store, row.name)
    if view is None:  # pragma: no cover - the poll just recorded holds the slot
        raise SlotwatchError(f"slot {row.name} missing from its own poll")
    document = slot_document(view)
    source = "one poll (no daemon reachable; an inactive slot needs no observation window)"
    if (
        not row.active
        and row.server_inactive_seconds is None
        and not row.consumer_busy
        and SlotState(document["state"]) in PROTECTED_STATES
    ):
        # Before PostgreSQL 17 the server does not say since when a slot is free. drop
        # judges "no walsender now, no consumer session busy" as inactive: the drop
        # statement re-checks that no walsender holds it at the very moment it drops.
        document["state"] = SlotState.INACTIVE.value
        document["reasons"] = [
            "no walsender holds the slot and no consumer session is busy "
            "(this PostgreSQL does not report inactive_since: drop takes 'free now' as "
            "inactive, and the drop statement re-checks it is still free)",
            *document["reasons"],
        ]
    return Reading(document, source, liveness)


def observed_reading(
    target: Target,
    slot: str,
    window: float,
    poll: Callable[[], PollResult],
    liveness: Callable[[], str],
) -> Reading:
    """An active slot without a daemon: watch it for `window` seconds with the daemon's logic.

    Raises Vanished when the slot disappears while watched.
    """
    views = target_views((target,))
    th = views[0].thresholds
    # Over a short window, a position that never moves with WAL waiting is the wedge the
    # daemon would call after stall_after: the window is all the history there is.
    stall_after = min(th.stall_after, window) if window > 0 else th.stall_after
    recorder = Recorder([replace(views[0], thresholds=replace(th, stall_after=stall_after))])
    store = recorder.store
    interval = min(1.0, max(0.2, window / 10))
    began = time.monotonic()
    polls = 0
    held: SlotView | None = None  # the latest poll that saw a walsender on the slot
    while True:
        recorder.record_poll(poll())
        polls += 1
        view = _slot_view(store, slot)
        if view is None:
            raise Vanished(slot)
        held = view if view.row.active else held
        if time.monotonic() - began >= window:
            break
        time.sleep(min(interval, max(0.0, window - (time.monotonic() - began))))
    if not view.row.active and held is not None:
        # The walsender went away at the end of the window (often another operator's
        # --terminate a moment before its drop): judge the slot as it was while held.
        view = held
    document = slot_document(view)
    seen = time.monotonic() - began
    note = (
        f"watched for {format_duration(seen)} ({polls} polls; no daemon reachable): "
        f"a position that did not move over the window with "
        f"{format_bytes(th.lag_floor_bytes)}+ waiting counts as wedged"
    )
    if window < MIN_SOUND_WINDOW:
        note += (
            f"; a window under {format_duration(MIN_SOUND_WINDOW)} can catch a healthy "
            "consumer between two acknowledgements"
        )
    return Reading(document, note, liveness())


def probe_text(target: Target, probe_timeout: float) -> str:
    """The liveness endpoint's answer now, as the operator reads it."""
    if target.liveness_url is None:
        return "probe disabled"
    prober = Prober(target.liveness_url, min(probe_timeout, 2.0))
    try:
        result = prober.probe()
    finally:
        prober.close()
    if result.up:
        age = (
            f", touched {format_duration(result.touched_age)} ago"
            if result.touched_age is not None
            else ""
        )
        return f"up (HTTP {result.status_code}{age}; it stays up while a stream is frozen)"
    return f"down ({result.error})"


def _slot_view(store: Store, slot: str) -> SlotView | None:
    for view in store.snapshot().targets[0].slots:
        if view.row.name == slot:
            return view
    return None
