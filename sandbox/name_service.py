"""A name service that never answers, for one command and nothing else on the machine.

`silent_name_service(argv, ...)` runs `argv` in namespaces of its own (`unshare`: a user
namespace mapped to root, a network namespace with only loopback, a mount namespace), where
/etc/resolv.conf is bind-mounted with a file naming 127.0.0.1 as the only name server, and where
this file, run as a script, listens on 127.0.0.1:53 (UDP and TCP), reads every query and answers
none. With `options timeout:30 attempts:5` a lookup then takes minutes, as behind a firewall
that drops DNS: a client that waits for the resolver waits that long.

The script writes what it saw to a JSON report: the names asked for, the command's exit code,
its output and how long it ran. Nothing leaves the namespace: it has no route but loopback.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

RESOLV_CONF = "nameserver 127.0.0.1\noptions timeout:30 attempts:5\n"
# Inside the namespaces: loopback up, the silent resolv.conf in place, then this script.
_ENTER = 'ip link set lo up && mount --bind "$1" /etc/resolv.conf && shift && exec "$@"'


@dataclass(frozen=True)
class Outcome:
    returncode: int
    stdout: str
    stderr: str
    elapsed: float  # seconds the command ran, timed inside the namespace
    asked: list[str]  # the names the command asked the name server for, in order


def silent_name_service(
    argv: list[str], env: dict[str, str], workdir: Path, timeout: float = 120.0
) -> Outcome:
    """Run `argv` (with `env`) where every name lookup goes to a server that never answers."""
    unshare = shutil.which("unshare")
    ip = shutil.which("ip") or shutil.which("ip", path="/usr/sbin:/sbin")
    if unshare is None or ip is None:
        raise RuntimeError("unshare (util-linux) and ip (iproute2) are needed: scripts/setup test")
    resolv = workdir / "resolv.conf"
    resolv.write_text(RESOLV_CONF)
    report = workdir / "name-service.json"
    path = f"{Path(ip).parent}:{env.get('PATH', os.defpath)}"
    command = [unshare, "--user", "--map-root-user", "--net", "--mount"]
    command += ["sh", "-c", _ENTER, "sh", str(resolv), sys.executable, __file__, str(report)]
    done = subprocess.run(
        [*command, *argv],
        env={**env, "PATH": path},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if not report.exists():
        raise RuntimeError(f"the namespace did not start (exit {done.returncode}): {done.stderr}")
    seen = json.loads(report.read_text())
    return Outcome(seen["returncode"], done.stdout, done.stderr, seen["elapsed"], seen["asked"])


def _query_name(packet: bytes) -> str:
    """The first question's name of a DNS query (RFC 1035 §4.1.2), or '?' if it has none."""
    labels, at = [], 12
    while at < len(packet) and packet[at] != 0:
        size = packet[at]
        labels.append(packet[at + 1 : at + 1 + size].decode("ascii", "replace"))
        at += 1 + size
    return ".".join(labels) or "?"


def _serve(report: Path, argv: list[str]) -> int:
    asked: list[str] = []
    lock = threading.Lock()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 53))
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind(("127.0.0.1", 53))
    tcp.listen(64)  # connections complete in the kernel and are never read: silence over TCP

    def listen() -> None:
        while True:
            packet = udp.recv(4096)
            with lock:
                asked.append(_query_name(packet))

    threading.Thread(target=listen, daemon=True).start()
    began = time.monotonic()
    code = subprocess.run(argv, check=False).returncode
    elapsed = time.monotonic() - began
    with lock:
        seen = list(asked)
    report.write_text(json.dumps({"returncode": code, "elapsed": elapsed, "asked": seen}))
    return 0


if __name__ == "__main__":
    sys.exit(_serve(Path(sys.argv[1]), sys.argv[2:]))
