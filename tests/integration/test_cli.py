"""The command line as operators and monitoring systems meet it: exit codes, errors, logs.

Verbs run as the real `slotwatch` command with a clean SLOTWATCH_* environment. The database is a
loopback port nobody listens on, so "unreachable" is real and immediate. The logging pipeline is
driven in-process with real streams (a pipe-like buffer and a pseudo-terminal).
"""

from __future__ import annotations

import io
import json
import logging
import os
import select
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
import structlog
from slotwatch_proc import SLOTWATCH, clean_env, free_port, run_cli, signal_a_worker_thread

from sandbox.fleet import BlackHole
from sandbox.waiting import wait_until
from slotwatch import __version__, cli
from slotwatch.logs import REDACTED, REDACTOR, Redactor, configure, get_logger

CANARY = "CANARY-SECRET"
VERBS = ("run", "status", "check", "drop", "config", "version")


def _one_line(text: str) -> str:
    lines = text.splitlines()
    assert len(lines) == 1, text
    return lines[0]


def _unreachable_env(**extra: str) -> dict[str, str]:
    env = {
        "SLOTWATCH_DSN": f"postgresql://mon:{CANARY}@127.0.0.1:{free_port()}/db",
        "SLOTWATCH_LIVENESS_URL": "",
        "SLOTWATCH_CONNECT_TIMEOUT": "2s",
    }
    env.update(extra)
    return env


def test_version_prints_the_package_version() -> None:
    result = run_cli("version", env={})
    assert result.returncode == 0
    assert result.stdout == f"slotwatch {__version__}\n"
    assert result.stderr == ""


def test_help_lists_every_verb() -> None:
    result = run_cli("--help", env={})
    assert result.returncode == 0
    for verb in VERBS:
        assert verb in result.stdout


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("frobnicate",), "invalid choice: 'frobnicate'"),
        ((), "required: VERB"),
        (("--bogus", "config"), "unrecognized arguments: --bogus (see `slotwatch --help`)"),
        (("config", "--bogus"), "unrecognized arguments: --bogus (see `slotwatch config --help`)"),
        (("status", "--json", "extra"), "arguments: extra (see `slotwatch status --help`)"),
        (("drop", "-x"), "unrecognized arguments: -x (see `slotwatch drop --help`)"),
        (("--config",), "expected one argument"),
    ],
)
def test_a_usage_error_is_one_line_and_exit_64(args: tuple[str, ...], says: str) -> None:
    result = run_cli(*args, env={})
    assert result.returncode == 64, result
    line = _one_line(result.stderr)
    assert line.startswith("slotwatch: ")
    assert says in line
    assert "--help" in line  # says where to look
    assert result.stdout == ""


@pytest.mark.parametrize(
    "args", [("check", "--bogus"), ("--config", "x.toml", "check", "--target")]
)
def test_check_called_wrongly_still_answers_unknown(args: tuple[str, ...]) -> None:
    result = run_cli(*args, env={})
    assert result.returncode == 3
    assert _one_line(result.stdout).startswith("SLOTWATCH UNKNOWN - ")
    assert result.stderr == ""


@pytest.fixture(scope="module")
def unreachable() -> dict[str, subprocess.CompletedProcess[str]]:
    """status, status --json and check against a closed port, with and without debug logging."""
    runs = {
        "status": (("status",), _unreachable_env()),
        "status-json": (("status", "--json"), _unreachable_env()),
        "check": (("check",), _unreachable_env()),
        "check-bad-config": (("check",), _unreachable_env(SLOTWATCH_POLL_INTERVAL=CANARY)),
        "status-debug": (("status",), _unreachable_env(SLOTWATCH_LOG_LEVEL="debug")),
        "check-debug": (("check",), _unreachable_env(SLOTWATCH_LOG_LEVEL="debug")),
    }
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {
            name: pool.submit(run_cli, *args, env=env, timeout=30)
            for name, (args, env) in runs.items()
        }
        return {name: future.result() for name, future in futures.items()}


