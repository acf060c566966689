"""poll/fetch.py's bounded GET against a real server: what it reads, and what it refuses unread."""

from __future__ import annotations

import time
from collections.abc import Callable

from sandbox.liveness import LivenessServer
from slotwatch.drop.evidence import DAEMON_TIMEOUT, daemon_view
from slotwatch.poll.fetch import fetch

TIMEOUT = 1.0


def test_fetch_never_decompresses_and_keeps_the_raw_cap(
    liveness_server: Callable[..., LivenessServer],
) -> None:
    """Item 1 at the fetch level: the bomb is refused on its headers, its body never read."""
    server = liveness_server("double_gzip_bomb")
    got = fetch(server.url, timeout=TIMEOUT, max_bytes=64 * 1024)
    assert got.error is not None
    assert "compressed" in got.error
    assert got.body == b""
    assert not got.ok
    ok = liveness_server("ok")
    fine = fetch(ok.url, timeout=TIMEOUT, max_bytes=64 * 1024, accept="application/json")
    assert fine.ok, fine
    assert b"touched_at" in fine.body
    assert fine.content_type is not None
    assert fine.content_type.startswith("application/json")
    small = fetch(ok.url, timeout=TIMEOUT, max_bytes=10)
    assert small.error == "body larger than 10 bytes"


def test_fetch_of_an_invalid_url_is_an_error_not_an_exception() -> None:
    for url in ("http://[::1", "ftp://127.0.0.1/x", "not a url", ""):
        got = fetch(url, timeout=TIMEOUT, max_bytes=10)
        assert got.error is not None, url
        assert got.status_code is None
        assert url == "" or url not in got.error


def test_drop_asks_the_daemon_with_the_same_bounded_get(
    liveness_server: Callable[..., LivenessServer],
) -> None:
    """drop's question to a running daemon is no answer at all, and no wait past its deadline,
    when what answers is not slotwatch's /status: an error, not JSON, silence, a drip, no end."""
    for mode in ("fail", "garbage", "hang", "header_drip", "chunked", "ok"):
        server = liveness_server(mode)
        began = time.monotonic()
        assert daemon_view(server.url, "default") is None, mode
        assert time.monotonic() - began < DAEMON_TIMEOUT + 1.0, mode
        server.release()
