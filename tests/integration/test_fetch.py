"""poll/fetch.py's bounded GET against a real server: what it reads, and what it refuses unread."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

from sandbox.liveness import LivenessServer
from slotwatch import __version__
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


class _Recording(BaseHTTPRequestHandler):
    """Answers /old with a same-origin redirect to /probes/liveness, that with 200, and keeps
    every request's headers as they arrived."""

    seen: ClassVar[list[tuple[str, dict[str, str]]]] = []

    def do_GET(self) -> None:
        self.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
        if self.path == "/old":
            self.send_response(302)
            self.send_header("Location", "/probes/liveness")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = b'{"ready": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - base signature
        pass


@contextmanager
def _recording_server() -> Iterator[str]:
    """A real HTTP server answering as `_Recording`; yields its base URL's host:port."""
    _Recording.seen.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recording)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_fetch_sends_what_reliability_md_says_on_every_hop() -> None:
    """docs/reliability.md: URL credentials go as Basic auth (percent-decoded), the request asks
    for `identity` and names slotwatch, and a same-origin redirect keeps all of it; the
    password is never in the request line."""
    with _recording_server() as where:
        got = fetch(f"http://probe%40ops:s3cr%3At@{where}/old", timeout=TIMEOUT, max_bytes=1024)
    assert got.ok, got
    assert [path for path, _ in _Recording.seen] == ["/old", "/probes/liveness"]
    expected = "Basic " + base64.b64encode(b"probe@ops:s3cr:t").decode()
    for path, headers in _Recording.seen:
        assert headers["authorization"] == expected, path
        assert headers["accept-encoding"] == "identity", path
        assert headers["user-agent"] == f"slotwatch/{__version__}", path
        assert "s3cr" not in path


def test_fetch_without_userinfo_sends_no_authorization() -> None:
    with _recording_server() as where:
        got = fetch(f"http://{where}/probes/liveness", timeout=TIMEOUT, max_bytes=1024)
    assert got.ok, got
    [(_, headers)] = _Recording.seen
    assert "authorization" not in headers
