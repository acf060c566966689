"""The README's first command, run as a newcomer runs it: `scripts/demo`, watched from outside.

`scripts/demo` runs from the repository root as a child process (setup included), with only
`SLOTWATCH_LISTEN` set (a free port) and a private TMPDIR, so that everything the demo creates on
disk can be seen and must be gone afterwards. The test then does what the demo's printed banner
tells a newcomer to do -- read /metrics, paste the one-shot line, follow the `kill -STOP` hint --
and presses Ctrl-C (SIGINT to the demo's process group, as a terminal does).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from slotwatch_proc import Metrics, clean_env, free_port

from sandbox.waiting import wait_until
from slotwatch.units import parse_duration

# The story waits out the demo's own stall window (60s) and inactivity window (30s).
pytestmark = pytest.mark.timeout(360)

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "scripts" / "demo"
VENV_BIN = REPO / ".venv" / "bin"

# Setup (an idempotent pip install) plus copying the embedded PostgreSQL and initdb.
BANNER_DEADLINE = 90.0
METRICS_DEADLINE = 60.0
SHUTDOWN_GRACE = 30.0
# A detection bound of "window + two polls" also covers the poll's own run and the next scrape.
POLL_SLACK = 1.0

STARTING_LINE = "demo: starting a throwaway PostgreSQL"
BANNER_LAST_LINE = "Ctrl-C stops slotwatch"
SERVER_LINE = re.compile(
    r"^demo: PostgreSQL (?P<major>\d+) on port (?P<port>\d+), slot (?P<slot>\S+) streamed by"
)
CONSUMER_LINE = re.compile(r"\(pid (?P<pid>\d+)\), liveness at (?P<liveness>\S+)")
METRICS_LINE = re.compile(r"metrics:\s+curl -s (?P<url>http://\S+/metrics)")
ONE_SHOT_LINE = re.compile(r"one-shot:\s+(?P<command>.+)$")
WEDGE_LINE = re.compile(
    r"wedge it:\s+(?P<stop>kill -STOP \d+)\s+\(wedged after (?P<stall>\S+) of writes,"
    r" seen at the next poll \(every (?P<poll>[^)]+)\);\s+(?P<cont>kill -CONT \d+)"
)
KILL_LINE = re.compile(r"kill it:\s+(?P<kill>kill -KILL \d+)\s+\(inactive after (?P<after>[^)]+)\)")
TIMEOUT_LINE = "This server runs with wal_sender_timeout=0"


class DemoOutput:
    """The demo's stdout, collected line by line in a thread while the demo runs."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.started = time.monotonic()
        self.lines: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, name="demo-stdout", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self.lines.append((time.monotonic() - self.started, line.rstrip("\n")))

    def text(self) -> str:
        with self._lock:
            return "\n".join(f"{at:6.1f}s  {line}" for at, line in self.lines)

    def search(self, pattern: re.Pattern[str]) -> re.Match[str]:
        with self._lock:
            for _at, line in self.lines:
                found = pattern.search(line)
                if found:
                    return found
        raise AssertionError(f"no line matches {pattern.pattern!r} in:\n{self.text()}")

    def has(self, text: str) -> bool:
        with self._lock:
            return any(text in line for _at, line in self.lines)

    def wait_for(self, text: str, timeout: float) -> None:
        def seen() -> bool:
            if self.has(text):
                return True
            if self.proc.poll() is not None:
                self._thread.join(5)
                if self.has(text):
                    return True
                raise AssertionError(
                    f"the demo exited {self.proc.returncode} before printing {text!r}:\n"
                    f"{self.text()}"
                )
            return False

        wait_until(seen, timeout, interval=0.05, message=f"demo line {text!r}")

    def join(self) -> None:
        self._thread.join(10)


def _under(root: Path, link: Path) -> bool:
    try:
        return os.readlink(link).startswith(str(root) + os.sep)
    except OSError:  # the process went away while we looked, or is a kernel thread
        return False


