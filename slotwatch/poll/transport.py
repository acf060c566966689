"""The socket side of `fetch`: httpcore under one deadline (see `slotwatch.poll.fetch`).

Imported by the first GET, not with the daemon: a daemon that probes nothing never loads it.
"""

from __future__ import annotations

import functools
import ssl
import time
from collections.abc import Iterable

import httpcore

from slotwatch.poll import names
from slotwatch.poll.fetch import MAX_REDIRECTS, Fetched, HttpUrl, NotHttp

_REDIRECTS = frozenset({301, 302, 303, 307, 308})


def get(
    target: HttpUrl,
    headers: list[tuple[bytes, bytes]],
    timeout: float,
    max_bytes: int,
    started: float,
) -> Fetched:
    """GET `target` (redirects on its origin followed) until `started` + `timeout` at most."""
    clock = _Clock(started, timeout)
    status: int | None = None

    def done(error: str | None, body: bytes = b"", content_type: str | None = None) -> Fetched:
        return Fetched(status, body, content_type, error, time.monotonic() - clock.started)

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
                with pool.stream("GET", str(target), headers=headers) as response:
                    status = response.status
                    if status in _REDIRECTS:
                        location = _header(response.headers, b"location")
                        if not location:
                            return done("redirect without a Location header")
                        try:
                            following = target.join(location)
                        except NotHttp:  # mailto:, ftp://...: not this origin either
                            return done("redirect to another host not followed")
                        except ValueError:
                            return done("redirect to an invalid URL")
                        if following.origin != target.origin:
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
    except names.Unresolved as exc:  # said with the GET's whole timeout, not what was left
        return done(str(names.no_answer(exc.host, timeout) if exc.timed_out else exc))
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


def _header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


class _Clock:
    """The one deadline of a fetch; hands each socket operation the time that is left."""

    def __init__(self, started: float, timeout: float) -> None:
        self.started = started
        self.deadline = started + timeout

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
        # Looked up within the deadline (`poll.names`), then each address in the resolver's
        # order until one takes the connection, as socket.create_connection would.
        addresses = names.resolve(host, self._clock.left(httpcore.ConnectTimeout))
        options = list(socket_options or ())
        refused = httpcore.ConnectError(f"no address of {host} takes a connection")
        for address in addresses:
            try:
                stream = self._inner.connect_tcp(
                    address,
                    port,
                    self._clock.left(httpcore.ConnectTimeout),
                    local_address,
                    options,
                )
            except httpcore.ConnectError as exc:
                refused = exc
                continue
            return _DeadlineStream(stream, self._clock)
        raise refused

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
