"""Wiring of the daemon: scheduler, pollers, probers, store, HTTP; and its ordered shutdown.

Each target has its own poll job and probe job on APScheduler's thread pool, so a slow target
never delays another. A job is never run twice at once (max_instances=1); a poll that could not
start because the previous one still ran is counted, not logged at WARNING forever.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from typing import Any

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MAX_INSTANCES, JobEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from slotwatch.config.settings import Settings, Target
from slotwatch.logs import get_logger, written_in_background
from slotwatch.model import SlotState, StateChange
from slotwatch.poll import consumer
from slotwatch.poll.probe import Prober
from slotwatch.report import status_document
from slotwatch.serve.exposition import Exposition
from slotwatch.serve.http import HttpServer
from slotwatch.serve.store import TargetView
from slotwatch.wiring import Recorder, connections, consumer_fresh_for, run_all, target_views

log = get_logger(__name__)

ALARMING = frozenset({SlotState.WEDGED, SlotState.INACTIVE, SlotState.AT_RISK, SlotState.LOST})


def log_changes(changes: list[StateChange]) -> None:
    """One structured event per state change, so the journal tells an incident's story."""
    for change in changes:
        a = change.assessment
        # Entering a state that pages is a WARNING, so a journal filtered by level still shows it.
        emit = log.warning if change.after in ALARMING else log.info
        emit(
            "slot state changed" if change.after else "slot gone",
            target=change.target,
            slot=change.slot,
            state_from=change.before.value if change.before else None,
            state_to=change.after.value if change.after else None,
            reasons=list(a.reasons) if a else [],
            lag_bytes=a.lag_bytes if a else None,
            retained_wal_bytes=a.retained_wal_bytes if a else None,
            flush_stall_seconds=round(a.flush_stall_seconds, 1) if a else None,
            inactive_seconds=round(a.inactive_seconds, 1) if a else None,
            sent_lag_bytes=a.sent_lag_bytes if a else None,
            wal_budget_ratio=(
                round(a.wal_budget_ratio, 3) if a and a.wal_budget_ratio is not None else None
            ),
            invalidation_eta_seconds=(
                None
                if a is None or a.invalidation_eta_seconds == float("inf")
                else round(a.invalidation_eta_seconds)
            ),
        )


def workers_for(targets: tuple[Target, ...]) -> int:
    """A worker for each job that may run at once: every target's poll, probe and consumer read.

    A black-holed target holds its worker until the connect timeout, longer than a poll
    interval; with fewer workers than jobs, enough black holes would queue every other target's
    poll behind them. Threads are started only as jobs run at the same time, so an idle fleet does
    not pay for them. The one spare runs a job whose previous run is finishing.
    """
    probes = sum(1 for t in targets if t.liveness_url is not None)
    consumers = sum(1 for t in targets if t.consumer_metrics_url is not None)
    return len(targets) + probes + consumers + 1


# A fleet's first polls start in batches of FIRST_POLL_BATCH targets, FIRST_POLL_SPACING apart
# (closer when the fleet would not fit in one interval), and keep that phase. Started together,
# 450 targets on one 2-core server made it fork and authenticate (SCRAM) 450 sessions at once:
# once in three runs the last 45 hit the 5 s connect timeout and waited a whole interval for their
# first success (18.7 s). 50 a second never did. One target 20 ms apart from the next cost the
# scheduler 500 wake-ups an interval (249-276 CPU s/h against 193-206 all at once); ten together
# every 200 ms cost nothing (191-196), and the daemon held 6 MiB less (77-79 against 84 MiB).
FIRST_POLL_BATCH = 10
FIRST_POLL_SPACING = 0.2


