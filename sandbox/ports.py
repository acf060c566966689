"""Ports for servers that another process will bind: PostgreSQL, slotwatch, Prometheus, ...

`bind(0)` answers with a port from the kernel's ephemeral range, the same range every outgoing
connection takes its source port from. Between that answer and the child's own bind, a client
socket of any process on the machine may take the port, and the child dies with "address already
in use" (seen under parallel test workers: vmalert lost its port to a connection). The ports
handed out here lie below the ephemeral range, where only an explicit bind lands. Each
pytest-xdist worker draws from a stretch of its own, so no two workers hand out the same port, and
a process walks its stretch round from a random start, so a port it has just handed out (still
waiting for its server, or meant to stay closed) does not come back soon.
"""

from __future__ import annotations

import os
import random
import socket
import threading
from pathlib import Path

FIRST = 10000  # above the well-known and most registered service ports
_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")


class _Walk:
    """This process's stretch, in the order it hands it out, and where it has got to."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ports: list[int] = []
        self.at = 0


_WALK = _Walk()


def ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (32768 when it cannot be read)."""
    try:
        return int(_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def stretch(worker: str | None, workers: str | None) -> range:
    """The ports this process may hand out, as pytest-xdist names it (`gw0`, ... of `workers`);
    every port below the ephemeral range outside a worker."""
    low, high = FIRST, ephemeral_low()
    count = int(workers) if workers and workers.isdigit() and int(workers) > 0 else 1
    index = int(worker[2:]) if worker and worker.startswith("gw") and worker[2:].isdigit() else 0
    size = (high - low) // count
    return range(low + (index % count) * size, low + (index % count + 1) * size)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that nothing listens on now and no other test worker hands out."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    walk = _WALK
    with walk.lock:
        if not walk.ports:
            ports = stretch(
                os.environ.get("PYTEST_XDIST_WORKER"), os.environ.get("PYTEST_XDIST_WORKER_COUNT")
            )
            if len(ports) < 100:  # an ephemeral range that starts low: the kernel's choice
                return _kernel_port(host, family)
            start = random.randrange(len(ports))  # noqa: S311 - a spread, not a secret
            walk.ports = [*ports[start:], *ports[:start]]
        for _ in range(len(walk.ports)):
            port = walk.ports[walk.at]
            walk.at = (walk.at + 1) % len(walk.ports)
            if _bindable(host, family, port):
                return port
    raise RuntimeError(f"no free port on {host} below {ephemeral_low()}")


def _bindable(host: str, family: socket.AddressFamily, port: int) -> bool:
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _kernel_port(host: str, family: socket.AddressFamily) -> int:
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