def processes_in(root: Path) -> list[int]:
    """Processes running from or inside `root`: the demo's servers (cwd) and embedded binaries."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (_under(root, entry / "cwd") or _under(root, entry / "exe")):
            found.append(int(entry.name))
    return found


def process_state(pid: int) -> str | None:
    """The one-letter state from /proc/<pid>/stat (T = stopped), or None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    # The command name in parentheses may contain spaces; the state follows the last ')'.
    return stat.rsplit(")", 1)[1].split()[0]


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def newcomer_env() -> dict[str, str]:
    """A fresh shell: no SLOTWATCH_* settings, and no venv on PATH (scripts/demo needs none)."""
    env = clean_env({})
    env.pop("VIRTUAL_ENV", None)
    env["PATH"] = os.pathsep.join(
        part
        for part in env.get("PATH", os.defpath).split(os.pathsep)
        if part and Path(part).resolve() != VENV_BIN.resolve()
    )
    return env


class DemoRun:
    """`scripts/demo` as a child in its own process group, seen only from outside."""

    def __init__(self, tmp: Path, log_dir: Path, shell: dict[str, str]) -> None:
        self.tmp = tmp
        env = dict(shell)
        # A free port unless the shell names one (the port-taken story).
        env.setdefault("SLOTWATCH_LISTEN", f"127.0.0.1:{free_port()}")
        self.listen_port = int(env["SLOTWATCH_LISTEN"].rpartition(":")[2])
        self.metrics_url = f"http://127.0.0.1:{self.listen_port}/metrics"
        env["TMPDIR"] = str(tmp)
        self.stderr_path = log_dir / "demo.stderr"
        with self.stderr_path.open("w") as stderr:
            self.proc = subprocess.Popen(
                [str(DEMO)],
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                # Its own process group, so that Ctrl-C can be sent to it as a terminal does.
                start_new_session=True,
            )
        self.out = DemoOutput(self.proc)
        self.client = httpx.Client(timeout=5)

    def context(self) -> str:
        """What the demo printed so far, for a failure message."""
        stderr_text = self.stderr_path.read_text()
        return f"\n--- demo stdout ---\n{self.out.text()}\n--- demo stderr ---\n{stderr_text}"

    def scrape(self) -> Metrics | None:
        """/metrics as the banner's curl line reads it; None while nothing answers."""
        if self.proc.poll() is not None:
            raise AssertionError(f"the demo exited {self.proc.returncode}{self.context()}")
        try:
            response = self.client.get(self.metrics_url)
        except httpx.HTTPError:
            return None
        return Metrics(response.text) if response.status_code == 200 else None

    def wait_for_state(self, slot: str, state: str, deadline: float, *, after: str) -> None:
        """Wait up to `deadline` seconds for /metrics to show `slot` in `state`."""
        seen: list[str | None] = []

        def reached() -> bool:
            metrics = self.scrape()
            current = metrics.state("default", slot) if metrics else None
            if not seen or seen[-1] != current:
                seen.append(current)
            return current == state

        try:
            wait_until(reached, deadline, interval=0.25, message=f"{slot} {state}")
        except TimeoutError:
            raise AssertionError(
                f"{slot} not {state} within {deadline:g}s of {after}; states seen: {seen}"
                f"{self.context()}"
            ) from None

    def signal_and_wait(self, signum: signal.Signals) -> int:
        """Send `signum` to the demo's process group; its exit code within the grace."""
        self.client.close()
        os.killpg(self.proc.pid, signum)
        try:
            code = self.proc.wait(SHUTDOWN_GRACE)
        except subprocess.TimeoutExpired:
            message = f"demo still running {SHUTDOWN_GRACE:g}s after {signum.name}"
            raise AssertionError(message + self.context()) from None
        self.out.join()
        return code

    def assert_nothing_left(self, *ports: int) -> None:
        """No process runs from its TMPDIR, nothing listens on its ports, the TMPDIR is empty."""
        assert processes_in(self.tmp) == [], self.context()
        for port in (self.listen_port, *ports):
            assert not port_open(port), f"port {port} still open after the demo{self.context()}"
        assert sorted(p.name for p in self.tmp.iterdir()) == [], self.context()

    def close(self) -> None:
        """After a failure: Ctrl-C, then SIGKILL the demo and whatever it left running."""
        self.client.close()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(SHUTDOWN_GRACE)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        for pid in processes_in(self.tmp):
            try:
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def start_demo(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], DemoRun]]:
    """`start_demo(shell_env)`: `scripts/demo` with a private TMPDIR (traversable by the servers'
    OS user) and only SLOTWATCH_LISTEN (a free port, unless `shell_env` names one) added to
    `shell_env`; stopped and removed afterwards."""
    runs: list[DemoRun] = []
    tmp = Path(tempfile.mkdtemp(prefix="slotwatch-demo-test-"))
    tmp.chmod(0o755)

    def start(shell: dict[str, str]) -> DemoRun:
        runs.append(DemoRun(tmp, tmp_path, shell))
        return runs[-1]

    try:
        yield start
    finally:
        for run in runs:
            run.close()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def demo(start_demo: Callable[[dict[str, str]], DemoRun]) -> DemoRun:
    """The demo run from a newcomer's shell: no SLOTWATCH_* settings, no venv on PATH."""
    return start_demo(newcomer_env())


