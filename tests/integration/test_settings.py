"""Settings as an operator meets them: `slotwatch config` shows what will run, or says why not.

Every case that goes through the real command runs as its own subprocess with a clean SLOTWATCH_*
environment. They are started together once per module (a pool of workers) and each parametrised
test reads its own result, so the table stays readable and the file stays fast. Pure parsing is
tested in-process with tables.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from slotwatch_proc import run_cli

from slotwatch.config.settings import (
    REDACTED,
    load_settings,
    secret_values,
)

CANARY = "CANARY-SECRET"
URI_DSN = f"postgresql://mon:{CANARY}@h/db"
KV_DSN = f"host=h port=5432 dbname=db user=mon password={CANARY}"
MiB = 1024**2
GiB = 1024**3
Results = dict[str, subprocess.CompletedProcess[str]]

# docs/contract.md §6, as `slotwatch config` prints it (seconds and bytes).
SPEC_DEFAULTS: dict[str, Any] = {
    "listen": "127.0.0.1:9847",
    "poll_interval": 15.0,
    "probe_interval": 10.0,
    "probe_timeout": 5.0,
    "connect_timeout": 5.0,
    "statement_timeout": 5.0,
    "audit_log": None,
    "log_format": "auto",
    "log_level": "info",
}
SPEC_TARGET_DEFAULTS: dict[str, Any] = {
    "name": "default",
    "admin_dsn": None,
    "slot_pattern": "powersync_selfhost%",
    "liveness_url": "http://127.0.0.1:8080/probes/liveness",
    "probe_name": "powersync",
    "consumer_app": "powersync/%",
    "stall_after": 300.0,
    "inactive_after": 120.0,
    "lag_floor_bytes": 1 * MiB,
    "lag_warn_bytes": 256 * MiB,
    "at_risk_eta": 3600.0,
    "wal_budget_bytes": None,
}

MULTI_TARGET_TOML = """
poll_interval = "30s"
stall_after = "10m"
lag_warn_bytes = "1GiB"
consumer_app = "powersync/1.%"

[[targets]]
name = "prod"
dsn_file = "{dir}/prod-dsn"
admin_dsn_file = "{dir}/prod-admin-dsn"

