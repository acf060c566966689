"""The built wheel holds what `slotwatch run` needs and nothing else: no stand-ins, no tests."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _build_wheel(out: Path) -> Path:
    source = out / "src"
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    for relative in listed:
        if (REPO / relative).is_file():
            (source / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / relative, source / relative)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(source)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (wheel,) = out.glob("slotwatch-*.whl")
    return wheel


def test_the_wheel_holds_the_package_and_no_stand_in(tmp_path: Path) -> None:
    names = zipfile.ZipFile(_build_wheel(tmp_path)).namelist()
    top = {name.split("/")[0] for name in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"slotwatch"}, top
    assert not [n for n in names if "sandbox" in n or n.startswith("tests/")]
    shipped = {n for n in names if n.startswith("slotwatch/")}
    # Every module and statement of the checkout's package is in it, so `run` finds them.
    expected = {
        p.relative_to(REPO).as_posix()
        for p in (REPO / "slotwatch").rglob("*")
        if p.suffix in {".py", ".sql", ".typed"}
    }
    assert expected <= shipped, sorted(expected - shipped)