def powersync_slots(metrics: Metrics) -> list[str]:
    return sorted(
        {
            labels["slot"]
            for labels, _value in metrics.find("slotwatch_slot_state", target="default")
            if labels["slot"].startswith("powersync_selfhost")
        }
    )


def run_pasted(
    command: str, shell: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`command` pasted into a shell (by default a newcomer's)."""
    return subprocess.run(
        ["bash", "-c", command],
        env=newcomer_env() if shell is None else shell,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_scripts_demo_does_what_its_banner_says_and_ctrl_c_leaves_nothing(demo: DemoRun) -> None:
    # The banner: where to look and what to try.
    demo.out.wait_for(BANNER_LAST_LINE, BANNER_DEADLINE)
    server = demo.out.search(SERVER_LINE)
    pg_port, slot = int(server["port"]), server["slot"]
    consumer = demo.out.search(CONSUMER_LINE)
    pid, liveness_port = int(consumer["pid"]), urlsplit(consumer["liveness"]).port or 80
    one_shot = demo.out.search(ONE_SHOT_LINE)["command"]
    wedge = demo.out.search(WEDGE_LINE)
    assert demo.out.search(METRICS_LINE)["url"] == demo.metrics_url, demo.context()
    assert re.fullmatch(r"powersync_selfhost\d+_[0-9a-f]{4}", slot), demo.context()
    assert port_open(pg_port), demo.context()

    # The curl line: slotwatch up, one PowerSync slot, healthy, liveness up, WAL moving.
    def all_green() -> Metrics | None:
        metrics = demo.scrape()
        if metrics is None:
            return None
        rate = metrics.value("slotwatch_wal_rate_bytes_per_second", target="default")
        green = (
            metrics.value("slotwatch_up", target="default") == 1
            and powersync_slots(metrics) == [slot]
            and metrics.state("default", slot) == "healthy"
            and metrics.value("slotwatch_liveness_up", target="default") == 1
            and rate is not None
            and rate > 0
        )
        return metrics if green else None

    try:
        wait_until(all_green, METRICS_DEADLINE, interval=0.5, message="demo metrics")
    except TimeoutError as exc:
        last = demo.scrape()
        shown = last.text if last else "(no answer)"
        raise AssertionError(f"{exc}\n--- /metrics ---\n{shown}{demo.context()}") from None

    # The one-shot line, pasted into a fresh shell as printed.
    shot = run_pasted(one_shot)
    assert shot.returncode == 0, f"{one_shot}\n{shot.stdout}{shot.stderr}{demo.context()}"
    assert re.search(rf"^default\s+{slot}\s+healthy\b", shot.stdout, re.MULTILINE), (
        f"{one_shot}\n{shot.stdout}{shot.stderr}"
    )

    # The printed pid is the consumer itself, not a wrapper: pg_recvlogical on this slot.
    assert Path(f"/proc/{pid}/comm").read_text().strip() == "pg_recvlogical", demo.context()
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert f"--slot={slot}".encode() in argv, argv

    # The wedge hint freezes it: the slot stays active (the banner says why) and reads wedged
    # within the stall window it printed plus two polls.
    assert demo.out.has(TIMEOUT_LINE), demo.context()
    stall, poll = parse_duration(wedge["stall"]), parse_duration(wedge["poll"])
    assert run_pasted(wedge["stop"]).returncode == 0
    stopped_at = time.monotonic()
    wait_until(lambda: process_state(pid) == "T", 5, interval=0.02, message="kill -STOP")
    demo.wait_for_state(slot, "wedged", stall + 2 * poll + POLL_SLACK, after="kill -STOP")
    wedged_after = time.monotonic() - stopped_at
    frozen = demo.scrape()
    assert frozen is not None, demo.context()
    assert frozen.value("slotwatch_slot_active", target="default", slot=slot) == 1, frozen.text
    # `wedged` is claimed only once the window has passed, never early.
    assert wedged_after >= stall, f"wedged {wedged_after:.1f}s after kill -STOP{demo.context()}"

    # kill -CONT lets it go: healthy again within a few polls.
    assert run_pasted(wedge["cont"]).returncode == 0
    wait_until(lambda: process_state(pid) not in ("T", None), 5, interval=0.02, message="CONT")
    demo.wait_for_state(slot, "healthy", 4 * poll, after="kill -CONT")

    # The kill hint: no consumer, so inactive after the printed window plus two polls.
    kill = demo.out.search(KILL_LINE)
    inactive_after = parse_duration(kill["after"])
    assert run_pasted(kill["kill"]).returncode == 0
    # Gone, or a zombie until the demo's consumer handle reaps it.
    wait_until(lambda: process_state(pid) in (None, "Z"), 5, interval=0.02, message="kill -KILL")
    demo.wait_for_state(
        slot, "inactive", inactive_after + 2 * poll + POLL_SLACK, after="kill -KILL"
    )
    gone = demo.scrape()
    assert gone is not None, demo.context()
    assert gone.value("slotwatch_slot_active", target="default", slot=slot) == 0, gone.text

    # `slotwatch status`, pasted as printed, says the same.
    shot = run_pasted(one_shot)
    assert re.search(rf"^default\s+{slot}\s+inactive\b", shot.stdout, re.MULTILINE), (
        f"{one_shot}\n{shot.stdout}{shot.stderr}"
    )

    # Ctrl-C: exit 0 within the grace, after saying it cleans up, and leave nothing behind.
    assert demo.signal_and_wait(signal.SIGINT) == 0, demo.context()
    assert demo.out.has("cleaning up"), demo.context()
    demo.assert_nothing_left(pg_port, liveness_port)


def test_ctrl_c_while_the_demo_starts_leaves_nothing(demo: DemoRun) -> None:
    # Right after this line the demo runs initdb: a Ctrl-C there must not strand its directory.
    demo.out.wait_for(STARTING_LINE, BANNER_DEADLINE)
    assert demo.signal_and_wait(signal.SIGINT) == 0, demo.context()
    assert demo.out.has("cleaning up"), demo.context()
    assert not demo.out.has(BANNER_LAST_LINE), demo.context()
    demo.assert_nothing_left()


def test_closing_the_terminal_stops_the_demo_like_ctrl_c(demo: DemoRun) -> None:
    demo.out.wait_for(BANNER_LAST_LINE, BANNER_DEADLINE)
    pg_port = int(demo.out.search(SERVER_LINE)["port"])
    pid = int(demo.out.search(CONSUMER_LINE)["pid"])
    wait_until(demo.scrape, METRICS_DEADLINE, interval=0.2, message="slotwatch serving")
    assert demo.signal_and_wait(signal.SIGHUP) == 0, demo.context()
    assert demo.out.has("cleaning up"), demo.context()
    assert process_state(pid) is None, f"pg_recvlogical {pid} outlived the demo"
    demo.assert_nothing_left(pg_port)


def test_a_shell_set_up_for_a_real_database_still_gets_the_demo_database(
    start_demo: Callable[[dict[str, str]], DemoRun],
) -> None:
    # Someone who followed "Running it for real" first: their shell names a real database.
    marker = "not-to-be-printed"
    shell = newcomer_env()
    shell.update(
        SLOTWATCH_DSN=f"host=127.0.0.1 port=1 dbname=production password={marker}",
        SLOTWATCH_DSN_FILE="/nonexistent/slotwatch-dsn",
        SLOTWATCH_CONFIG="/nonexistent/slotwatch.toml",
        SLOTWATCH_LIVENESS_URL="http://127.0.0.1:1/probes/liveness",
    )
    demo = start_demo(shell)
    demo.out.wait_for(BANNER_LAST_LINE, BANNER_DEADLINE)
    slot = demo.out.search(SERVER_LINE)["slot"]
    # README: "... is ignored, and it says so", naming each setting it leaves alone.
    assert demo.out.has(
        "demo: not using SLOTWATCH_CONFIG, SLOTWATCH_DSN, SLOTWATCH_DSN_FILE, "
        "SLOTWATCH_LIVENESS_URL from your environment"
    ), demo.context()

    def watching_the_demo() -> bool:
        metrics = demo.scrape()
        return (
            metrics is not None
            and metrics.value("slotwatch_up", target="default") == 1
            and powersync_slots(metrics) == [slot]
            and metrics.value("slotwatch_liveness_up", target="default") == 1
        )

    wait_until(watching_the_demo, METRICS_DEADLINE, interval=0.5, message="demo target up")
    one_shot = demo.out.search(ONE_SHOT_LINE)["command"]
    shot = run_pasted(one_shot, shell)
    assert shot.returncode == 0, f"{one_shot}\n{shot.stdout}{shot.stderr}{demo.context()}"
    assert re.search(rf"^default\s+{slot}\s+healthy\b", shot.stdout, re.MULTILINE), shot.stdout

    assert demo.signal_and_wait(signal.SIGINT) == 0, demo.context()
    assert marker not in demo.context()
    demo.assert_nothing_left()


def test_a_taken_listen_port_ends_the_demo_with_one_line_and_no_banner(
    start_demo: Callable[[dict[str, str]], DemoRun],
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        demo = start_demo(newcomer_env() | {"SLOTWATCH_LISTEN": f"127.0.0.1:{port}"})
        try:
            code = demo.proc.wait(BANNER_DEADLINE)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the demo kept running on a taken port{demo.context()}") from None
        demo.out.join()
    assert code == 78, demo.context()
    # No URL was printed that would never answer; the reason is one line on stderr.
    assert not demo.out.has("metrics:"), demo.context()
    # (stderr also holds what `scripts/setup demo` printed while installing.)
    stderr = demo.stderr_path.read_text()
    errors = [line for line in stderr.splitlines() if line.startswith("demo:")]
    assert len(errors) == 1, demo.context()
    assert f"cannot listen on 127.0.0.1:{port}" in errors[0], demo.context()
    assert "Traceback" not in stderr, demo.context()
    assert demo.out.has("cleaning up"), demo.context()
    demo.assert_nothing_left()
