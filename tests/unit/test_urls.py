"""poll/fetch.py's URLs: what a GET asks for and of whom, parsed with the standard library the way
httpx had them. Pure: no request is sent."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from slotwatch.poll.fetch import HttpUrl, NotHttp, parse_http_url


@pytest.mark.parametrize(
    ("text", "request_url", "origin"),
    [
        (
            "http://127.0.0.1:8080/probes/liveness",
            "http://127.0.0.1:8080/probes/liveness",
            ("http", "127.0.0.1", 8080),
        ),
        ("HTTP://Example.COM/a b?x=1 2#frag", "http://example.com/a%20b?x=1%202", None),
        ("http://h", "http://h/", ("http", "h", 80)),
        ("http://h:80/x", "http://h/x", ("http", "h", 80)),  # the default port is not repeated
        ("https://h:80/x", "https://h:80/x", ("https", "h", 80)),
        ("http://[::1]:9464/metrics", "http://[::1]:9464/metrics", ("http", "::1", 9464)),
        ("http://bücher.de/", "http://xn--bcher-kva.de/", ("http", "xn--bcher-kva.de", 80)),
        ("http://h/a/./b/../c", "http://h/a/c", None),
        ("http://h/../../x", "http://h/x", None),
        ("http://h/päth?q=ü", "http://h/p%C3%A4th?q=%C3%BC", None),
        ("http://h/a%2Fb?x=%20&y=%zz", "http://h/a%2Fb?x=%20&y=%zz", None),  # escapes kept
        ("http://h/`{}?`{}", "http://h/%60%7B%7D?`{}", None),
        ("http://h/?", "http://h/", None),
    ],
)
def test_a_url_asks_for_what_httpx_asked_for(
    text: str, request_url: str, origin: tuple[str, str, int] | None
) -> None:
    url = parse_http_url(text)
    assert str(url) == request_url
    if origin is not None:
        assert url.origin == origin


def test_userinfo_is_decoded_and_never_part_of_the_request_url() -> None:
    url = parse_http_url("http://probe:p%40ss%3Aword@127.0.0.1:8080/probes/liveness")
    assert str(url) == "http://127.0.0.1:8080/probes/liveness"
    assert (url.username, url.password) == ("probe", "p@ss:word")
    bare = parse_http_url("http://127.0.0.1/")
    assert (bare.username, bare.password) == ("", "")


@pytest.mark.parametrize(
    "text", ["ftp://127.0.0.1/x", "not a url", "", "http:///x", "mailto:x@y", "//h/x", "/x"]
)
def test_what_is_not_an_absolute_http_url_says_so(text: str) -> None:
    with pytest.raises(NotHttp):
        parse_http_url(text)


@pytest.mark.parametrize(
    "text",
    [
        "http://[::1",
        "http://h:99999/",
        "http://h:abc/",
        "http://h/\n",
        "http://h/x\tGET /",  # urlsplit would drop the tab and the URL would change unseen
        "http://h\r\n/",
        "http://256.1.1.1/",
        "http://[zz::1]/",
        "http://h/" + "a" * 65536,
    ],
)
def test_a_malformed_url_is_a_value_error_not_a_request(text: str) -> None:
    assert _malformed(parse_http_url, text)


def _malformed(parse: Callable[[str], HttpUrl], text: str) -> bool:
    """A ValueError that is not NotHttp: fetch's "not a valid URL"."""
    try:
        parse(text)
    except NotHttp:
        return False
    except ValueError:
        return True
    return False


def test_a_location_resolves_against_the_url_it_came_from() -> None:
    base = parse_http_url("http://127.0.0.1:8080/probes/liveness?x=1")
    assert str(base.join("/other")) == "http://127.0.0.1:8080/other"
    assert str(base.join("other")) == "http://127.0.0.1:8080/probes/other"
    assert str(base.join("?q=1")) == "http://127.0.0.1:8080/probes/liveness?q=1"
    assert base.join("//evil.example/x").origin == ("http", "evil.example", 80)
    assert base.join("https://127.0.0.1:8080/").origin == ("https", "127.0.0.1", 8080)
    with pytest.raises(NotHttp):
        base.join("ftp://h/")
    assert _malformed(base.join, "http://[::1")
    assert _malformed(base.join, "/x\r\nSet-Cookie: a=b")
