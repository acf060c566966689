"""The ports the sandbox hands to servers in other processes (sandbox/ports.py)."""

from __future__ import annotations

import itertools
import os
import socket

import pytest

from sandbox.ports import FIRST, ephemeral_low, free_port, stretch


def test_the_workers_stretches_are_disjoint_and_below_the_ephemeral_range() -> None:
    stretches = [stretch(f"gw{i}", "3") for i in range(3)]
    low = ephemeral_low()
    for one in stretches:
        assert FIRST <= one.start < one.stop <= low
        assert len(one) > 1000
    for a, b in itertools.pairwise(stretches):
        assert a.stop <= b.start
    assert stretch(None, None) == range(FIRST, low)  # outside pytest-xdist: all of it


@pytest.mark.parametrize(("worker", "workers"), [("gw7", "2"), ("master", "3"), ("gw1", "x")])
def test_odd_worker_names_still_get_a_stretch_of_their_own_range(worker: str, workers: str) -> None:
    one = stretch(worker, workers)
    assert FIRST <= one.start < one.stop <= ephemeral_low()


def _mine() -> range:
    return stretch(
        os.environ.get("PYTEST_XDIST_WORKER"), os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    )


def test_handed_out_ports_are_free_distinct_and_of_this_workers_stretch() -> None:
    mine = _mine()
    handed = [free_port() for _ in range(50)]
    assert len(set(handed)) == 50  # a port just handed out does not come back soon
    assert all(port in mine for port in handed)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", handed[-1]))  # and it is free: a server can bind it


def test_a_port_in_use_is_passed_over() -> None:
    port = free_port()
    while port + 2 not in _mine():  # the walk turns round at the end of the stretch
        port = free_port()
    with socket.socket() as held:
        held.bind(("127.0.0.1", port + 1))  # the next one in this process's walk
        held.listen()
        assert free_port() == port + 2


def test_ipv6_ports_are_handed_out_too() -> None:
    port = free_port("::1")
    with socket.socket(socket.AF_INET6) as sock:
        sock.bind(("::1", port))
