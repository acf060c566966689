"""The liveness probe: GET PowerSync's /probes/liveness and say whether it is up, and why not.

`Prober.probe()` never raises for an expected failure (refused, timeout, 5xx, oversized,
compressed or garbage body): each becomes a down ProbeResult with a one-line error. The GET is
poll/fetch.py's: one deadline over everything, no decompression, a 64 KiB cap. PowerSync answers
200 or 400 with `{"ready":…,"started":…,"touched_at":"<ISO time>"}`; the age of `touched_at`
says how long ago its replicator loop last ticked.
"""

from __future__ import annotations

import json
import time
from datetime import datetime

from slotwatch.config.secrets import redact_url
from slotwatch.model import ProbeResult
from slotwatch.poll.fetch import fetch

MAX_BODY = 64 * 1024


class Prober:
    """Probes one URL within `timeout` seconds overall; holds no connection between probes."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url = redact_url(url)  # what results, /status and the log show
        self._target = url
        self._timeout = timeout

    def close(self) -> None:
        """Nothing to release: every probe opens and closes its own connection."""

    def probe(self) -> ProbeResult:
        checked_at = time.time()
        got = fetch(
            self._target, timeout=self._timeout, max_bytes=MAX_BODY, accept="application/json"
        )
        status = got.status_code
        answered = got.error is None and status is not None
        up = answered and status is not None and 200 <= status < 300
        if not answered:
            error: str | None = got.error or "no answer"
        else:
            error = None if up else f"HTTP {status}"
        return ProbeResult(
            self.url,
            checked_at,
            up=up,
            duration=got.duration,
            status_code=status,
            touched_age=_touched_age(got.body, time.time()) if answered else None,
            error=error,
        )


def _touched_age(body: bytes, now: float) -> float | None:
    """Seconds since PowerSync's `touched_at`, or None when the body does not carry one."""
    try:
        document = json.loads(body)
        touched = datetime.fromisoformat(str(document["touched_at"]))
    except (ValueError, TypeError, KeyError, RecursionError):
        return None
    if touched.tzinfo is None:
        return None
    return max(0.0, now - touched.timestamp())
