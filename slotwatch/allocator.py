"""The daemon's C heap: asked of glibc once, before any thread starts (`slotwatch run`)."""

from __future__ import annotations

import ctypes
import os

# glibc's mallopt parameters (malloc.h), and the values the daemon asks for.
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MMAP_THRESHOLD = 64 * 1024  # fixed: glibc would raise it after each large free
ARENA_MAX = 2


def tune_allocator() -> dict[str, int]:
    """Keep a long-running daemon's C heap near what it uses; the settings glibc took, by the
    name of the environment variable that would override each (none elsewhere than glibc).

    By default glibc gives each thread that allocates its own heap (up to eight per core) and,
    after a large block is freed, raises the size above which it maps blocks on their own, so a
    poll's large blocks (the driver's result, the compressors' state) end up inside heaps that
    never shrink. Two heaps and a fixed threshold (large blocks go back to the kernel when freed)
    took a daemon holding 1,000 slots from 75 to 69 MiB when it kept 2 MiB bodies; with the body
    kept compressed, 64 KiB instead of glibc's starting 128 KiB took it, 1 s polls on a server
    written to twice a second, from 58.8-59.2 to 58.2 MiB warm and from 59.4-59.9 to 58.7-59.0
    with a full window. The environment's MALLOC_ARENA_MAX or MALLOC_MMAP_THRESHOLD_, when set,
    win. Call it before any thread starts.
    """
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return {}
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    wanted = (
        ("MALLOC_ARENA_MAX", M_ARENA_MAX, ARENA_MAX),
        ("MALLOC_MMAP_THRESHOLD_", M_MMAP_THRESHOLD, MMAP_THRESHOLD),
    )
    return {
        name: value
        for name, option, value in wanted
        if name not in os.environ and mallopt(option, value) == 1
    }
