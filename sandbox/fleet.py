"""A fleet of targets for one process: many databases on one cluster, and black holes among them.

A black hole is a loopback TCP listener that never accepts: the kernel completes the handshake and
takes the startup packet, and then nothing ever answers, as with a silent firewall or a frozen
proxy. A poll of it ends only at the connect timeout.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from sandbox.cluster import Cluster


class BlackHole:
    """A listener on 127.0.0.1 that never accepts and never answers."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(4096)  # every connection of a fleet completes its handshake and waits
        self.port = int(self._sock.getsockname()[1])

    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} dbname=app user=postgres"

    def connected_from(self, pid: int) -> bool:
        """Whether process `pid` holds a TCP connection to this listener: a poll is in its
        connect. Read from /proc: the process's socket inodes against the kernel's TCP table."""
        inodes = set()
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                link = os.readlink(fd)
            except OSError:  # a descriptor closed meanwhile
                continue
            if link.startswith("socket:["):
                inodes.add(link[len("socket:[") : -1])
        port = f":{self.port:04X}"
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[2].endswith(port) and fields[9] in inodes:
                return True
        return False

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class FleetTarget:
    name: str
    dsn: str
    black_hole: bool


def create_databases(cluster: Cluster, count: int, prefix: str = "fleet") -> list[str]:
    """`count` empty databases (prefix0, prefix1, ...) on `cluster`; returns their names."""
    names = [f"{prefix}{k}" for k in range(count)]
    with cluster.connect(dbname="postgres") as conn:
        existing = {row[0] for row in conn.execute("SELECT datname FROM pg_database")}
        for name in names:
            if name not in existing:
                # A name built here from a fixed prefix and a counter, never from input.
                conn.execute(f'CREATE DATABASE "{name}"')
    return names


def fleet_targets(
    cluster: Cluster,
    databases: list[str],
    count: int,
    holes: list[BlackHole],
    *,
    user: str = "postgres",
) -> list[FleetTarget]:
    """`count` targets: the first len(holes) are black holes, the rest share `databases` in turn."""
    made = [FleetTarget(f"hole{k:03d}", hole.dsn(), True) for k, hole in enumerate(holes)]
    for k in range(count - len(holes)):
        dsn = cluster.dsn(user=user, dbname=databases[k % len(databases)])
        made.append(FleetTarget(f"db{k:03d}", dsn, False))
    return made


def write_targets_file(path: Path, targets: list[FleetTarget], **top: str) -> Path:
    """A TOML settings file listing `targets`, with `top` as top-level settings."""
    lines = [f"{key} = {json.dumps(value)}" for key, value in top.items()]
    for target in targets:
        lines += ["", "[[targets]]", f"name = {json.dumps(target.name)}"]
        lines.append(f"dsn = {json.dumps(target.dsn)}")
        lines.append('liveness_url = ""')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
