"""Host names resolved within a deadline, for the database and for HTTP alike.

`getaddrinfo` has no timeout of its own: glibc's resolver asks each name server of
/etc/resolv.conf `attempts` times and waits `timeout` seconds for each answer (10 s for one
silent server by default), and both libpq's `connect_timeout` and an HTTP client's timeout start
only after it. So a name server that never answers would hold a poll or a probe for as long as
the resolver keeps asking. Here the lookup runs on a thread of its own, and the caller waits for
it only as long as its deadline allows.

A lookup still running when its caller gave up is not started again: the next caller for the
same name waits on that one. A silent name server then holds one thread per name, never one per
poll, and a fleet of targets on one name shares it.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout


class Unresolved(Exception):
    """A host name with no address: the resolver said so, or said nothing in time."""

    def __init__(self, host: str, why: str, *, timed_out: bool) -> None:
        super().__init__(f'could not translate host name "{host}" to address: {why}')
        self.host = host
        self.timed_out = timed_out


_lock = threading.Lock()
# A running lookup per name: its addresses, or why it has none.
_running: dict[str, Future[list[str] | str]] = {}


def is_address(host: str) -> bool:
    """Whether `host` is an IP address already (v4, or v6 with or without a zone)."""
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def resolve(host: str, within: float) -> list[str]:
    """`host`'s addresses for a TCP connection, in the resolver's order, each once.

    Raises Unresolved when the resolver has no address for it, or gives no answer within
    `within` seconds. An address is its own answer, with no lookup.
    """
    if is_address(host):
        return [host]
    with _lock:
        lookup = _running.get(host)
        if lookup is None:
            lookup = _running[host] = Future()
            threading.Thread(
                target=_look_up, args=(host, lookup), name=f"resolve {host}", daemon=True
            ).start()
    try:
        outcome = lookup.result(timeout=max(0.0, within))
    except FutureTimeout:
        raise no_answer(host, within) from None
    if isinstance(outcome, str):
        raise Unresolved(host, outcome, timed_out=False)
    return outcome


def no_answer(host: str, seconds: float) -> Unresolved:
    """The error of a lookup of `host` cut after `seconds` (a caller's whole deadline)."""
    return Unresolved(host, f"no answer from the name service within {seconds:g}s", timed_out=True)


def _look_up(host: str, lookup: Future[list[str] | str]) -> None:
    outcome: list[str] | str
    try:
        found = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError) as exc:
        outcome = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    else:
        outcome = list(dict.fromkeys(str(info[4][0]) for info in found)) or "no address"
    with _lock:
        del _running[host]  # the next caller asks afresh: an answer is not kept past its call
    lookup.set_result(outcome)
