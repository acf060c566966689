"""The package map in slotwatch/__init__.py holds: each part imports only what it may.

Read from the code's own imports (ast), so a new arrow that runs against the design fails here
before anyone has to notice it in review.
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "slotwatch"

# Libraries that do I/O: a pure part must import none of them.
IO_LIBRARIES = {"psycopg", "httpx", "apscheduler", "prometheus_client", "socket", "subprocess"}


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


MODULES = {_module(p): _imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def _in(module: str, part: str) -> bool:
    return module == part or module.startswith(part + ".")


def _offenders(part: str, forbidden: list[str]) -> list[str]:
    return sorted(
        f"{module} imports {name}"
        for module, names in MODULES.items()
        if _in(module, part)
        for name in names
        if any(_in(name, f) for f in forbidden)
    )


@pytest.mark.parametrize(
    ("part", "forbidden"),
    [
        # Decisions do no I/O and know nothing of where their data came from or goes.
        (
            "slotwatch.judge",
            [
                "slotwatch.poll",
                "slotwatch.serve",
                "slotwatch.drop",
                "slotwatch.config",
                "slotwatch.service",
                "slotwatch.wiring",
                "slotwatch.cli",
                *IO_LIBRARIES,
            ],
        ),
        (
            "slotwatch.model",
            [
                "slotwatch.poll",
                "slotwatch.serve",
                "slotwatch.drop",
                "slotwatch.judge",
                "slotwatch.config",
                *IO_LIBRARIES,
            ],
        ),
        ("slotwatch.patterns", ["slotwatch", *IO_LIBRARIES]),
        ("slotwatch.drop.guard", ["slotwatch.poll", "slotwatch.serve", *IO_LIBRARIES]),
        # A scrape never touches the database: nothing served imports the connection code.
        ("slotwatch.serve", ["slotwatch.poll", "slotwatch.drop", "psycopg", "slotwatch.cli"]),
        # Settings stand on their own: every other part reads them, they read no other part.
        (
            "slotwatch.config",
            [
                "slotwatch.poll",
                "slotwatch.serve",
                "slotwatch.drop",
                "slotwatch.judge",
                "slotwatch.service",
                "slotwatch.wiring",
                "slotwatch.cli",
            ],
        ),
        # Reading the world decides nothing and serves nothing.
        (
            "slotwatch.poll",
            ["slotwatch.judge", "slotwatch.serve", "slotwatch.drop", "slotwatch.cli"],
        ),
        # The one-shot verbs' neutral ground never loads the daemon's scheduler.
        ("slotwatch.wiring", ["slotwatch.service", "apscheduler", "slotwatch.cli"]),
        ("slotwatch.drop", ["slotwatch.service", "apscheduler", "slotwatch.cli"]),
        ("slotwatch.report", ["slotwatch.poll", "slotwatch.drop", "psycopg", "httpx"]),
    ],
)
def test_each_part_imports_only_what_the_map_allows(part: str, forbidden: list[str]) -> None:
    assert any(_in(m, part) for m in MODULES), f"{part} is not in the package"
    assert _offenders(part, forbidden) == []


def test_nothing_in_the_package_imports_the_stand_ins() -> None:
    assert [m for m, names in MODULES.items() if any(_in(n, "sandbox") for n in names)] == []


def test_the_package_docstring_names_every_part() -> None:
    doc = (PACKAGE / "__init__.py").read_text(encoding="utf-8")
    parts = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists())
    assert parts, "no subpackages found"
    for part in parts:
        assert f"{part}/" in doc, f"the map in slotwatch/__init__.py does not draw {part}/"


# The sandbox modules that start no process and no database: a poll loop, a free port, and a
# pipe of this process's own with a reader thread.
PURE_SANDBOX = ("sandbox.waiting", "sandbox.ports", "sandbox.pipes")


def test_the_unit_lane_starts_no_process_and_no_database() -> None:
    # tests/unit is the change-test loop: pure, in seconds. A test that needs a subprocess or a
    # real PostgreSQL (the stand-ins in sandbox/ start them) belongs in tests/integration;
    # psycopg's exception classes are plain data and may be built here, sandbox.waiting is only
    # a deadline loop, sandbox.ports only binds sockets to see they are free, and sandbox.pipes
    # only makes a pipe within this process.
    lane = Path(__file__).resolve().parent
    offenders = sorted(
        f"{path.name} imports {name}"
        for path in lane.glob("*.py")
        for name in _imports(path)
        if _in(name, "subprocess")
        or (_in(name, "sandbox") and not any(_in(name, ok) for ok in PURE_SANDBOX))
    )
    assert offenders == []


# A file of the checkout named in its own text: a top folder, then a name with a suffix (a glob
# may stand in a name). Not after "@" (an npm scope) or another path character.
_TOPS = "slotwatch|tests|bench|deploy|docs|scripts|sandbox|grafana|\\.ci"
_NAMED_FILE = re.compile(rf"(?<![\w./@-])((?:{_TOPS})/[\w*/.-]*\.[a-z]+)\b")
_NOT_READ = {".git", ".venv", "node_modules", "__pycache__", ".mypy_cache", ".ruff_cache"}
_TEXT = {".py", ".md", ".yml", ".yaml", ".toml", ".nix", ".sql", ".json", ".cfg", ".container"}
_WRITTEN_BY_A_RUN = {"bench/results.json"}  # the benchmark's output, not committed


def _project_text() -> list[Path]:
    found = []
    for folder, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in _NOT_READ and not d.endswith(".egg-info")]
        here = Path(folder)
        found += [here / f for f in files if Path(f).suffix in _TEXT or here.name == "scripts"]
    return found


def test_every_file_the_project_names_is_there() -> None:
    # Docs and comments that send a reader to a moved file (a test that checks a promise, the
    # SQL a bench row is about) mislead exactly the engineer who follows them.
    missing = []
    for path in _project_text():
        text = path.read_text(encoding="utf-8", errors="replace")
        for found in _NAMED_FILE.finditer(text):
            named = found.group(1)
            installed = _NOT_READ.intersection(Path(named).parts)  # made by setup, not kept
            if named not in _WRITTEN_BY_A_RUN and not installed and not any(REPO.glob(named)):
                line = text.count("\n", 0, found.start()) + 1
                missing.append(f"{path.relative_to(REPO)}:{line} names {named}")
    assert missing == []
