"""The daemon asks glibc for a heap that stays near what it uses (slotwatch.allocator)."""

from __future__ import annotations

import platform

import pytest

from slotwatch.allocator import ARENA_MAX, MMAP_THRESHOLD, tune_allocator

GLIBC = platform.libc_ver()[0] == "glibc"


def test_glibc_takes_both_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    # Debian, the image and NixOS are glibc: both settings must take there.
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    expected = {"MALLOC_ARENA_MAX": ARENA_MAX, "MALLOC_MMAP_THRESHOLD_": MMAP_THRESHOLD}
    assert tune_allocator() == (expected if GLIBC else {})


@pytest.mark.parametrize(
    ("set_by_operator", "left"),
    [
        ({"MALLOC_ARENA_MAX": "4"}, {"MALLOC_MMAP_THRESHOLD_": MMAP_THRESHOLD}),
        ({"MALLOC_MMAP_THRESHOLD_": "131072"}, {"MALLOC_ARENA_MAX": ARENA_MAX}),
        ({"MALLOC_ARENA_MAX": "4", "MALLOC_MMAP_THRESHOLD_": "131072"}, {}),
    ],
)
def test_what_the_operator_set_is_left_alone(
    monkeypatch: pytest.MonkeyPatch, set_by_operator: dict[str, str], left: dict[str, int]
) -> None:
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    for name, value in set_by_operator.items():
        monkeypatch.setenv(name, value)
    assert tune_allocator() == (left if GLIBC else {})
