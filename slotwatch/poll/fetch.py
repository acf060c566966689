"""One bounded HTTP GET of a server slotwatch does not control: nothing it sends costs more than
`timeout` seconds or `max_bytes` bytes, and no failure raises.

- One overall deadline covers DNS-free connect, TLS, writing the request, every header byte,
  every redirect and the whole body: each socket operation is given only the time left, so a
  server dripping its headers a byte a second fails at the deadline like one that says nothing.
  (httpx's timeouts are per read, which a drip never trips; hence httpcore with a clock, in
  `transport`, which the first GET loads, and URLs parsed here with the standard library, as
  httpx would have them.)
- `Accept-Encoding: identity`, and a reply with any other Content-Encoding is refused unread:
  nothing is ever decompressed, so a gzip (or gzip-of-gzip) bomb costs its compressed size.
- The body is read raw and capped at `max_bytes`, whatever Content-Length claims.
- Redirects are followed on the same origin only (scheme, host, port), at most MAX_REDIRECTS.
- Credentials in the URL's userinfo become a Basic Authorization header; errors never carry the
  URL, a header value or the body, so they can be logged and shown on /status as they are.
"""

from __future__ import annotations

import base64
import ipaddress
import re
import time
from dataclasses import dataclass
from urllib.parse import quote, unquote, urljoin, urlsplit

from slotwatch import __version__

MAX_REDIRECTS = 3
_DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_URL_LENGTH = 65536
# What stays unescaped in a path and a query besides letters, digits and -._~ (WHATWG's
# percent-encode sets, as httpx uses them): existing %XX escapes are kept as they are.
_QUERY_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"#<>')
_PATH_SAFE = "".join(c for c in _QUERY_SAFE if c not in "?`{}")
_HOST_SAFE = "!$&'()*+,;=" + '"`{}%|\\'
_IPV4_LIKE = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+")


@dataclass(frozen=True, slots=True)
class HttpUrl:
    """An http:// or https:// URL, parsed and normalised: what a GET of it asks for, of whom."""

    scheme: str  # "http" or "https"
    host: str  # lower case, IDNA-encoded; an IPv6 address without its brackets
    port: int  # the scheme's default when the URL names none
    target: str  # path and query, percent-encoded ASCII: the request line's target
    username: str  # percent-decoded; "" when the URL has no userinfo
    password: str

    @property
    def origin(self) -> tuple[str, str, int]:
        return self.scheme, self.host, self.port

    def __str__(self) -> str:
        """The URL without userinfo or fragment (the port only when it is not the default)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = "" if self.port == _DEFAULT_PORTS[self.scheme] else f":{self.port}"
        return f"{self.scheme}://{host}{port}{self.target}"

    def join(self, reference: str) -> HttpUrl:
        """The URL a Location header points to, relative to this one; raises ValueError."""
        _check_characters(reference)
        return parse_http_url(urljoin(str(self), reference))


class NotHttp(ValueError):
    """A well-formed URL, but not an absolute http:// or https:// one."""


def parse_http_url(text: str) -> HttpUrl:
    """Parse an absolute http:// or https:// URL; raises NotHttp for another kind of URL and
    ValueError for what is no URL at all."""
    _check_characters(text)
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise NotHttp(text)
    host = _host(parts.hostname)
    port = parts.port  # ValueError when not a number from 0 to 65535
    path = _without_dot_segments(parts.path) or "/"
    target = quote(path, safe=_PATH_SAFE)
    if parts.query:
        target += "?" + quote(parts.query, safe=_QUERY_SAFE)
    return HttpUrl(
        scheme,
        host,
        _DEFAULT_PORTS[scheme] if port is None else port,
        target,
        unquote(parts.username or ""),
        unquote(parts.password or ""),
    )


def _check_characters(text: str) -> None:
    # urlsplit silently drops tabs and newlines: a URL carrying any control character is refused.
    if len(text) > MAX_URL_LENGTH:
        raise ValueError("URL too long")
    if any(c.isascii() and not c.isprintable() for c in text):
        raise ValueError("control character in URL")


def _host(host: str) -> str:
    if ":" in host:  # urlsplit took it from between brackets
        ipaddress.IPv6Address(host)  # AddressValueError is a ValueError
        return host
    if _IPV4_LIKE.fullmatch(host):
        ipaddress.IPv4Address(host)
        return host
    if host.isascii():
        return quote(host, safe=_HOST_SAFE)
    return host.encode("idna").decode("ascii")  # UnicodeError is a ValueError


def _without_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4: "/a/./b/../c" is "/a/c"."""
    segments = path.split("/")
    if "." not in segments and ".." not in segments:
        return path
    kept: list[str] = []
    for segment in segments:
        if segment == "..":
            if kept and kept != [""]:
                kept.pop()
        elif segment != ".":
            kept.append(segment)
    return "/".join(kept)


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
    started = time.monotonic()
    try:
        target = parse_http_url(url)
    except NotHttp:
        return Fetched(
            None, b"", None, "not an http:// or https:// URL", time.monotonic() - started
        )
    except (ValueError, TypeError):
        return Fetched(None, b"", None, "not a valid URL", time.monotonic() - started)
    # The HTTP client (httpcore and what it loads, about 1 MiB) is imported by the first GET: a
    # daemon that probes nothing never holds it.
    from slotwatch.poll import transport  # noqa: PLC0415

    return transport.get(target, _headers(target, accept), timeout, max_bytes, started)


def _headers(url: HttpUrl, accept: str | None) -> list[tuple[bytes, bytes]]:
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