[[targets]]
name = "staging"
dsn = "host=staging dbname=app user=mon password=CANARY-SECRET"
stall_after = "2m"
lag_floor_bytes = 4096
liveness_url = ""
"""


@dataclass(frozen=True)
class Case:
    """One run of the real command: environment, files written beforehand, arguments."""

    env: Mapping[str, str]
    files: Mapping[str, str | bytes] = field(default_factory=dict)
    args: tuple[str, ...] = ("config",)
    # Bad cases: text the one-line error must contain (the setting it names).
    names: tuple[str, ...] = ()


GOOD: dict[str, Case] = {
    "uri-dsn": Case({"SLOTWATCH_DSN": URI_DSN}),
    "dsn-file": Case({"SLOTWATCH_DSN_FILE": "{dir}/dsn"}, {"dsn": URI_DSN + "\n"}),
    "key-value-dsn": Case({"SLOTWATCH_DSN": KV_DSN}),
    "quoted-key-value-dsn": Case(
        {"SLOTWATCH_DSN": f"host=h dbname=db password='{CANARY} with spaces'"}
    ),
    "admin-dsn": Case({"SLOTWATCH_DSN": URI_DSN, "SLOTWATCH_ADMIN_DSN": KV_DSN}),
    "units": Case(
        {
            "SLOTWATCH_DSN": URI_DSN,
            "SLOTWATCH_POLL_INTERVAL": "15",
            "SLOTWATCH_PROBE_INTERVAL": "30s",
            "SLOTWATCH_STALL_AFTER": "5m",
            "SLOTWATCH_AT_RISK_ETA": "1h",
            "SLOTWATCH_LAG_FLOOR_BYTES": "16MiB",
            "SLOTWATCH_LAG_WARN_BYTES": "4GiB",
            "SLOTWATCH_WAL_BUDGET_BYTES": "1048576",
            "SLOTWATCH_LISTEN": "[::1]:9847",
            "SLOTWATCH_LOG_LEVEL": "DEBUG",
            "SLOTWATCH_LIVENESS_URL": "",
        }
    ),
    # A unit file's `Environment=NAME=` means unset, not "" (a Path("") would be ".").
    "empty-optional-values": Case(
        {"SLOTWATCH_DSN": URI_DSN, "SLOTWATCH_AUDIT_LOG": "", "SLOTWATCH_WAL_BUDGET_BYTES": ""}
    ),
    "multi-target-file": Case(
        {"SLOTWATCH_CONFIG": "{dir}/slotwatch.toml"},
        {
            "slotwatch.toml": MULTI_TARGET_TOML,
            "prod-dsn": URI_DSN,
            "prod-admin-dsn": f"postgresql://admin:{CANARY}@h/db",
        },
    ),
    "env-over-file": Case(
        {
            "SLOTWATCH_POLL_INTERVAL": "1m",
            "SLOTWATCH_STALL_AFTER": "7m",
            "SLOTWATCH_LAG_WARN_BYTES": "2GiB",
        },
        {
            "slotwatch.toml": MULTI_TARGET_TOML,
            "prod-dsn": URI_DSN,
            "prod-admin-dsn": URI_DSN,
        },
        args=("--config", "{dir}/slotwatch.toml", "config"),
    ),
}

BAD: dict[str, Case] = {
    "bad-duration": Case(
        {"SLOTWATCH_DSN": URI_DSN, "SLOTWATCH_POLL_INTERVAL": CANARY},
        names=("SLOTWATCH_POLL_INTERVAL",),
    ),
    "bad-duration-unit": Case(
        {"SLOTWATCH_DSN": URI_DSN, "SLOTWATCH_STALL_AFTER": "5 fortnights"},
        names=("SLOTWATCH_STALL_AFTER",),
    ),
    "zero-interval": Case(
        {"SLOTWATCH_DSN": URI_DSN, "SLOTWATCH_POLL_INTERVAL": "0s"},
        names=("SLOTWATCH_POLL_INTERVAL", "greater than zero"),
    ),
    # Variables are read in any case; the error names one as the operator wrote it.
    "lower-case-variable-named-as-written": Case(
        {"SLOTWATCH_DSN": URI_DSN, "slotwatch_poll_interval": "0s"},
        names=("slotwatch: slotwatch_poll_interval: ", "greater than zero"),
    ),
    "mixed-case-dsn-named-as-written": Case(
        {"Slotwatch_Dsn": "host=h sslmode=bogus"},
        names=("slotwatch: Slotwatch_Dsn: ", "sslmode"),
    ),
    "negative-size": Case(
        {"SLOTWATCH_DSN": URI_DSN, "SLOTWATCH_LAG_WARN_BYTES": "-5MiB"},
        names=("SLOTWATCH_LAG_WARN_BYTES", "negative"),
    ),
    "bad-size": Case(
        {"SLOTWATCH_DSN": URI_DSN, "SLOTWATCH_WAL_BUDGET_BYTES": "lots"},
        names=("SLOTWATCH_WAL_BUDGET_BYTES",),
    ),
    "unknown-variable": Case(
        {"SLOTWATCH_DSN": URI_DSN, "SLOTWATCH_POLL_INTERVL": CANARY},
        names=("SLOTWATCH_POLL_INTERVL", "did you mean SLOTWATCH_POLL_INTERVAL?"),
    ),
    "unknown-variable-far-from-any": Case(
        {"SLOTWATCH_DSN": URI_DSN, "SLOTWATCH_ZZZ": "1"}, names=("SLOTWATCH_ZZZ",)
    ),
    "dsn-and-dsn-file": Case(
        {"SLOTWATCH_DSN": URI_DSN, "SLOTWATCH_DSN_FILE": "{dir}/dsn"},
        {"dsn": URI_DSN},
        names=("SLOTWATCH_DSN", "SLOTWATCH_DSN_FILE"),
    ),
    "admin-dsn-and-file": Case(
        {
            "SLOTWATCH_DSN": URI_DSN,
            "SLOTWATCH_ADMIN_DSN": URI_DSN,
            "SLOTWATCH_ADMIN_DSN_FILE": "{dir}/dsn",
        },
        {"dsn": URI_DSN},
        names=("SLOTWATCH_ADMIN_DSN", "SLOTWATCH_ADMIN_DSN_FILE"),
    ),
    "no-dsn": Case({}, names=("SLOTWATCH_DSN",)),
    "secret-file-missing": Case(
        {"SLOTWATCH_DSN_FILE": "{dir}/no-such-file"}, names=("SLOTWATCH_DSN_FILE",)
    ),
    # chmod 000 does not stop root; a directory and bad bytes stop everyone.
    "secret-file-is-directory": Case(
        {"SLOTWATCH_DSN_FILE": "{dir}"}, names=("SLOTWATCH_DSN_FILE",)
    ),
    "secret-file-not-utf8": Case(
        {"SLOTWATCH_DSN_FILE": "{dir}/dsn"},
        {"dsn": b"\xff\xfe" + URI_DSN.encode()},
        names=("SLOTWATCH_DSN_FILE", "UTF-8"),
    ),
    "secret-file-empty": Case(
        {"SLOTWATCH_DSN_FILE": "{dir}/dsn"}, {"dsn": "\n"}, names=("SLOTWATCH_DSN_FILE",)
    ),
    "invalid-key-value-dsn": Case(
        {"SLOTWATCH_DSN": f"host=h password={CANARY} dbname"}, names=("SLOTWATCH_DSN",)
    ),
    "invalid-uri-dsn": Case(
        {"SLOTWATCH_DSN": f"postgresql://mon:{CANARY}@h/db?nosuchoption=1"},
        names=("SLOTWATCH_DSN",),
    ),
    "invalid-admin-dsn": Case(
        {"SLOTWATCH_DSN": URI_DSN, "SLOTWATCH_ADMIN_DSN": f"password='{CANARY}"},
        names=("SLOTWATCH_ADMIN_DSN",),
    ),
    "bad-listen": Case(
        {"SLOTWATCH_DSN": URI_DSN, "SLOTWATCH_LISTEN": f"{CANARY}:99999"},
        names=("SLOTWATCH_LISTEN",),
    ),
    "bad-listen-v6": Case(
        {"SLOTWATCH_DSN": URI_DSN, "SLOTWATCH_LISTEN": "[not-v6]:9847"},
        names=("SLOTWATCH_LISTEN",),
    ),
    "audit-log-is-a-directory": Case(
        {"SLOTWATCH_DSN": URI_DSN, "SLOTWATCH_AUDIT_LOG": "{dir}"},
        names=("SLOTWATCH_AUDIT_LOG", "directory"),
    ),
    "bad-log-level": Case(
        {"SLOTWATCH_DSN": URI_DSN, "SLOTWATCH_LOG_LEVEL": CANARY}, names=("SLOTWATCH_LOG_LEVEL",)
    ),
    "bad-log-format": Case(
        {"SLOTWATCH_DSN": URI_DSN, "SLOTWATCH_LOG_FORMAT": "xml"},
        names=("SLOTWATCH_LOG_FORMAT",),
    ),
    "bad-liveness-url": Case(
        {"SLOTWATCH_DSN": URI_DSN, "SLOTWATCH_LIVENESS_URL": f"ftp://{CANARY}"},
        names=("SLOTWATCH_LIVENESS_URL",),
    ),
    "wildcard-only-pattern": Case(
        {"SLOTWATCH_DSN": URI_DSN, "SLOTWATCH_SLOT_PATTERN": "%"},
        names=("SLOTWATCH_SLOT_PATTERN",),
    ),
    "config-file-missing": Case(
        {"SLOTWATCH_CONFIG": "{dir}/missing.toml"}, names=("missing.toml",)
    ),
    "malformed-toml": Case(
        {"SLOTWATCH_CONFIG": "{dir}/slotwatch.toml"},
        {"slotwatch.toml": f'[[targets]]\nname = "prod"\ndsn = "{URI_DSN}\n'},
        names=("slotwatch.toml", "not valid TOML"),
    ),
    "toml-not-utf8": Case(
        {"SLOTWATCH_CONFIG": "{dir}/slotwatch.toml"},
        {"slotwatch.toml": b'dsn = "\xff' + CANARY.encode() + b'"\n'},
        names=("slotwatch.toml", "UTF-8"),
    ),
    "unknown-target-field": Case(
        {"SLOTWATCH_CONFIG": "{dir}/slotwatch.toml"},
        {"slotwatch.toml": f'[[targets]]\nname = "prod"\ndns = "{URI_DSN}"\n'},
        names=("targets[0]", "'dns'", "did you mean dsn?"),
    ),
    "unknown-top-level-key": Case(
        {"SLOTWATCH_CONFIG": "{dir}/slotwatch.toml"},
        {"slotwatch.toml": f'pol_interval = "{CANARY}"\ndsn = "{URI_DSN}"\n'},
        names=("'pol_interval'", "did you mean poll_interval?"),
    ),
    "process-wide-key-in-target": Case(
        {"SLOTWATCH_CONFIG": "{dir}/slotwatch.toml"},
        {"slotwatch.toml": f'[[targets]]\ndsn = "{URI_DSN}"\nlisten = "{CANARY}"\n'},
        names=("targets[0]", "'listen' is process-wide", "SLOTWATCH_LISTEN"),
    ),
    "shard-in-target": Case(
        # docs/fleet.md: SLOTWATCH_SHARD is process-wide, never inside a [[targets]] entry.
        {"SLOTWATCH_CONFIG": "{dir}/slotwatch.toml"},
        {"slotwatch.toml": f'[[targets]]\ndsn = "{URI_DSN}"\nshard = "0/2"\n'},
        names=("targets[0]", "'shard' is process-wide", "top level", "SLOTWATCH_SHARD"),
    ),
    "bad-duration-in-file": Case(
        {"SLOTWATCH_CONFIG": "{dir}/slotwatch.toml"},
        {"slotwatch.toml": f'poll_interval = "{CANARY}"\ndsn = "{URI_DSN}"\n'},
        names=("slotwatch.toml", "poll_interval"),
    ),
    "infinite-size-in-file": Case(
        {"SLOTWATCH_CONFIG": "{dir}/slotwatch.toml"},
        {"slotwatch.toml": f'lag_warn_bytes = inf\ndsn = "{URI_DSN}"\n'},
        names=("slotwatch.toml", "lag_warn_bytes"),
    ),
    # Values Python itself cannot take (OverflowError, tomllib's digit limit, a NUL in a path):
    # one line and 78 like every other bad value, not 70 "unexpected error".
    "huge-integer-duration-in-file": Case(
        {"SLOTWATCH_CONFIG": "{dir}/slotwatch.toml"},
        {"slotwatch.toml": f'dsn = "{URI_DSN}"\nstall_after = 1{"0" * 400}\n'},
        names=("slotwatch.toml", "stall_after"),
    ),
    "integer-beyond-the-digit-limit-in-file": Case(
        {"SLOTWATCH_CONFIG": "{dir}/slotwatch.toml"},
        {"slotwatch.toml": f'dsn = "{URI_DSN}"\nlag_warn_bytes = 1{"0" * 5000}\n'},
        names=("slotwatch.toml", "lag_warn_bytes", "line 2"),
    ),
    "nul-in-dsn-file-path": Case(
        {"SLOTWATCH_CONFIG": "{dir}/slotwatch.toml"},
        {"slotwatch.toml": 'dsn_file = "/tmp/a\\u0000b"\n'},
        names=("slotwatch.toml", "dsn_file", "NUL"),
    ),
    "bool-duration-in-target": Case(
        {"SLOTWATCH_CONFIG": "{dir}/slotwatch.toml"},
        {"slotwatch.toml": f'[[targets]]\ndsn = "{URI_DSN}"\nstall_after = true\n'},
        names=("targets[0].stall_after",),
    ),
    "duplicate-target-names": Case(
        {"SLOTWATCH_CONFIG": "{dir}/slotwatch.toml"},
        {
            "slotwatch.toml": (
                f'[[targets]]\nname = "prod"\ndsn = "{URI_DSN}"\n'
                f'[[targets]]\nname = "prod"\ndsn = "{KV_DSN}"\n'
            )
        },
        names=("targets[1].name", "used twice"),
    ),
    "target-without-dsn": Case(
        {"SLOTWATCH_CONFIG": "{dir}/slotwatch.toml"},
        {"slotwatch.toml": '[[targets]]\nname = "prod"\n'},
        names=("targets[0].dsn",),
    ),
    "bad-target-name": Case(
        {"SLOTWATCH_CONFIG": "{dir}/slotwatch.toml"},
        {"slotwatch.toml": f'[[targets]]\nname = "a b"\ndsn = "{URI_DSN}"\n'},
        names=("targets[0].name",),
    ),
    "top-level-dsn-beside-targets": Case(
        {"SLOTWATCH_CONFIG": "{dir}/slotwatch.toml"},
        {"slotwatch.toml": f'dsn = "{URI_DSN}"\n[[targets]]\nname = "a"\ndsn = "{KV_DSN}"\n'},
        names=("slotwatch.toml", "dsn"),
    ),
    # A target's identity cannot come from the environment once the file lists targets.
    **{
        f"env-{var.lower()}-with-targets": Case(
            {"SLOTWATCH_CONFIG": "{dir}/slotwatch.toml", var: value},
            {"slotwatch.toml": f'[[targets]]\nname = "a"\ndsn = "{KV_DSN}"\n', "dsn": URI_DSN},
            names=(var, "[[targets]]"),
        )
        for var, value in (
            ("SLOTWATCH_DSN", URI_DSN),
            ("SLOTWATCH_DSN_FILE", "{dir}/dsn"),
            ("SLOTWATCH_TARGET_NAME", "prod"),
            ("SLOTWATCH_ADMIN_DSN", URI_DSN),
        )
    },
    # ...in whatever case it is written: the variables are read in any case.
    **{
        f"env-{var}-in-any-case-with-targets": Case(
            {"SLOTWATCH_CONFIG": "{dir}/slotwatch.toml", var: value},
            {"slotwatch.toml": f'[[targets]]\nname = "a"\ndsn = "{KV_DSN}"\n', "dsn": URI_DSN},
            names=(var, "[[targets]]"),
        )
        for var, value in (
            ("slotwatch_dsn", URI_DSN),
            ("Slotwatch_Dsn_File", "{dir}/dsn"),
            ("slotwatch_target_name", "prod"),
        )
    },
}


def _run_case(case: Case, where: Path) -> subprocess.CompletedProcess[str]:
    where.mkdir()
    for name, content in case.files.items():
        path = where / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content.format(dir=where))
    env = {k: v.format(dir=where) for k, v in case.env.items()}
    args = tuple(a.format(dir=where) for a in case.args)
    return run_cli(*args, env=env, timeout=30)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Results:
    """Every GOOD and BAD case run once through the real command, several at a time."""
    base = tmp_path_factory.mktemp("settings")
    cases = {**GOOD, **BAD}
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {name: pool.submit(_run_case, case, base / name) for name, case in cases.items()}
        return {name: future.result() for name, future in futures.items()}


def _config(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    document: dict[str, Any] = json.loads(result.stdout)
    return document


@pytest.mark.parametrize("name", sorted({**GOOD, **BAD}))
def test_no_output_ever_carries_the_secret(results: Results, name: str) -> None:
    result = results[name]
    assert CANARY not in result.stdout
    assert CANARY not in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize("name", sorted(GOOD))
def test_config_prints_the_settings_with_secrets_redacted(results: Results, name: str) -> None:
    document = _config(results[name])
    for target in document["targets"]:
        assert f"password={REDACTED}" in target["dsn"]
        assert target["admin_dsn"] is None or f"password={REDACTED}" in target["admin_dsn"]


def test_defaults_are_those_of_the_spec(results: Results) -> None:
    document = _config(results["uri-dsn"])
    assert {k: document[k] for k in SPEC_DEFAULTS} == SPEC_DEFAULTS
    [target] = document["targets"]
    assert {k: target[k] for k in SPEC_TARGET_DEFAULTS} == SPEC_TARGET_DEFAULTS
    assert target["dsn"] == f"user=mon password={REDACTED} dbname=db host=h"


def test_empty_optional_values_mean_unset(results: Results) -> None:
    document = _config(results["empty-optional-values"])
    assert document["audit_log"] is None
    assert document["targets"][0]["wal_budget_bytes"] is None


def test_a_dsn_file_is_read_and_stripped(results: Results) -> None:
    [target] = _config(results["dsn-file"])["targets"]
    assert target["dsn"] == f"user=mon password={REDACTED} dbname=db host=h"


def test_human_units_become_seconds_and_bytes(
    results: Results,
) -> None:
    document = _config(results["units"])
    assert document["poll_interval"] == 15.0
    assert document["probe_interval"] == 30.0
    assert document["listen"] == "[::1]:9847"
    assert document["log_level"] == "debug"
    [target] = document["targets"]
    assert target["stall_after"] == 300.0
    assert target["at_risk_eta"] == 3600.0
    assert target["lag_floor_bytes"] == 16 * MiB
    assert target["lag_warn_bytes"] == 4 * GiB
    assert target["wal_budget_bytes"] == 1048576
    assert target["liveness_url"] is None  # empty disables the probe


def test_several_targets_inherit_the_top_level_and_override_it(
    results: Results,
) -> None:
    document = _config(results["multi-target-file"])
    assert document["poll_interval"] == 30.0
    prod, staging = document["targets"]
    assert prod["name"] == "prod"
    assert prod["dsn"] == f"user=mon password={REDACTED} dbname=db host=h"
    assert prod["admin_dsn"] == f"user=admin password={REDACTED} dbname=db host=h"
    assert prod["stall_after"] == 600.0  # inherited from the top level
    assert prod["lag_warn_bytes"] == 1 * GiB
    assert prod["consumer_app"] == "powersync/1.%"
    assert prod["lag_floor_bytes"] == 1 * MiB  # the contract's default, set nowhere
    assert prod["liveness_url"] == SPEC_TARGET_DEFAULTS["liveness_url"]
    assert staging["name"] == "staging"
    assert staging["stall_after"] == 120.0  # its own value wins over the top level
    assert staging["lag_floor_bytes"] == 4096
    assert staging["lag_warn_bytes"] == 1 * GiB
    assert staging["liveness_url"] is None
    assert staging["admin_dsn"] is None


def test_the_environment_overrides_the_file(
    results: Results,
) -> None:
    document = _config(results["env-over-file"])
    assert document["poll_interval"] == 60.0
    prod, staging = document["targets"]
    # The environment replaces the file's top-level values...
    assert prod["stall_after"] == 420.0
    assert prod["lag_warn_bytes"] == 2 * GiB
    assert staging["lag_warn_bytes"] == 2 * GiB
    # ...while a value written for one target stays the most specific.
    assert staging["stall_after"] == 120.0


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_bad_setting_is_one_line_exit_78_naming_it(results: Results, name: str) -> None:
    result = results[name]
    assert result.returncode == 78, (result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    [line] = lines
    assert line.startswith("slotwatch: ")
    for expected in BAD[name].names:
        assert expected in line
    # The value itself is never echoed (only the setting's name and what is expected of it),
    # wherever the case wrote it: the canary stands in the environment and in the files.
    assert CANARY not in line, line
    for value in BAD[name].env.values():
        if not value.startswith(("{dir}", "postgresql://", "host=")) and len(value) > 3:
            assert value not in line, line


# ---- pure parsing, in-process ----------------------------------------------------------------


def test_in_process_load_gives_the_targets_and_their_secrets(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in [n for n in os.environ if n.upper().startswith("SLOTWATCH_")]:
        monkeypatch.delenv(name)
    (tmp_path / "prod-dsn").write_text(URI_DSN)
    (tmp_path / "prod-admin-dsn").write_text(KV_DSN)
    (tmp_path / "slotwatch.toml").write_text(MULTI_TARGET_TOML.format(dir=tmp_path))
    monkeypatch.setenv("SLOTWATCH_STALL_AFTER", "7m")
    settings, targets = load_settings(tmp_path / "slotwatch.toml")
    assert settings.poll_interval == 30.0
    assert [t.name for t in targets] == ["prod", "staging"]
    prod, staging = targets
    assert prod.dsn.get_secret_value() == URI_DSN
    assert CANARY not in repr(prod) + str(prod.dsn)  # SecretStr hides it from repr and str
    assert prod.thresholds.stall_after == 420.0
    assert staging.thresholds.stall_after == 120.0
    assert staging.liveness_url is None
    # What the log redactor is told to hide: every DSN whole and every password.
    assert CANARY in secret_values(targets)
    assert URI_DSN in secret_values(targets)