def first_poll_offsets(count: int, interval: float) -> list[float]:
    """Seconds after start at which each of `count` targets is first polled: the first batch at
    once, the rest spread within one interval, so a fleet's connects never arrive all at once."""
    batches = -(-count // FIRST_POLL_BATCH)
    spacing = min(FIRST_POLL_SPACING, interval / batches) if batches else 0.0
    return [(index // FIRST_POLL_BATCH) * spacing for index in range(count)]


class Service:
    """The running daemon. `run()` blocks until `request_stop()` (SIGTERM/SIGINT) is called."""

    def __init__(self, settings: Settings, targets: tuple[Target, ...]) -> None:
        self.settings = settings
        self.targets = targets
        self._recorder = Recorder(
            target_views(targets), consumer_fresh_for=consumer_fresh_for(settings)
        )
        self.store = self._recorder.store
        self.metrics = Exposition(self.store)
        self._connections = connections(settings, targets)
        self._probers = {
            t.name: Prober(t.liveness_url, settings.probe_timeout)
            for t in targets
            if t.liveness_url is not None
        }
        self._last_attempt: dict[str, float] = {}
        self._started = time.time()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._hangups = 0
        self._scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=workers_for(targets))},
            job_defaults={"coalesce": True, "max_instances": 1},
            timezone="UTC",
        )
        self._scheduler.add_listener(self._on_event, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_ERROR)
        self.http = HttpServer(settings.listen_address(), self.metrics, self.health, self.status)

    # --- jobs -------------------------------------------------------------------------------

    def poll(self, name: str) -> None:
        self._last_attempt[name] = time.time()
        result = self._connections[name].poll()
        before = self._view(name).last_poll
        failed_before = before.error if before is not None else None
        if result.error is not None:
            # An outage polled every few seconds must not flood the journal: say it once,
            # and again only when the reason changes; the counter has every failure.
            repeated = failed_before is not None and failed_before.reason == result.error.reason
            (log.debug if repeated else log.warning)(
                "poll failed", target=name, reason=result.error.reason, error=result.error.message
            )
        elif failed_before is not None:
            log.info("poll succeeded again", target=name, after_error=failed_before.reason)
        log_changes(self._recorder.record_poll(result))

    def _view(self, name: str) -> TargetView:
        return next(v for v in self.store.snapshot().targets if v.name == name)

    def probe(self, name: str) -> None:
        result = self._probers[name].probe()
        before = self._view(name).probe
        if before is None or before.up != result.up:
            log.info(
                "liveness probe up" if result.up else "liveness probe down",
                target=name,
                url=result.url,
                status_code=result.status_code,
                error=result.error,
            )
        self.store.record_probe(name, result)

    def read_consumer(self, name: str, url: str) -> None:
        reading = consumer.read(url, self.settings.probe_timeout)
        before = self._view(name).consumer
        if before is None or before.reading.up != reading.up:
            (log.info if reading.up else log.warning)(
                "consumer metrics up" if reading.up else "consumer metrics down",
                target=name,
                url=url,
                error=reading.error,
            )
        self._recorder.record_consumer(name, reading)

    def _on_event(self, event: JobEvent) -> None:
        job_id = str(event.job_id)
        if event.code == EVENT_JOB_MAX_INSTANCES and job_id.startswith("poll:"):
            self.store.record_skipped_poll(job_id.removeprefix("poll:"))
            log.debug("poll skipped: the previous one is still running", target=job_id[5:])
        elif event.code == EVENT_JOB_ERROR:
            exception: Any = getattr(event, "exception", None)
            log.error("job failed unexpectedly", job=job_id, error=repr(exception))

    # --- HTTP callbacks ---------------------------------------------------------------------

    def health(self) -> tuple[bool, str]:
        if not self._scheduler.running:
            return False, "scheduler not running"
        now = time.time()
        limit = 3 * self.settings.poll_interval
        for target in self.targets:
            attempt = self._last_attempt.get(target.name)
            if attempt is None:
                if now - self._started > limit:
                    return False, f"{target.name}: no poll attempted yet"
                continue
            if now - attempt > limit:
                return False, f"{target.name}: last poll attempt {now - attempt:.0f}s ago"
        return True, "ok"

    def status(self) -> dict[str, Any]:
        return status_document(self.store.snapshot())

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self._started = time.time()
        _quiet_skipped_runs()
        self.http.start()
        now = time.time()
        offsets = first_poll_offsets(len(self.targets), self.settings.poll_interval)
        for target, offset in zip(self.targets, offsets, strict=True):
            self._scheduler.add_job(
                self.poll,
                "interval",
                args=[target.name],
                id=f"poll:{target.name}",
                seconds=self.settings.poll_interval,
                next_run_time=_utc(now + offset),
                misfire_grace_time=max(1, int(self.settings.poll_interval)),
            )
            if target.name in self._probers:
                self._scheduler.add_job(
                    self.probe,
                    "interval",
                    args=[target.name],
                    id=f"probe:{target.name}",
                    seconds=self.settings.probe_interval,
                    next_run_time=_utc(now),
                    misfire_grace_time=max(1, int(self.settings.probe_interval)),
                )
            if target.consumer_metrics_url is not None:
                self._scheduler.add_job(
                    self.read_consumer,
                    "interval",
                    args=[target.name, target.consumer_metrics_url],
                    id=f"consumer:{target.name}",
                    seconds=self.settings.probe_interval,
                    next_run_time=_utc(now),
                    misfire_grace_time=max(1, int(self.settings.probe_interval)),
                )
        self._scheduler.start()
        host, _ = self.settings.listen_address()
        log.info(
            "slotwatch started",
            listen=f"[{host}]:{self.http.port}" if ":" in host else f"{host}:{self.http.port}",
            targets=[t.name for t in self.targets],
            shard=self.settings.shard,
            poll_interval=self.settings.poll_interval,
        )
        if not self.targets:
            log.warning(
                "no target to poll: this replica's shard holds none", shard=self.settings.shard
            )

    def request_stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def request_reload(self) -> None:
        """SIGHUP: only noted here; the main loop says what it means (see `wait`)."""
        self._hangups += 1
        self._wake.set()

    def wait(self) -> None:
        # Event.wait with a timeout stays interruptible by signals on every platform.
        while not self._stop.is_set():
            self._wake.wait(timeout=1.0)
            self._wake.clear()
            if self._hangups:
                self._hangups = 0
                # SIGHUP used to kill the daemon silently (Python's default). It reloads
                # nothing: settings and secrets are read once, at start, and a half-applied
                # reload would be worse than none. Say so, and keep watching.
                log.warning(
                    "SIGHUP received: slotwatch does not reload its settings; "
                    "restart it to apply a change (it keeps running as it is)"
                )

    def shutdown(self) -> None:
        """Finish the polls in flight, then stop the scheduler, HTTP and connections."""
        log.info("slotwatch stopping")
        if self._scheduler.running:
            # In a thread of its own: the main thread waits in timed steps, so that a second
            # stop signal handed by the kernel to a worker thread still runs its handler.
            run_all([("slotwatch stop", partial(self._scheduler.shutdown, wait=True))])
        self.http.stop()
        for connection in self._connections.values():
            connection.close()
        for prober in self._probers.values():
            prober.close()
        log.info("slotwatch stopped")

    def run(self, *, stop_on_hangup: bool = False) -> None:
        """Run until SIGTERM/SIGINT (or `request_stop`). A daemon notes SIGHUP and keeps going;
        a program that runs it in a terminal (the demo) passes `stop_on_hangup`, so that closing
        the terminal stops it like Ctrl-C."""
        hangup = self.request_stop if stop_on_hangup else self.request_reload
        with written_in_background(), _stop_on_signals(self.request_stop, hangup):
            self.start()
            try:
                self.wait()
            finally:
                self.shutdown()


class _SkippedRunFilter(logging.Filter):
    """Drops APScheduler's per-skip WARNING: `_on_event` counts skipped polls instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances reached" not in record.getMessage()


def _quiet_skipped_runs() -> None:
    scheduler_log = logging.getLogger("apscheduler.scheduler")
    if not any(isinstance(f, _SkippedRunFilter) for f in scheduler_log.filters):
        scheduler_log.addFilter(_SkippedRunFilter())


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


@contextmanager
def _stop_on_signals(stop: Callable[[], None], hangup: Callable[[], None]) -> Iterator[None]:
    """SIGTERM/SIGINT and SIGHUP only set a flag; the main loop does the work. A second
    SIGTERM/SIGINT while the polls in flight finish ends the process at once (exit 128 + the
    signal's number: 130, 143), as an operator pressing Ctrl-C twice expects."""
    stopping: list[int] = []

    def handler(signum: int, frame: object) -> None:
        if signum == signal.SIGHUP:
            hangup()
            return
        if stopping:
            log.warning(
                "second stop signal: exiting now, without waiting for the polls in flight",
                signal=signal.Signals(signum).name,
            )
            logging.shutdown()
            os._exit(128 + signum)
        stopping.append(signum)
        stop()

    previous = {
        sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    }
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