@pytest.mark.parametrize(
    "name", ["status", "status-json", "check", "check-bad-config", "status-debug", "check-debug"]
)
def test_no_output_carries_the_password(
    unreachable: dict[str, subprocess.CompletedProcess[str]], name: str
) -> None:
    result = unreachable[name]
    assert CANARY not in result.stdout
    assert CANARY not in result.stderr


@pytest.mark.parametrize("name", ["status", "status-json", "check", "check-bad-config"])
def test_no_traceback_without_debug(
    unreachable: dict[str, subprocess.CompletedProcess[str]], name: str
) -> None:
    result = unreachable[name]
    assert "Traceback" not in result.stdout + result.stderr


def test_status_of_an_unreachable_database_is_exit_69_and_one_line(
    unreachable: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    result = unreachable["status"]
    assert result.returncode == 69
    line = _one_line(result.stderr)
    assert line.startswith("slotwatch: default: ")
    assert "refused" in line
    assert "DOWN" in result.stdout  # the table still shows the operator which target


def test_status_json_of_an_unreachable_database_is_a_document_and_exit_69(
    unreachable: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    result = unreachable["status-json"]
    assert result.returncode == 69
    _one_line(result.stderr)
    document = json.loads(result.stdout)
    [target] = document["targets"]
    assert target["up"] is False


def test_check_of_an_unreachable_database_is_unknown(
    unreachable: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    result = unreachable["check"]
    assert result.returncode == 3
    assert _one_line(result.stdout).startswith("SLOTWATCH UNKNOWN - default: ")
    assert result.stderr == ""


def test_check_with_a_bad_setting_is_unknown_naming_it(
    unreachable: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    result = unreachable["check-bad-config"]
    assert result.returncode == 3
    line = _one_line(result.stdout)
    assert line.startswith("SLOTWATCH UNKNOWN - SLOTWATCH_POLL_INTERVAL: ")


def test_debug_shows_the_traceback_as_json_log_lines(
    unreachable: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    result = unreachable["status-debug"]
    assert result.returncode == 69
    *log_lines, last = result.stderr.splitlines()
    assert last.startswith("slotwatch: default: ")
    # stderr is a pipe, not a terminal: every log line is one JSON object.
    records = [json.loads(line) for line in log_lines]
    assert records
    for record in records:
        assert {"event", "level", "timestamp", "logger"} <= set(record)
    assert any("Traceback" in record.get("exception", "") for record in records)


# ---- in-process: the last net, and the logging pipeline ---------------------------------------


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("debug", [False, True])
def test_an_unexpected_error_is_exit_70_one_scrubbed_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], debug: bool
) -> None:
    def broken(_: object) -> int:
        raise RuntimeError(f"boom at postgresql://mon:{CANARY}@h/db\nsecond line")

    monkeypatch.setitem(cli.VERBS, "version", broken)
    monkeypatch.delenv("SLOTWATCH_LOG_LEVEL", raising=False)
    if debug:
        monkeypatch.setenv("SLOTWATCH_LOG_LEVEL", "debug")
    assert cli.main(["version"]) == 70
    captured = capsys.readouterr()
    assert CANARY not in captured.out + captured.err
    message = [line for line in captured.err.splitlines() if line.startswith("slotwatch: ")]
    assert message == [
        "slotwatch: unexpected error: RuntimeError: boom at postgresql://mon:"
        f"{REDACTED}@h/db" + ("" if debug else " (set SLOTWATCH_LOG_LEVEL=debug for the traceback)")
    ]
    assert ("Traceback" in captured.err) is debug


@pytest.mark.parametrize(
    ("text", "scrubbed"),
    [
        (
            f'connection to "postgresql://mon:{CANARY}@db.example:5432/app" failed',
            f'connection to "postgresql://mon:{REDACTED}@db.example:5432/app" failed',
        ),
        (
            f"invalid dsn: host=h password={CANARY} dbname=app",
            f"invalid dsn: host=h password={REDACTED} dbname=app",
        ),
        (f"password = '{CANARY} with space' host=h", f"password = {REDACTED} host=h"),
        (f"PASSWORD={CANARY}", f"PASSWORD={REDACTED}"),
        (f"host=h sslpassword={CANARY} sslkey=k", f"host=h sslpassword={REDACTED} sslkey=k"),
        (
            f"postgresql://mon@h/db?sslpassword={CANARY}",
            f"postgresql://mon@h/db?sslpassword={REDACTED}",
        ),
        (f"postgres://mon:{CANARY}@with-at@h/db", f"postgres://mon:{REDACTED}@h/db"),
        (f"postgresql://:{CANARY}@h", f"postgresql://:{REDACTED}@h"),
        ("postgresql://mon@h/db?sslmode=require", "postgresql://mon@h/db?sslmode=require"),
        ("http://127.0.0.1:8080/probes/liveness", "http://127.0.0.1:8080/probes/liveness"),
    ],
)
def test_redactor_scrubs_passwords_by_shape(text: str, scrubbed: str) -> None:
    assert Redactor().scrub(text) == scrubbed


def test_redactor_scrubs_registered_secrets_anywhere() -> None:
    redactor = Redactor()
    redactor.register([f"host=h user=mon password={CANARY}", CANARY, "", "abc"])
    assert redactor.scrub(f"the dsn host=h user=mon password={CANARY}!") == f"the dsn {REDACTED}!"
    assert redactor.scrub(f"token {CANARY}-x") == f"token {REDACTED}-x"
    assert redactor.scrub("abc") == "abc"  # too short to be worth hiding everywhere


def _psycopg_style_error() -> psycopg.OperationalError:
    return psycopg.OperationalError(
        f'connection to server failed: "postgresql://mon:{CANARY}-URI@h/db";'
        f" retrying with host=h user=admin password={CANARY}-KV"
    )


@pytest.mark.usefixtures("restore_logging")
def test_log_lines_are_json_and_scrubbed_when_not_a_terminal() -> None:
    stream = io.StringIO()
    configure("info", "auto", stream=stream)
    log = get_logger("slotwatch.test")
    log.warning("poll failed", target="prod", error=_psycopg_style_error())
    log.info("retry", dsn=f"postgresql://mon:{CANARY}@h/db", tried=[f"password={CANARY}"])
    try:
        raise _psycopg_style_error()
    except psycopg.OperationalError:
        log.exception("poll crashed")
    # psycopg's own stdlib logger goes through the same pipeline, %-args included.
    logging.getLogger("psycopg").warning("connection failed: %s", _psycopg_style_error())
    log.debug("below the level")

    text = stream.getvalue()
    assert CANARY not in text
    records = [json.loads(line) for line in text.splitlines()]
    assert [r["event"] for r in records] == [
        "poll failed",
        "retry",
        "poll crashed",
        f'connection failed: connection to server failed: "postgresql://mon:{REDACTED}@h/db";'
        f" retrying with host=h user=admin password={REDACTED}",
    ]
    assert records[0]["level"] == "warning"
    assert records[0]["target"] == "prod"
    assert records[0]["error"].startswith("OperationalError: ")
    assert records[1]["dsn"] == f"postgresql://mon:{REDACTED}@h/db"
    assert records[1]["tried"] == [f"password={REDACTED}"]
    assert "Traceback" in records[2]["exception"]
    assert records[3]["logger"] == "psycopg"


@pytest.mark.usefixtures("restore_logging")
def test_registered_secrets_are_scrubbed_from_log_lines() -> None:
    # A password with no telltale shape (e.g. a bare PGPASSWORD-like value).
    REDACTOR.register(["Zq8-unshaped-CANARY-value"])
    stream = io.StringIO()
    configure("info", "json", stream=stream)
    get_logger("slotwatch.test").error("auth", detail="server said Zq8-unshaped-CANARY-value")
    assert json.loads(stream.getvalue())["detail"] == f"server said {REDACTED}"


@pytest.mark.usefixtures("restore_logging")
def test_log_lines_are_readable_text_on_a_terminal() -> None:
    master, slave = os.openpty()
    with os.fdopen(slave, "w") as terminal:
        configure("info", "auto", stream=terminal)
        get_logger("slotwatch.test").warning("poll failed", dsn=f"host=h password={CANARY}")
        terminal.flush()
        ready, _, _ = select.select([master], [], [], 5)
        assert ready, "nothing written to the terminal"
        text = os.read(master, 65536).decode()
    os.close(master)
    assert "poll failed" in text
    assert f"password={REDACTED}" in text
    assert CANARY not in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text.splitlines()[0])


@pytest.mark.parametrize(
    ("verb", "code", "stream"), [("config", 78, "stderr"), ("check", 3, "stdout")]
)
def test_an_escape_sequence_in_a_config_key_reaches_no_terminal(
    tmp_path: Path, verb: str, code: int, stream: str
) -> None:
    # The key is echoed in the error: raw, its newline split `check`'s one line in two and its
    # escape sequence reached the operator's terminal.
    config = tmp_path / "odd.toml"
    config.write_text('"a\\nb\\u001b[31mRED" = 1\n')
    result = run_cli("--config", str(config), verb, env={})
    assert result.returncode == code, result
    line = _one_line(getattr(result, stream))
    assert "\x1b" not in line
    assert "unknown setting 'a\\x0ab\\x1b[31mRED'" in line


def test_debug_in_any_case_shows_the_traceback() -> None:
    # The settings read SLOTWATCH_LOG_LEVEL in any case; so does the choice to show a traceback.
    env = _unreachable_env(slotwatch_log_level="debug")
    result = run_cli("status", env=env, timeout=30)
    assert result.returncode == 69
    *log_lines, last = result.stderr.splitlines()
    assert last.startswith("slotwatch: default: ")
    records = [json.loads(line) for line in log_lines]
    assert any("Traceback" in record.get("exception", "") for record in records)


CTRL_C_CONNECT_TIMEOUT = 30.0


@pytest.mark.parametrize("to", ["process", "worker thread"])
def test_ctrl_c_in_a_one_shot_verb_is_exit_130_and_one_line(to: str) -> None:
    # README and docs/contract.md §5: 130, interrupted before a one-shot verb finished. The
    # verb waits on a listener that never answers and is interrupted there: it ends at once, not
    # when the connect attempt times out (its polls' threads were waited for at exit). The
    # kernel may hand the signal to the poll's thread rather than the main one: the same then.
    with BlackHole() as hole:
        env = clean_env(
            {
                "SLOTWATCH_DSN": hole.dsn(),
                "SLOTWATCH_LIVENESS_URL": "",
                "SLOTWATCH_CONNECT_TIMEOUT": f"{CTRL_C_CONNECT_TIMEOUT:g}s",
            }
        )
        proc = subprocess.Popen(
            [SLOTWATCH, "status"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            # Past start-up, into the connect: the poll's thread holds a connection to the hole.
            wait_until(
                lambda: proc.poll() is not None or hole.connected_from(proc.pid),
                20,
                interval=0.02,
                message="a connect in flight",
            )
            assert proc.poll() is None, proc.communicate()
            began = time.monotonic()
            if to == "process":
                proc.send_signal(signal.SIGINT)
            else:
                signal_a_worker_thread(proc.pid, signal.SIGINT)
            stdout, stderr = proc.communicate(timeout=2 * CTRL_C_CONNECT_TIMEOUT)
            elapsed = time.monotonic() - began
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()  # reaps it and closes its pipes, whatever failed above
    print(f"Ctrl-C to the {to} while connecting: exit {proc.returncode} {elapsed:.2f}s after it")
    assert proc.returncode == 130, stdout + stderr
    assert elapsed < CTRL_C_CONNECT_TIMEOUT / 3, "it waited for the connect attempt to end"
    assert stderr == "slotwatch: interrupted\n"
    assert "Traceback" not in stdout
