"""Start-up: a verb loads only what it needs, so `--help`, `version` and `config` stay light.

Each case runs the CLI in a fresh interpreter and reads `sys.modules` after it returns: what was
imported, not how long it took (timings live in bench/).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import psycopg.conninfo
import pytest

from slotwatch.config.conninfo import ConninfoError, parse_conninfo

HEAVY = ("psycopg", "httpx", "apscheduler", "prometheus_client")

_PROBE = """
import json, sys
from slotwatch.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}), file=sys.stderr)
"""


def _loaded(
    *argv: str, liveness: str = "http://127.0.0.1:1/probes/liveness"
) -> tuple[int, set[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLOTWATCH_")}
    env["SLOTWATCH_DSN"] = "postgresql://watcher:s3cret@127.0.0.1:1/app?sslmode=disable"
    env["SLOTWATCH_LIVENESS_URL"] = liveness
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    report = json.loads(done.stderr.strip().splitlines()[-1])
    return report["code"], {name.split(".")[0] for name in report["modules"]}


@pytest.mark.parametrize("argv", [("--help",), ("version",), ("config",), ("drop", "--help")])
def test_light_verbs_load_no_driver_client_scheduler_or_metrics(argv: tuple[str, ...]) -> None:
    code, modules = _loaded(*argv)
    assert code == 0
    assert sorted(modules & set(HEAVY)) == []


def test_help_and_version_load_no_third_party_library_at_all() -> None:
    for argv in (("--help",), ("version",)):
        _, modules = _loaded(*argv)
        assert sorted(modules & {"pydantic", "pydantic_settings", "structlog"}) == []


def test_the_probe_sees_the_driver_when_a_verb_needs_it() -> None:
    # `check` polls (port 1 refuses at once): were the probe blind, the tests above would pass
    # for nothing.
    code, modules = _loaded("check")
    assert code == 3
    assert "psycopg" in modules
    assert "httpcore" in modules  # it probed the liveness URL (port 1 refuses too)


def test_the_daemon_loads_the_http_client_only_to_fetch() -> None:
    """Without a liveness or consumer metrics URL nothing is fetched: the HTTP client (about
    1 MiB of a daemon's memory) is never loaded."""
    code, modules = _loaded("check", liveness="")
    assert code == 3
    assert "psycopg" in modules
    assert "httpcore" not in modules


DSNS = [
    "postgresql://watcher:p%40ss@[::1]:5432/app?sslmode=verify-full&application_name=x",
    "host=db.example.com port=5432 dbname=app user=watcher password='a b\\'c'",
    "postgres://h1,h2:5433/app",
    "host=/run/postgresql dbname=app",
    "",
]


@pytest.mark.parametrize("dsn", DSNS)
def test_conninfo_is_read_as_the_driver_reads_it(dsn: str) -> None:
    assert parse_conninfo(dsn) == psycopg.conninfo.conninfo_to_dict(dsn)


def test_conninfo_that_is_not_utf8_is_refused() -> None:
    # os.environ hands undecodable bytes over as surrogates.
    with pytest.raises(ConninfoError):
        parse_conninfo("host=db password=\udcff")


@pytest.mark.parametrize("dsn", ["postgresql://u@[::1:5432/db", "host='unterminated", "nokey"])
def test_conninfo_the_driver_refuses_is_refused_without_repeating_it(dsn: str) -> None:
    with pytest.raises(psycopg.ProgrammingError):
        psycopg.conninfo.conninfo_to_dict(dsn)
    with pytest.raises(ConninfoError) as caught:
        parse_conninfo(dsn)
    assert dsn not in str(caught.value)


def test_without_a_loadable_libpq_the_driver_parses(monkeypatch: pytest.MonkeyPatch) -> None:
    from slotwatch.config import conninfo  # noqa: PLC0415 - the module whose loader is replaced

    monkeypatch.setattr(conninfo, "_libpq", lambda: None)
    assert parse_conninfo(DSNS[0]) == psycopg.conninfo.conninfo_to_dict(DSNS[0])
    with pytest.raises(ConninfoError):
        parse_conninfo("nokey")
