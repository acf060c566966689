"""The liveness probe against a real HTTP server: what counts as up, and what cannot hurt slotwatch.

docs/contract.md §1: 2xx is up; any other status, a timeout, a refusal, a body over 64 KiB: down.
A 2xx body that is not PowerSync's JSON is still up: it only means there is no `touched_at` age.
First the `Prober` on its own, then the same endpoint seen through a running daemon's /metrics.
"""

from __future__ import annotations

import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from slotwatch_proc import Metrics, SlotwatchProcess, free_port

from sandbox.liveness import STALE_AGE_SECONDS, LivenessServer, probe_body
from sandbox.waiting import wait_until
from slotwatch.poll.probe import MAX_BODY, Prober

TIMEOUT = 1.0


@pytest.fixture
def prober() -> Iterator[Callable[[str], Prober]]:
    made: list[Prober] = []

    def make(url: str, timeout: float = TIMEOUT) -> Prober:
        made.append(Prober(url, timeout))
        return made[-1]

    yield make
    for p in made:
        p.close()


@dataclass(frozen=True)
class Case:
    mode: str
    up: bool
    code: int | None
    touched: str | None  # "fresh", "stale" or None for no touched_age
    error: str | None  # a part of the error message, None for no error


CASES = [
    Case("ok", up=True, code=200, touched="fresh", error=None),
    Case("stale", up=False, code=400, touched="stale", error="HTTP 400"),
    Case("fail", up=False, code=500, touched=None, error="HTTP 500"),
    Case("garbage", up=True, code=200, touched=None, error=None),
    Case("huge", up=False, code=200, touched=None, error="body larger than"),
    Case("redirect", up=False, code=302, touched=None, error="redirect to another host"),
    Case("hang", up=False, code=None, touched=None, error="timed out"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.mode for c in CASES])
def test_prober_verdict_per_answer(
    liveness_server: Callable[..., LivenessServer],
    prober: Callable[..., Prober],
    case: Case,
) -> None:
    mode, up, code, touched, error = case.mode, case.up, case.code, case.touched, case.error
    server = liveness_server(mode)
    began = time.monotonic()
    result = prober(server.url).probe()
    elapsed = time.monotonic() - began

    assert (result.up, result.status_code) == (up, code), result
    if touched is None:
        assert result.touched_age is None
    elif touched == "fresh":
        assert result.touched_age is not None
        assert 0 <= result.touched_age < 5
    else:
        assert result.touched_age is not None
        assert STALE_AGE_SECONDS - 1 < result.touched_age < STALE_AGE_SECONDS + 5
    if error is None:
        assert result.error is None
    else:
        assert result.error is not None
        assert error in result.error
    # Every verdict, the hang included, comes within the timeout (plus scheduling slack).
    assert elapsed < TIMEOUT + 1.0
    assert result.duration <= elapsed


def test_refused_connection_is_down(prober: Callable[..., Prober]) -> None:
    result = prober(f"http://127.0.0.1:{free_port()}/probes/liveness").probe()
    assert not result.up
    assert result.status_code is None
    assert result.error is not None
    assert "refused" in result.error


def test_ten_megabyte_body_is_cut_at_the_cap(
    liveness_server: Callable[..., LivenessServer], prober: Callable[..., Prober]
) -> None:
    server = liveness_server("huge")
    probe = prober(server.url)
    tracemalloc.start()
    try:
        result = probe.probe()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert not result.up
    # Reading the 10 MB would allocate at least that much; the cap keeps the peak near 64 KiB.
    assert peak < 16 * MAX_BODY, f"peak allocation {peak} bytes while probing a 10 MB body"


class _Redirector(BaseHTTPRequestHandler):
    """`/moved` redirects to this server's own liveness path; `/loop` redirects to itself;
    `/port/N` redirects to the liveness path on 127.0.0.1:N (another origin)."""

    def do_GET(self) -> None:
        if self.path == "/probes/liveness":
            body = probe_body()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(302)
        if self.path.startswith("/port/"):
            location = f"http://127.0.0.1:{self.path.removeprefix('/port/')}/probes/liveness"
        else:
            location = "/probes/liveness" if self.path == "/moved" else "/loop"
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - base signature
        """Quiet."""


