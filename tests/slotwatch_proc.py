"""Run the real `slotwatch` command in tests: the daemon as a subprocess, one-shot verbs whole.

`SlotwatchProcess` starts `slotwatch run` on a free loopback port with a clean SLOTWATCH_*
environment, waits for /healthz, and reads /metrics (parsed with prometheus_client's own parser)
and /status. Everything an operator would see, nothing from inside the process.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from sandbox.ports import free_port
from sandbox.waiting import wait_until

SLOTWATCH = str(Path(sys.executable).with_name("slotwatch"))


# tgkill(2), which Python does not wrap for another process's threads.
_TGKILL = {"x86_64": 234, "aarch64": 131}


def signal_a_worker_thread(pid: int, sig: signal.Signals) -> int:
    """Send `sig` to one of process `pid`'s threads other than its main one, as the kernel may
    when it picks the thread that takes a process-directed signal (kill, Ctrl-C, systemd).
    Python runs the handler in the main thread only; this is the delivery that shows whether
    the main thread ever wakes up to run it. Returns the thread's id."""
    libc = ctypes.CDLL(None, use_errno=True)
    number = _TGKILL[platform.machine()]
    for tid in sorted(int(t) for t in os.listdir(f"/proc/{pid}/task") if int(t) != pid):
        if libc.syscall(number, pid, tid, int(sig)) == 0:
            return tid
        if ctypes.get_errno() != errno.ESRCH:  # a thread that ended meanwhile: try the next
            raise OSError(ctypes.get_errno(), f"tgkill({pid}, {tid}, {sig.name})")
    raise AssertionError(f"process {pid} has no thread besides its main one")


def clean_env(settings: Mapping[str, str]) -> dict[str, str]:
    """The test process's environment without any SLOTWATCH_*, plus `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLOTWATCH_")}
    env.update(settings)
    return env


def run_cli(
    *args: str, env: Mapping[str, str], timeout: float = 60, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a one-shot verb to completion with exactly `env` as its SLOTWATCH_* settings."""
    return subprocess.run(
        [SLOTWATCH, *args],
        env=clean_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        input=stdin,
        check=False,
    )


class Metrics:
    """Parsed /metrics: `value(name, **labels)` finds one sample."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: list[tuple[str, dict[str, str], float]] = []
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self.samples.append((sample.name, dict(sample.labels), sample.value))

    def find(self, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
        return [
            (lbl, value)
            for sample_name, lbl, value in self.samples
            if sample_name == name and all(lbl.get(k) == v for k, v in labels.items())
        ]

    def value(self, name: str, **labels: str) -> float | None:
        found = self.find(name, **labels)
        if len(found) > 1:
            raise AssertionError(f"{name}{labels} matches {len(found)} samples")
        return found[0][1] if found else None

    def state(self, target: str, slot: str) -> str | None:
        current = [
            lbl["state"]
            for lbl, value in self.find("slotwatch_slot_state", target=target, slot=slot)
            if value == 1
        ]
        return current[0] if current else None


class SlotwatchProcess:
    """`slotwatch run` as a child process; stop() sends SIGTERM like systemd does."""

    def __init__(
        self, settings: Mapping[str, str], log_path: Path, *, nofile: int | None = None
    ) -> None:
        """`nofile`: the daemon's soft file-descriptor limit (e.g. systemd's default of 1024)."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {"SLOTWATCH_LISTEN": f"127.0.0.1:{self.port}", "SLOTWATCH_LOG_FORMAT": "json"}
        env.update(settings)
        self.log_path = log_path
        self._log = log_path.open("w")
        # util-linux's prlimit sets the soft limit and execs in place: the PID stays the daemon's.
        limit = [] if nofile is None else ["prlimit", f"--nofile={nofile}:"]
        self.proc = subprocess.Popen(
            [*limit, SLOTWATCH, "run"],
            env=clean_env(env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._client = httpx.Client(timeout=5)

    def metrics_after(self, when: float, target: str = "default", timeout: float = 10) -> Metrics:
        """The first scrape whose last successful poll of `target` began after `when` (a
        wall-clock time): figures read from the server after that instant."""

        def fresh() -> Metrics | None:
            m = self.metrics()
            success = m.value("slotwatch_last_poll_success_timestamp_seconds", target=target)
            duration = m.value("slotwatch_poll_duration_seconds", target=target)
            if success is None or duration is None or success - duration < when:
                return None
            return m

        return wait_until(fresh, timeout, interval=0.05, message="a poll after the mark")

    def __enter__(self) -> SlotwatchProcess:
        self.wait_ready()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_ready(self, timeout: float = 20) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"slotwatch exited {self.proc.returncode}: {self.log()}")
            try:
                return self._client.get(self.url + "/metrics").status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout, message="slotwatch did not start serving /metrics")

    def get(self, path: str) -> httpx.Response:
        return self._client.get(self.url + path)

    def metrics(self) -> Metrics:
        response = self.get("/metrics")
        response.raise_for_status()
        return Metrics(response.text)

    def status(self) -> dict[str, Any]:
        response = self.get("/status")
        response.raise_for_status()
        document: dict[str, Any] = json.loads(response.text)
        return document

    def slot_status(self, slot: str, target: str = "default") -> dict[str, Any] | None:
        for entry in self.status()["targets"]:
            if entry["target"] == target:
                for found in entry["slots"]:
                    if found["slot"] == slot:
                        return dict(found)
        return None

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()

    def events(self, event: str) -> list[dict[str, Any]]:
        """The structured log lines whose `event` is `event`."""
        found = []
        for line in self.log().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("event") == event:
                found.append(record)
        return found

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM, then wait; returns the exit code (kills and fails after `timeout`)."""
        self._client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("slotwatch did not stop within the grace period") from None
        self._log.close()
        return int(self.proc.returncode)

    def elapsed_stop(self) -> tuple[int, float]:
        started = time.monotonic()
        code = self.stop()
        return code, time.monotonic() - started


# Makes a running daemon from its environment; see the `slotwatch` fixture in conftest.py.
SlotwatchFactory = Callable[..., SlotwatchProcess]
