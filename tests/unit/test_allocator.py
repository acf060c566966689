"""The daemon asks glibc for a heap that stays near what it uses (slotwatch.service)."""

from __future__ import annotations

import platform

import pytest

from slotwatch.service import tune_allocator


def test_glibc_takes_the_settings() -> None:
    # Debian, the image and NixOS are glibc: the settings must take there.
    assert tune_allocator() is (platform.libc_ver()[0] == "glibc")


def test_the_environment_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert tune_allocator() is (platform.libc_ver()[0] == "glibc")  # nothing set, nothing refused