@pytest.fixture
def redirector() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Redirector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_redirect_on_the_same_origin_is_followed(
    redirector: str, prober: Callable[..., Prober]
) -> None:
    result = prober(f"{redirector}/moved").probe()
    assert result.up
    assert result.status_code == 200
    assert result.touched_age is not None


def test_redirect_loop_is_down(redirector: str, prober: Callable[..., Prober]) -> None:
    result = prober(f"{redirector}/loop").probe()
    assert not result.up
    assert result.error is not None
    assert "redirects" in result.error


def test_redirect_to_another_port_is_not_followed(
    redirector: str, liveness_server: Callable[..., LivenessServer], prober: Callable[..., Prober]
) -> None:
    # Same host, other port: another origin, so another service; following would vouch for it.
    other = liveness_server("ok")
    before = other.hits
    result = prober(f"{redirector}/port/{other.port}").probe()
    assert not result.up
    assert result.status_code == 302
    assert result.error is not None
    assert "not followed" in result.error
    assert other.hits == before


# --- through the daemon ----------------------------------------------------------------------


def _probe_series(m: Metrics) -> tuple[float | None, float | None, float | None, float | None]:
    labels = {"target": "default", "probe": "powersync"}
    return (
        m.value("slotwatch_liveness_up", **labels),
        m.value("slotwatch_liveness_status_code", **labels),
        m.value("slotwatch_liveness_touched_age_seconds", **labels),
        m.value("slotwatch_liveness_last_success_timestamp_seconds", **labels),
    )


def test_daemon_reports_each_kind_of_answer(
    liveness_server: Callable[..., LivenessServer], tmp_path: Path
) -> None:
    """An operator switches PowerSync through every failure; /metrics follows within a probe."""
    server = liveness_server("ok")
    settings = {
        # No database here: the probe runs on its own schedule whatever the poll says.
        "SLOTWATCH_DSN": f"host=127.0.0.1 port={free_port()} user=x dbname=x",
        "SLOTWATCH_LIVENESS_URL": server.url,
        "SLOTWATCH_POLL_INTERVAL": "1s",
        "SLOTWATCH_PROBE_INTERVAL": "0.3s",
        "SLOTWATCH_PROBE_TIMEOUT": "0.5s",
    }
    # (mode, up, status code or None for "no series", touched age present)
    steps = [
        ("ok", 1.0, 200.0, True),
        ("stale", 0.0, 400.0, True),
        ("fail", 0.0, 500.0, False),
        ("hang", 0.0, None, False),
        ("garbage", 1.0, 200.0, False),
        ("huge", 0.0, 200.0, False),
        ("redirect", 0.0, 302.0, False),
        ("ok", 1.0, 200.0, True),
    ]
    with SlotwatchProcess(settings, tmp_path / "slotwatch.log") as daemon:
        last_success: float | None = None
        for mode, up, code, touched in steps:
            server.set_mode(mode)

            def shows(up: float = up, code: float | None = code, touched: bool = touched) -> bool:
                got_up, got_code, got_touched, _ = _probe_series(daemon.metrics())
                return (got_up, got_code, got_touched is not None) == (up, code, touched)

            wait_until(shows, 5, message=f"liveness series for mode {mode}")
            m = daemon.metrics()
            _, _, touched_age, success = _probe_series(m)
            if up:
                assert success is not None
                assert last_success is None or success >= last_success
                last_success = success
            else:
                # A failed probe leaves the last success where it was: the alert's clock runs.
                assert success == last_success, mode
            if mode == "stale":
                assert touched_age is not None
                assert touched_age >= STALE_AGE_SECONDS - 1
            if mode == "huge":
                liveness = daemon.status()["targets"][0]["liveness"]
                assert "body larger than" in liveness["error"]
            duration = m.value(
                "slotwatch_liveness_duration_seconds", target="default", probe="powersync"
            )
            assert duration is not None
            assert duration < 1.5
        # SIGTERM while a probe hangs: the probe timeout bounds the wait, the exit is clean.
        server.set_mode("hang")
        wait_until(lambda: _probe_series(daemon.metrics())[1] is None, 5, message="probe hanging")
        hits = server.hits
        wait_until(lambda: server.hits > hits, 5, interval=0.02, message="a probe in flight")
        code, elapsed = daemon.elapsed_stop()
        assert code == 0
        assert elapsed < 0.5 + 3
