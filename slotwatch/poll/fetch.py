"""One bounded HTTP GET of a server slotwatch does not control: nothing it sends costs more than
`timeout` seconds or `max_bytes` bytes, and no failure raises.

- One overall deadline covers DNS-free connect, TLS, writing the request, every header byte,
  every redirect and the whole body: each socket operation is given only the time left, so a
  server dripping its headers a byte a second fails at the deadline like one that says nothing.
  (httpx's timeouts are per read, which a drip never trips; hence httpcore with a clock below.)
- `Accept-Encoding: identity`, and a reply with any other Content-Encoding is refused unread:
  nothing is ever decompressed, so a gzip (or gzip-of-gzip) bomb costs its compressed size.
- The body is read raw and capped at `max_bytes`, whatever Content-Length claims.
- Redirects are followed on the same origin only (scheme, host, port), at most MAX_REDIRECTS.
- Credentials in the URL's userinfo become a Basic Authorization header; errors never carry the
  URL, a header value or the body, so they can be logged and shown on /status as they are.
"""

from __future__ import annotations

import base64
import functools
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass

import httpcore
import httpx

from slotwatch import __version__

MAX_REDIRECTS = 3
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True, slots=True)
class Fetched:
    """What one GET came to. `error` is None when a complete reply arrived, whatever its status."""

    status_code: int | None
    body: bytes
    content_type: str | None
    error: str | None
    duration: float

    @property
    def ok(self) -> bool:
        """A complete 2xx reply."""
        return self.error is None and self.status_code is not None and 200 <= self.status_code < 300


def fetch(url: str, *, timeout: float, max_bytes: int, accept: str | None = None) -> Fetched:
    """GET `url` within `timeout` seconds overall, reading at most `max_bytes` of body."""
    clock = _Clock(timeout)
    status: int | None = None

    def done(error: str | None, body: bytes = b"", content_type: str | None = None) -> Fetched:
        return Fetched(status, body, content_type, error, time.monotonic() - clock.started)

    try:
        target = httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError):
        return done("not a valid URL")
    if target.scheme not in ("http", "https") or not target.host:
        return done("not an http:// or https:// URL")
    origin = _origin(target)
    headers = _headers(target, accept)
    try:
        with httpcore.ConnectionPool(
            # Redirects stay on the origin, so only an https:// URL ever needs TLS: the system's
            # CA store (some 2 MiB once loaded) is not read for a plain http:// probe.
            ssl_context=_tls_context() if target.scheme == "https" else None,
            max_connections=1,
            retries=0,
            network_backend=_DeadlineBackend(clock),
        ) as pool:
            for _ in range(MAX_REDIRECTS + 1):
                status = None  # a hop that times out has no status, whatever the last one said
                request_url = str(target.copy_with(username=None, password=None, fragment=None))
                with pool.stream("GET", request_url, headers=headers) as response:
                    status = response.status
                    if status in _REDIRECTS:
                        location = _header(response.headers, b"location")
                        if not location:
                            return done("redirect without a Location header")
                        try:
                            following = target.join(location)
                        except (httpx.InvalidURL, ValueError):
                            return done("redirect to an invalid URL")
                        if _origin(following) != origin:
                            return done("redirect to another host not followed")
                        target = following
                        continue
                    content_type = _header(response.headers, b"content-type")
                    encoding = (_header(response.headers, b"content-encoding") or "").strip()
                    if encoding.lower() not in ("", "identity"):
                        return done("compressed reply refused (slotwatch asks for identity)")
                    declared = _header(response.headers, b"content-length") or ""
                    if declared.strip().isdigit() and int(declared) > max_bytes:
                        return done(f"body larger than {max_bytes} bytes")
                    body = bytearray()
                    for chunk in response.iter_stream():
                        body.extend(chunk)
                        if len(body) > max_bytes:
                            return done(f"body larger than {max_bytes} bytes")
                    return done(None, bytes(body), content_type)
            return done(f"more than {MAX_REDIRECTS} redirects")
    except httpcore.TimeoutException:
        return done(f"timed out: no complete answer within {timeout:g}s")
    except httpcore.ConnectError:
        return done("connection refused or unreachable")
    except (httpcore.NetworkError, httpcore.ProtocolError) as exc:
        return done(f"{type(exc).__name__}: connection broken or not HTTP")
    except Exception as exc:  # noqa: BLE001 - a surprise (a malformed header, an odd TLS error)
        # is still a failed GET: a caller that saw it raise would keep its last result as fresh.
        return done(f"unexpected {type(exc).__name__}")


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """The system's CAs, verified host names; loaded once, shared (SSLContext is thread-safe)."""
    return ssl.create_default_context()


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    default = {"http": 80, "https": 443}.get(url.scheme)
    return url.scheme, url.host, url.port or default


def _headers(url: httpx.URL, accept: str | None) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"User-Agent", f"slotwatch/{__version__}".encode()),
        (b"Accept-Encoding", b"identity"),
        (b"Accept", (accept or "*/*").encode("latin-1", "replace")),
        (b"Connection", b"close"),
    ]
    if url.username or url.password:
        pair = f"{url.username}:{url.password}".encode()
        headers.append((b"Authorization", b"Basic " + base64.b64encode(pair)))
    return headers


def _header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


class _Clock:
    """The one deadline of a fetch; hands each socket operation the time that is left."""

    def __init__(self, timeout: float) -> None:
        self.started = time.monotonic()
        self.deadline = self.started + timeout

    def left(self, expired: type[Exception]) -> float:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise expired("the overall deadline passed")
        return remaining


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's own sockets, with every timeout clamped to what is left of the deadline."""

    def __init__(self, clock: _Clock) -> None:
        self._inner = httpcore.SyncBackend()
        self._clock = clock

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_tcp(
            host, port, self._clock.left(httpcore.ConnectTimeout), local_address, socket_options
        )
        return _DeadlineStream(stream, self._clock)

    def sleep(self, seconds: float) -> None:
        time.sleep(min(seconds, max(0.0, self._clock.deadline - time.monotonic())))


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream, clock: _Clock) -> None:
        self._inner = inner
        self._clock = clock

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._clock.left(httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._clock.left(httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        inner = self._inner.start_tls(
            ssl_context, server_hostname, self._clock.left(httpcore.ConnectTimeout)
        )
        return _DeadlineStream(inner, self._clock)

    def get_extra_info(self, info: str) -> object:
        return self._inner.get_extra_info(info)
