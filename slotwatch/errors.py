"""The exception tree of slotwatch, and the exit code each one means.

    SlotwatchError            70  anything unexpected that we still caught
    ├── UsageError            64  bad command-line arguments
    ├── ConfigError           78  bad settings, config file, secret file
    ├── DatabaseUnreachable   69  could not connect, or the server went away
    ├── PermissionDenied      77  the role lacks a privilege (message says which GRANT)
    ├── UnsupportedServer     69  a standby, or a PostgreSQL older than 13
    └── Refused                3  the drop guard said no

Messages are one line, say what went wrong and what to do, and never carry a secret:
they are printed as they are by the CLI. Ctrl-C is a KeyboardInterrupt (exit 130); one
raised as InterruptedUnknown says what the interrupt left unknown.
"""

from __future__ import annotations


class SlotwatchError(Exception):
    """Base class; carries the process exit code the CLI uses for it."""

    exit_code = 70


class UsageError(SlotwatchError):
    exit_code = 64


class ConfigError(SlotwatchError):
    exit_code = 78


class DatabaseUnreachable(SlotwatchError):
    exit_code = 69


class UnsupportedServer(SlotwatchError):
    exit_code = 69


class PermissionDenied(SlotwatchError):
    exit_code = 77


class Refused(SlotwatchError):
    exit_code = 3


class InterruptedUnknown(KeyboardInterrupt):
    """Ctrl-C while a statement that changes the server waited for its answer: the message
    says what may or may not have happened."""


def escaped(text: str) -> str:
    """`text` with every character that is not printable (a newline, an escape sequence from a
    config key or a server's message) written as `\\xNN`: it cannot break a line or a terminal."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def printable_line(text: str) -> str:
    """An error as the CLI prints it: the first line that says something, escaped."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return escaped(lines[0]) if lines else ""
