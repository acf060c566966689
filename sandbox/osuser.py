"""Decide which OS user runs the sandbox's PostgreSQL processes, and give it private directories.

PostgreSQL refuses to run as root. When this process is root, initdb, postgres and pg_recvlogical
run as the ``postgres`` OS user; ``subprocess.Popen(user=..., group=...)`` switches identity in
the child before exec, so the PID the sandbox holds is the server's own (``runuser`` would leave
itself as the parent and swallow signals meant for the server).
"""

from __future__ import annotations

import os
import pwd
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

SERVER_OS_USER = "postgres"


class ServerUserMissingError(RuntimeError):
    """Running as root, but there is no ``postgres`` OS user to run the servers as."""


@dataclass(frozen=True, slots=True)
class Identity:
    """The uid/gid the servers run as, or None for "stay as we are" (not root)."""

    uid: int | None
    gid: int | None

    @property
    def extra_groups(self) -> list[int] | None:
        # Drop root's supplementary groups in the child: only when switching user at all.
        return [] if self.uid is not None else None


def server_identity() -> Identity:
    if os.geteuid() != 0:
        return Identity(None, None)
    try:
        entry = pwd.getpwnam(SERVER_OS_USER)
    except KeyError:
        raise ServerUserMissingError(
            f"running as root but there is no {SERVER_OS_USER!r} OS user to run PostgreSQL as; "
            f"create it (apt-get install postgresql-common, or useradd --system {SERVER_OS_USER})"
        ) from None
    return Identity(entry.pw_uid, entry.pw_gid)


def private_dir(prefix: str) -> Path:
    """A fresh temporary directory (mode 700) owned by the user the servers run as."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    ident = server_identity()
    if ident.uid is not None and ident.gid is not None:
        os.chown(path, ident.uid, ident.gid)
    return path


def spawn_as_server(argv: list[str], *, log_path: Path, cwd: Path) -> subprocess.Popen[bytes]:
    """Start ``argv`` as the server's OS user, its output appended to ``log_path``.

    In its own session: a Ctrl-C meant for the test run or the demo must not reach the child
    before its owner has stopped it in order.
    """
    ident = server_identity()
    with log_path.open("ab") as log:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            user=ident.uid,
            group=ident.gid,
            extra_groups=ident.extra_groups,
            start_new_session=True,
        )
