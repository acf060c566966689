"""The liveness probe: GET PowerSync's /probes/liveness and say whether it is up, and why not.

`Prober.probe()` never raises for an expected failure (refused, timeout, 5xx, oversized or
garbage body): each becomes a down ProbeResult with a one-line error. PowerSync answers 200
or 400 with `{"ready":…,"started":…,"touched_at":"<ISO time>"}`; the age of `touched_at` says
how long ago its replicator loop last ticked.
"""

from __future__ import annotations

import json
import time
from datetime import datetime

import httpx

from slotwatch import __version__
from slotwatch.model import ProbeResult

MAX_BODY = 64 * 1024
MAX_REDIRECTS = 3


class Prober:
    """Probes one URL with explicit timeouts; follows redirects only on the same origin."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self._timeout = timeout
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            headers={"User-Agent": f"slotwatch/{__version__}"},
            trust_env=False,
        )

    def close(self) -> None:
        self._client.close()

    def probe(self) -> ProbeResult:
        checked_at = time.time()
        clock = time.monotonic()
        try:
            status, body = self._get(httpx.URL(self.url))
        except _Down as down:
            return ProbeResult(
                self.url,
                checked_at,
                up=False,
                duration=time.monotonic() - clock,
                status_code=down.status,
                error=str(down),
            )
        except httpx.TimeoutException:
            return self._down(checked_at, clock, "timed out")
        except httpx.HTTPError as exc:
            return self._down(checked_at, clock, _describe(exc))
        except Exception as exc:  # noqa: BLE001 - a surprise (a malformed Location header, an
            # invalid URL) is still a failed probe: else the last result would stand as if fresh.
            return self._down(checked_at, clock, f"unexpected {type(exc).__name__}: {exc}")
        duration = time.monotonic() - clock
        touched_age = _touched_age(body, time.time())
        up = 200 <= status < 300
        return ProbeResult(
            self.url,
            checked_at,
            up=up,
            duration=duration,
            status_code=status,
            touched_age=touched_age,
            error=None if up else f"HTTP {status}",
        )

    def _down(self, checked_at: float, clock: float, error: str) -> ProbeResult:
        return ProbeResult(
            self.url, checked_at, up=False, duration=time.monotonic() - clock, error=error
        )

    def _get(self, url: httpx.URL) -> tuple[int, bytes]:
        origin = (url.scheme, url.host, url.port)
        # httpx's read timeout is per read: a server trickling bytes needs an overall deadline.
        deadline = time.monotonic() + self._timeout
        for _ in range(MAX_REDIRECTS + 1):
            with self._client.stream("GET", url) as response:
                if response.is_redirect:
                    target = url.join(response.headers.get("location", ""))
                    if (target.scheme, target.host, target.port) != origin:
                        raise _Down(response.status_code, "redirect to another host not followed")
                    url = target
                    continue
                body = bytearray()
                for chunk in response.iter_bytes():
                    body.extend(chunk)
                    if len(body) > MAX_BODY:
                        raise _Down(response.status_code, f"body larger than {MAX_BODY} bytes")
                    if time.monotonic() > deadline:
                        raise httpx.ReadTimeout("body not complete within the timeout")
                return response.status_code, bytes(body)
        raise _Down(None, f"more than {MAX_REDIRECTS} redirects")


class _Down(Exception):
    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(message)
        self.status = status


def _describe(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.ConnectError):
        return "connection refused or unreachable"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _touched_age(body: bytes, now: float) -> float | None:
    """Seconds since PowerSync's `touched_at`, or None when the body does not carry one."""
    try:
        document = json.loads(body)
        touched = datetime.fromisoformat(str(document["touched_at"]))
    except (ValueError, TypeError, KeyError):
        return None
    if touched.tzinfo is None:
        return None
    return max(0.0, now - touched.timestamp())
