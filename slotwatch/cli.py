"""The command line (docs/contract.md §5): parse, dispatch a verb, turn errors into exit codes.

This is the only module that exits. Every error is one line on stderr; a traceback is shown
only when the log level is debug.

Each verb imports what it needs when it runs: `--help` and `version` load no library beyond the
standard one, and `config` loads the settings model but no driver, HTTP client, scheduler or
metrics library (tests/integration/test_startup.py holds this).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, NoReturn

from slotwatch import __version__
from slotwatch.errors import (
    DatabaseUnreachable,
    InterruptedUnknown,
    SlotwatchError,
    UsageError,
    printable_line,
)

if TYPE_CHECKING:
    from slotwatch.config.settings import Settings, Target


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `slotwatch {self._verb()}--help`)")

    def _verb(self) -> str:
        parts = self.prog.split(maxsplit=1)
        return f"{parts[1]} " if len(parts) > 1 else ""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="slotwatch",
        description="Watch PostgreSQL logical replication slots consumed by PowerSync.",
    )
    parser.add_argument(
        "--config", metavar="FILE", help="TOML settings file (default: $SLOTWATCH_CONFIG)"
    )
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    verbs.required = True
    verbs.add_parser("run", help="run the daemon: poll, probe, serve /metrics /healthz /status")
    status = verbs.add_parser("status", help="poll once and print one line per slot")
    status.add_argument("--json", action="store_true", help="print the /status document")
    status.add_argument("--target", metavar="NAME", help="only this target")
    check = verbs.add_parser("check", help="poll once, Nagios-style: exit 0/1/2/3")
    check.add_argument("--target", metavar="NAME", help="only this target")
    drop = verbs.add_parser("drop", help="drop a wedged slot, behind a guard (dry run by default)")
    drop.add_argument("slot", nargs="?", metavar="SLOT", help="the slot to drop")
    drop.add_argument(
        "--confirm",
        nargs="?",
        const="",
        default=None,
        metavar="SLOT",
        help="really drop: type the name at the prompt, or give it here without a terminal",
    )
    drop.add_argument(
        "--terminate", action="store_true", help="terminate the walsender holding the slot"
    )
    drop.add_argument(
        "--force",
        action="store_true",
        help="allow a healthy, lagging or snapshotting slot (needs --reason)",
    )
    drop.add_argument("--reason", metavar="TEXT", help="why, for the audit record")
    drop.add_argument("--target", metavar="NAME", help="the target (when several are configured)")
    drop.add_argument(
        "--observe",
        metavar="DURATION",
        default="30s",
        help="how long to watch an active slot when no daemon is reachable (default 30s)",
    )
    drop.add_argument(
        "--deadline",
        metavar="DURATION",
        default="30s",
        help="with --terminate: how long to keep terminating and retrying while the consumer "
        "reattaches (default 30s)",
    )
    drop.add_argument(
        "--daemon-url",
        metavar="URL",
        help="the running daemon's base URL for /status (default: from SLOTWATCH_LISTEN)",
    )
    verbs.add_parser("config", help="validate the settings and print them, secrets redacted")
    verbs.add_parser("version", help="print the version")
    return parser


def _load(args: argparse.Namespace) -> tuple[Settings, tuple[Target, ...]]:
    from slotwatch.config.settings import load_settings, secret_values
    from slotwatch.logs import REDACTOR, configure

    settings, targets = load_settings(args.config)
    REDACTOR.register(secret_values(targets))
    configure(settings.log_level, settings.log_format)
    return settings, targets


def _select(targets: tuple[Target, ...], name: str | None) -> tuple[Target, ...]:
    if name is None:
        return targets
    chosen = tuple(t for t in targets if t.name == name)
    if not chosen:
        known = ", ".join(t.name for t in targets)
        from slotwatch.drop.text import shown

        raise UsageError(f"--target {shown(name)}: no such target (configured: {known})")
    return chosen


def _run(args: argparse.Namespace) -> int:
    from slotwatch.allocator import tune_allocator
    from slotwatch.config.shard import share
    from slotwatch.service import Service

    settings, targets = _load(args)
    tune_allocator()
    # Only the daemon is sharded: a one-shot verb answers for whichever target it is asked about.
    Service(settings, share(targets, settings.shard_of_targets())).run()
    return 0


def _status(args: argparse.Namespace) -> int:
    from slotwatch.poll.failures import error_exception
    from slotwatch.report import status_document, status_table
    from slotwatch.wiring import poll_once

    settings, targets = _load(args)
    snapshot = poll_once(settings, _select(targets, args.target))
    if args.json:
        print(json.dumps(status_document(snapshot), indent=2, allow_nan=False))
    else:
        print(status_table(snapshot))
    down = [view for view in snapshot.targets if not view.up]
    if down:
        error = down[0].last_poll.error if down[0].last_poll else None
        if error is None:
            raise DatabaseUnreachable(f"{down[0].name}: not polled")
        message = f"{down[0].name}: {error.message}"
        if error.reason == "tls":
            message += " (check sslmode, sslrootcert and that the DSN's host is in the certificate)"
        raise error_exception(replace(error, message=message))
    return 0


def _check(args: argparse.Namespace) -> int:
    from slotwatch.logs import REDACTOR, get_logger
    from slotwatch.report import check_result, plugin_text

    try:
        from slotwatch.wiring import poll_once

        settings, targets = _load(args)
        snapshot = poll_once(settings, _select(targets, args.target))
        code, line = check_result(snapshot)
    except SlotwatchError as exc:
        # A monitoring plugin must always answer in its own codes: anything broken is UNKNOWN.
        print(f"SLOTWATCH UNKNOWN - {plugin_text(printable_line(REDACTOR.scrub(str(exc))))}")
        return 3
    except Exception as exc:
        # Even a bug answers UNKNOWN (3), never 70: the monitoring system must see it as unknown.
        log = get_logger("slotwatch")
        log.debug("traceback", exc_info=exc)
        first = plugin_text(printable_line(REDACTOR.scrub(str(exc))))
        print(f"SLOTWATCH UNKNOWN - unexpected error: {type(exc).__name__}: {first}")
        return 3
    print(line)
    return code


def _drop(args: argparse.Namespace) -> int:
    from slotwatch.drop.verb import run_drop

    settings, targets = _load(args)
    return run_drop(args, settings, _select_one(targets, args.target))


def _select_one(targets: tuple[Target, ...], name: str | None) -> Target:
    chosen = _select(targets, name)
    if len(chosen) > 1:
        names = ", ".join(t.name for t in chosen)
        raise UsageError(f"several targets are configured ({names}): name one with --target")
    return chosen[0]


def _config(args: argparse.Namespace) -> int:
    from slotwatch.config.settings import redacted_view

    settings, targets = _load(args)
    print(json.dumps(redacted_view(settings, targets), indent=2))
    return 0


def _version(args: argparse.Namespace) -> int:
    print(f"slotwatch {__version__}")
    return 0


VERBS = {
    "run": _run,
    "status": _status,
    "check": _check,
    "drop": _drop,
    "config": _config,
    "version": _version,
}


def _parse_all(given: list[str]) -> argparse.Namespace:
    args, extra = build_parser().parse_known_args(given)
    if extra:
        # argparse leaves them to the top parser, whose hint is `slotwatch --help` even for an
        # argument given after the verb, which that verb's --help explains.
        verb = getattr(args, "verb", None)
        after = verb in given and extra[0] in given[given.index(verb) + 1 :]
        where = f"{verb} " if after else ""
        shown = " ".join(extra)
        raise UsageError(f"unrecognized arguments: {shown} (see `slotwatch {where}--help`)")
    return args


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    try:
        return _parse_all(list(sys.argv[1:] if argv is None else argv))
    except UsageError as exc:
        # A monitoring plugin answers in its own codes even when it was called wrongly.
        if _verb_of(sys.argv[1:] if argv is None else argv) == "check":
            raise _CheckUnknown(str(exc)) from None
        raise


def _verb_of(argv: Sequence[str]) -> str | None:
    """The verb the command line names, found without argparse (which just refused it)."""
    words = iter(argv)
    for word in words:
        if word == "--config":
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


class _CheckUnknown(SlotwatchError):
    exit_code = 3


def _debug_requested() -> bool:
    # In any case, as the settings read it (`slotwatch_log_level=debug` sets debug there too).
    level = (v for k, v in os.environ.items() if k.upper() == "SLOTWATCH_LOG_LEVEL")
    return next(level, "").lower() == "debug"


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parse(argv)
        # `version` needs no logging, unless asked for at debug (its traceback, if it breaks).
        if args.verb != "version" or _debug_requested():
            from slotwatch.logs import configure

            configure("debug" if _debug_requested() else "info", "auto")
        return VERBS[args.verb](args)
    except _CheckUnknown as exc:
        print(f"SLOTWATCH UNKNOWN - {_scrub(str(exc))}")
        return exc.exit_code
    except SlotwatchError as exc:
        _fail(exc, exc.exit_code)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        left = f": {printable_line(str(exc))}" if isinstance(exc, InterruptedUnknown) else ""
        print(f"slotwatch: interrupted{left}", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the last net: one line, exit 70, never a traceback
        _fail(exc, 70, unexpected=True)
        return 70


def _scrub(text: str) -> str:
    from slotwatch.logs import REDACTOR

    return REDACTOR.scrub(text)


def _fail(exc: BaseException, code: int, *, unexpected: bool = False) -> None:
    # Secrets out first: escaped, a secret holding a control character would no longer match.
    message = printable_line(_scrub(str(exc))) or type(exc).__name__
    if unexpected:
        message = f"unexpected error: {type(exc).__name__}: {message}"
        if not _debug_requested():
            message += " (set SLOTWATCH_LOG_LEVEL=debug for the traceback)"
    if _debug_requested() and logging.getLogger().isEnabledFor(logging.DEBUG):
        from slotwatch.logs import get_logger

        get_logger("slotwatch").debug("traceback", exc_info=exc)
    print(f"slotwatch: {message}", file=sys.stderr)
