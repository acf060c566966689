"""The audit record of a confirmed drop attempt, and the fsynced file it is appended to.

Records are scrubbed by the log redactor before they go anywhere: no DSN or password ever
reaches the structured log or the audit file.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from slotwatch.drop.guard import Verdict
from slotwatch.errors import (
    ConfigError,
    DatabaseUnreachable,
    InterruptedUnknown,
    PermissionDenied,
    Refused,
    SlotwatchError,
    UsageError,
)
from slotwatch.logs import REDACTOR, get_logger

log = get_logger("slotwatch.drop")

# The slot document's figures worth keeping in the record of what the slot looked like.
FIGURE_KEYS = (
    "active",
    "walsender_pid",
    "walsender_application_name",
    "wal_status",
    "lag_bytes",
    "retained_wal_bytes",
    "safe_wal_size_bytes",
    "invalidation_eta_seconds",
    "flush_stall_seconds",
    "inactive_seconds",
    "confirmed_flush_lsn",
    "restart_lsn",
    "reasons",
)

AuditOutcome = Literal[
    "dropped",
    "already_gone",
    "refused",
    "deadline",
    "aborted",
    "permission_denied",
    "unreachable",
    "unknown",
    "usage_error",
    "error",
]

# Every outcome an audit record can carry, and what it tells the operator (docs/reference.md).
OUTCOMES: dict[AuditOutcome, str] = {
    "dropped": "the slot was dropped (exit 0)",
    "already_gone": "the slot was gone when the drop ran: someone else dropped it (exit 0)",
    "refused": "the guard said no (exit 3); nothing was dropped",
    "deadline": "a walsender held the slot until the deadline passed (exit 3); nothing was dropped",
    "aborted": "the name typed back did not match (exit 3), or Ctrl-C (exit 130) before the drop"
    " statement was sent; nothing was dropped",
    "permission_denied": "the role lacks a privilege (exit 77); nothing was dropped",
    "unreachable": "the server could not be reached, or stopped answering, before the drop"
    " statement was sent (exit 69); nothing was dropped",
    "unknown": "the drop statement was sent and its answer never came: no answer or the connection"
    " lost (exit 69), or Ctrl-C (exit 130); the slot may be gone: look at pg_replication_slots"
    " before trying again",
    "usage_error": "the arguments were wrong (exit 64); nothing was dropped",
    "error": "anything unexpected (exit 70)",
}

_OUTCOMES: dict[type[SlotwatchError], AuditOutcome] = {
    Refused: "refused",
    PermissionDenied: "permission_denied",
    DatabaseUnreachable: "unreachable",
    UsageError: "usage_error",
}


@dataclass(slots=True)
class Attempt:
    """The audit record of one confirmed attempt, filled in as the attempt goes."""

    target: str
    slot: str | None
    flags: dict[str, Any]
    reason: str | None
    started: float = field(default_factory=time.time)
    server_version_num: int | None = None
    state: str | None = None
    state_source: str | None = None
    figures_before: dict[str, Any] | None = None
    guard: list[dict[str, Any]] = field(default_factory=list)
    terminated_pids: list[int] = field(default_factory=list)
    drop_attempts: int = 0
    outcome: AuditOutcome = "error"
    error: str | None = None

    def note_guard(self, verdict: Verdict) -> None:
        self.guard = [
            {"check": c.name, "passed": c.passed, "detail": c.detail} for c in verdict.checks
        ]

    def note_figures(self, document: dict[str, Any], liveness: str) -> None:
        figures = {key: document.get(key) for key in FIGURE_KEYS}
        figures["liveness"] = liveness
        self.figures_before = figures

    def record(self) -> dict[str, Any]:
        return {
            "event": "slot drop",
            "time": datetime.fromtimestamp(self.started, UTC).isoformat(timespec="milliseconds"),
            "os_user": _os_user(),
            "host": socket.gethostname(),
            "target": self.target,
            "slot": self.slot,
            "server_version_num": self.server_version_num,
            "state": self.state,
            "state_source": self.state_source,
            "figures_before": self.figures_before,
            "guard": self.guard,
            "reason": self.reason,
            "flags": self.flags,
            "terminated_pids": self.terminated_pids,
            "drop_attempts": self.drop_attempts,
            "outcome": self.outcome,
            "error": self.error,
            "duration_seconds": round(time.time() - self.started, 3),
        }


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container with a numeric user)
        return str(os.getuid())


class AuditLog:
    """Where audit records go: the structured log always, the audit file when configured.

    The file is opened before anything changes, so a drop that could not be audited never runs.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._fd: int | None = None
        if path is not None:
            try:
                self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            except OSError as exc:
                raise ConfigError(
                    f"SLOTWATCH_AUDIT_LOG: cannot open {path} for appending: "
                    f"{exc.strerror or exc}; nothing was changed"
                ) from None

    def write(self, record: dict[str, Any]) -> None:
        clean: dict[str, Any] = dict(REDACTOR(None, "info", dict(record)))
        fields = {k: v for k, v in clean.items() if k != "event"}
        log.info("slot drop", **fields)
        if self._fd is not None:
            line = json.dumps(clean, sort_keys=False, default=str) + "\n"
            os.write(self._fd, line.encode("utf-8"))
            # The record must survive a crash that follows the drop: it is the incident's trail.
            os.fsync(self._fd)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


@contextlib.contextmanager
def audited(path: Path | None, attempt: Attempt) -> Iterator[Attempt]:
    """Leave one record of `attempt` when the block ends, however it ends.

    An outcome the block set itself (dropped, deadline, aborted...) stands; otherwise the
    exception that ended the block names it. The audit file is opened before the block runs.
    """
    audit = AuditLog(path)
    try:
        yield attempt
    except SlotwatchError as exc:
        if attempt.outcome == "error":
            attempt.outcome = _OUTCOMES.get(type(exc), "error")
        attempt.error = REDACTOR.scrub(str(exc))
        raise
    except KeyboardInterrupt as exc:
        unknown = isinstance(exc, InterruptedUnknown)
        attempt.outcome = "unknown" if unknown else "aborted"
        attempt.error = f"interrupted: {exc}" if unknown else "interrupted"
        raise
    except Exception as exc:
        attempt.outcome, attempt.error = "error", REDACTOR.scrub(f"{type(exc).__name__}: {exc}")
        raise
    finally:
        try:
            audit.write(attempt.record())
        finally:
            audit.close()
