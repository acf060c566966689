"""Pipes for tests of a writer that must never wait on its reader: a pipe shrunk to one page, so
that it fills in a moment; how much of it is waiting to be read; and a reader started late."""

from __future__ import annotations

import fcntl
import os
import struct
import termios
import threading

F_SETPIPE_SZ = 1031  # Linux's fcntl code, which Python's fcntl module names only on some builds
PAGE = 4096


def one_page_pipe() -> tuple[int, int]:
    """A pipe (read end, write end) that holds one page: it is full after a few lines."""
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, F_SETPIPE_SZ, PAGE)
    return read_end, write_end


def pending(fd: int) -> int:
    """Bytes written into the pipe and not read yet (FIONREAD on its read end)."""
    return int(struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0])


class Drain:
    """Reads `fd` to its end on a thread of its own, from the moment it is made."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._chunks: list[bytes] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while chunk := os.read(self._fd, 65536):
            self._chunks.append(chunk)

    def data(self) -> bytes:
        return b"".join(self._chunks)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
