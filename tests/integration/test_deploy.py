"""Deployment files: the NixOS module, the systemd unit, the quadlet, and the roles in roles.sql.

The NixOS module is evaluated offline through tests/nix/eval-module.nix (a stub `lib`, no nixpkgs),
so what is checked is the unit the module generates. The roles are checked against real
PostgreSQL servers: the monitoring role runs slotwatch's own poll and sees everything it needs,
yet cannot drop a slot or end a backend; the drop role can do both.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
import tomli_w
from psycopg import errors
from pydantic import SecretStr

from sandbox.cluster import Cluster
from sandbox.consumer import Consumer, create_slot
from sandbox.waiting import wait_until
from slotwatch.model import PollResult, SlotRow
from slotwatch.poll.db import TargetConnection

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "systemd" / "slotwatch.service"
QUADLET = DEPLOY / "podman" / "slotwatch.container"
EVALUATOR = ROOT / "tests" / "nix" / "eval-module.nix"
ROLES_SQL = DEPLOY / "sql" / "roles.sql"

# The sandbox every way of running slotwatch must keep (value as the NixOS module writes it).
HARDENING: dict[str, Any] = {
    "DynamicUser": True,
    "ProtectSystem": "strict",
    "ProtectHome": True,
    "PrivateTmp": True,
    "NoNewPrivileges": True,
    "CapabilityBoundingSet": "",
    "AmbientCapabilities": "",
    "RestrictAddressFamilies": ["AF_INET", "AF_INET6", "AF_UNIX"],
    "MemoryDenyWriteExecute": True,
    "Restart": "on-failure",
    # A configuration error (78) is not retried: a restart loop cannot fix it.
    "RestartPreventExitStatus": 78,
}

# Resource bounds (issue 12). The HTTP server keeps at most a worker pool plus ~1,100 idle
# connections, one fd each; the daemon's RSS is ~60 MB in a soak; threads are a few per target.
IDLE_CONNECTIONS = 1100
MIN_FDS = IDLE_CONNECTIONS + 100
MEMORY_MAX_BYTES = 256 * 1024 * 1024
MIN_TASKS = 64


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed; CI needs it (see the deploy tests' docstring)")
    return path


# -- NixOS module ---------------------------------------------------------------------------


def _nix_files() -> list[Path]:
    return sorted([*DEPLOY.rglob("*.nix"), *(ROOT / "tests" / "nix").glob("*.nix")])


def test_there_are_nix_files_to_check() -> None:
    names = {path.name for path in _nix_files()}
    assert {"module.nix", "example.nix", "eval-module.nix"} <= names


@pytest.mark.parametrize("path", _nix_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_nix_file_parses(path: Path) -> None:
    result = subprocess.run(
        [_tool("nix-instantiate"), "--parse", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_example_wires_sops_secrets_powersync_and_the_scrape_job() -> None:
    # The example needs nixpkgs and sops-nix to evaluate; offline, its wiring is read as text.
    text = (DEPLOY / "nixos" / "example.nix").read_text()
    assert "./module.nix" in text
    assert "../victoriametrics/nixos.nix" in text
    assert 'dsnFile = config.sops.secrets."slotwatch/dsn".path;' in text
    assert "virtualisation.oci-containers.containers.powersync" in text
    assert "dsn = " not in text


def test_example_package_has_every_runtime_dependency_of_pyproject() -> None:
    text = (DEPLOY / "nixos" / "example.nix").read_text()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    block = text.split("dependencies = with python3Packages; [", 1)[1].split("]", 1)[0]
    listed = set(block.split())
    for requirement in project["dependencies"]:
        name = re.split(r"[\[<>=!~ ]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        assert name in listed, f"{requirement} is missing from example.nix"
    # psycopg[binary] has no nixpkgs package: the example builds psycopg's C implementation
    # instead and says so to the runtime-dependency check.
    assert any(r.startswith("psycopg[binary]") for r in project["dependencies"])
    assert "psycopg.optional-dependencies.c" in text
    assert "--replace-fail '\"psycopg[binary]' '\"psycopg'" in text
    # The version is read from the package, not repeated.
    assert '"0.1.0"' not in text
    assert "slotwatch/__init__.py" in text


def _evaluate_module(settings: str) -> dict[str, Any]:
    result = subprocess.run(
        [
            _tool("nix-instantiate"),
            "--eval",
            "--strict",
            "--json",
            str(EVALUATOR),
            "--arg",
            "settings",
            settings,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    evaluated: dict[str, Any] = json.loads(result.stdout)
    return evaluated


BASE_SETTINGS = (
    'enable = true; package = "/nix/store/00000000000000000000000000000000-slotwatch-0.1.0";'
    ' dsnFile = "/run/secrets/slotwatch/dsn";'
)


def test_module_generates_a_hardened_service_reading_its_dsn_as_a_credential() -> None:
    evaluated = _evaluate_module("{ " + BASE_SETTINGS + " }")
    service = evaluated["service"]
    unit = service["serviceConfig"]

    for key, value in HARDENING.items():
        assert unit.get(key) == value, key
    assert "@system-service" in unit["SystemCallFilter"]
    assert unit["TimeoutStopSec"]
    assert unit["ExecStart"].endswith("/bin/slotwatch run")
    assert unit["LoadCredential"] == ["dsn:/run/secrets/slotwatch/dsn"]
    assert service["environment"]["SLOTWATCH_DSN_FILE"] == "%d/dsn"
    assert "SLOTWATCH_ADMIN_DSN_FILE" not in service["environment"]
    assert service["environment"]["SLOTWATCH_LISTEN"] == "127.0.0.1:9847"
    # No secret and no unset threshold leaks into the environment.
    assert "SLOTWATCH_DSN" not in service["environment"]
    assert "SLOTWATCH_STALL_AFTER" not in service["environment"]
    assert evaluated["failedAssertions"] == []
    assert evaluated["warnings"] == []
    assert evaluated["firewallPorts"] == {}


def test_module_passes_thresholds_admin_dsn_and_extra_environment_through() -> None:
    evaluated = _evaluate_module(
        "{ "
        + BASE_SETTINGS
        + ' adminDsnFile = "/run/secrets/slotwatch/admin-dsn"; stallAfter = "10m";'
        + ' inactiveAfter = 90; slotPattern = "powersync_prod%"; port = 9900;'
        + ' listenAddress = "[::1]"; livenessUrl = "";'
        + ' extraEnvironment = { SLOTWATCH_LOG_LEVEL = "debug"; }; openFirewall = true; }'
    )
    environment = evaluated["service"]["environment"]
    assert evaluated["service"]["serviceConfig"]["LoadCredential"] == [
        "dsn:/run/secrets/slotwatch/dsn",
        "admin-dsn:/run/secrets/slotwatch/admin-dsn",
    ]
    assert environment["SLOTWATCH_ADMIN_DSN_FILE"] == "%d/admin-dsn"
    assert environment["SLOTWATCH_STALL_AFTER"] == "10m"
    assert environment["SLOTWATCH_INACTIVE_AFTER"] == "90"
    assert environment["SLOTWATCH_SLOT_PATTERN"] == "powersync_prod%"
    assert environment["SLOTWATCH_LISTEN"] == "[::1]:9900"
    assert environment["SLOTWATCH_LIVENESS_URL"] == ""
    assert environment["SLOTWATCH_LOG_LEVEL"] == "debug"
    assert evaluated["firewallPorts"] == [9900]


def test_module_rejects_an_inline_dsn() -> None:
    evaluated = _evaluate_module(
        "{ " + BASE_SETTINGS + ' dsn = "postgresql://slotwatch:hunter2@db/postgres"; }'
    )
    assert len(evaluated["failedAssertions"]) == 1
    assert "dsnFile" in evaluated["failedAssertions"][0]


def test_module_warns_when_the_dsn_file_is_in_the_nix_store() -> None:
    evaluated = _evaluate_module(
        '{ enable = true; package = "/nix/store/x-slotwatch";'
        ' dsnFile = "/nix/store/00000000000000000000000000000000-dsn"; }'
    )
    assert len(evaluated["warnings"]) == 1
    assert "world-readable" in evaluated["warnings"][0]


@pytest.mark.parametrize("wildcard", ["0.0.0.0", "::", "[::]"])  # noqa: S104 - what is refused
def test_module_refuses_a_public_listen_address_without_open_firewall(wildcard: str) -> None:
    evaluated = _evaluate_module("{ " + BASE_SETTINGS + f' listenAddress = "{wildcard}"; }}')
    assert len(evaluated["failedAssertions"]) == 1, evaluated["failedAssertions"]
    assert "every interface" in evaluated["failedAssertions"][0]


def test_open_firewall_is_scoped_by_firewall_filter_and_warns_without_one() -> None:
    unscoped = _evaluate_module("{ " + BASE_SETTINGS + " openFirewall = true; }")
    assert unscoped["firewallPorts"] == [9847]
    assert any("every interface" in warning for warning in unscoped["warnings"])

    scoped = _evaluate_module(
        "{ " + BASE_SETTINGS + ' openFirewall = true; listenAddress = "::";'
        ' firewallFilter = "-i wg0 -s 10.0.0.5 -p tcp -m tcp --dport 9847"; }'
    )
    assert scoped["failedAssertions"] == []
    assert scoped["warnings"] == []
    assert scoped["firewallPorts"] == {}  # nothing opened on every interface
    assert "-i wg0 -s 10.0.0.5 -p tcp -m tcp --dport 9847" in scoped["firewallCommands"]
    assert "-j nixos-fw-accept" in scoped["firewallCommands"]


def test_module_bounds_memory_tasks_and_file_descriptors_for_the_http_server() -> None:
    unit = _evaluate_module("{ " + BASE_SETTINGS + " }")["service"]["serviceConfig"]
    assert _size_bytes(unit["MemoryMax"]) == MEMORY_MAX_BYTES
    assert unit["TasksMax"] >= MIN_TASKS
    assert unit["LimitNOFILE"] >= MIN_FDS


SETTINGS_TARGETS = (
    'settings = { poll_interval = "15s"; stall_after = "10m"; targets = ['
    ' { name = "prod"; dsn_file = "/run/secrets/slotwatch/prod-dsn";'
    '   admin_dsn_file = "/run/secrets/slotwatch/prod-admin-dsn"; }'
    ' { name = "staging"; dsn_file = "/run/secrets/slotwatch/staging-dsn";'
    '   wal_budget_bytes = "8GiB"; } ]; };'
)
CREDENTIALS = "/run/credentials/slotwatch.service"


def _rendered_settings(environment: dict[str, str]) -> dict[str, Any]:
    marker, name, body = environment["SLOTWATCH_CONFIG"].split(":", 2)
    assert (marker, name) == ("RENDERED", "slotwatch.toml")
    rendered: dict[str, Any] = json.loads(body)
    return rendered


def test_module_settings_render_several_targets_that_slotwatch_itself_accepts(
    tmp_path: Path,
) -> None:
    evaluated = _evaluate_module(
        '{ enable = true; package = "/nix/store/x-slotwatch"; ' + SETTINGS_TARGETS + " }"
    )
    assert evaluated["failedAssertions"] == []
    service = evaluated["service"]
    environment = service["environment"]
    # The file names the credential copies; systemd reads the root-only originals.
    assert sorted(service["serviceConfig"]["LoadCredential"]) == [
        "prod-admin-dsn:/run/secrets/slotwatch/prod-admin-dsn",
        "prod-dsn:/run/secrets/slotwatch/prod-dsn",
        "staging-dsn:/run/secrets/slotwatch/staging-dsn",
    ]
    # Per-target variables would be refused next to [[targets]]; they are not set.
    for name in ("SLOTWATCH_DSN_FILE", "SLOTWATCH_TARGET_NAME", "SLOTWATCH_DSN"):
        assert name not in environment, name
    rendered = _rendered_settings(environment)
    assert rendered["targets"][0]["dsn_file"] == f"{CREDENTIALS}/prod-dsn"
    assert rendered["targets"][0]["admin_dsn_file"] == f"{CREDENTIALS}/prod-admin-dsn"

    # What systemd would do: copy each credential into the credential directory; then slotwatch
    # reads the rendered TOML with the unit's own environment.
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    for entry in service["serviceConfig"]["LoadCredential"]:
        name = entry.partition(":")[0]
        (credentials / name).write_text(
            f"postgresql://slotwatch:CANARY-{name}@127.0.0.1:1/postgres"
        )
    text = tomli_w.dumps(rendered).replace(CREDENTIALS, str(credentials))
    config = tmp_path / "slotwatch.toml"
    config.write_text(text)
    assert tomllib.loads(text)["targets"][1]["name"] == "staging"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLOTWATCH_")}
    env.update({k: v for k, v in environment.items() if k != "SLOTWATCH_CONFIG"})
    env["SLOTWATCH_CONFIG"] = str(config)
    result = subprocess.run(
        [sys.executable, "-m", "slotwatch", "config"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "prod" in result.stdout
    assert "staging" in result.stdout
    assert "CANARY" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    "settings",
    [
        'settings = { targets = [ { name = "prod"; dsn = "postgresql://u:hunter2@db/p"; } ]; };',
        'settings = { admin_dsn = "postgresql://u:hunter2@db/p"; };'
        ' dsnFile = "/run/secrets/slotwatch/dsn";',
    ],
)
def test_module_refuses_inline_secrets_in_settings(settings: str) -> None:
    evaluated = _evaluate_module('{ enable = true; package = "/nix/store/x"; ' + settings + " }")
    assert any("Nix store" in message for message in evaluated["failedAssertions"]), evaluated


def test_module_wants_either_one_dsn_file_or_settings_targets() -> None:
    both = _evaluate_module(
        "{ " + BASE_SETTINGS + ' settings = { targets = [ { name = "a"; dsn_file = "/x"; } ]; }; }'
    )
    neither = _evaluate_module('{ enable = true; package = "/nix/store/x"; }')
    for evaluated in (both, neither):
        assert any("either dsnFile" in m for m in evaluated["failedAssertions"]), evaluated


def _size_bytes(value: str) -> int:
    units = {"K": 1024, "M": 1024**2, "G": 1024**3}
    return int(value[:-1]) * units[value[-1]] if value[-1] in units else int(value)


# -- plain systemd unit ---------------------------------------------------------------------


def _unit_settings(path: Path) -> dict[str, list[str]]:
    """Key -> every value it is given (systemd keys may repeat), comments skipped."""
    settings: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def _as_unit_value(value: Any) -> str:
    if value is True:
        return "yes"
    if isinstance(value, list):
        return " ".join(value)
    return str(value)


def test_plain_unit_keeps_the_same_hardening_as_the_module() -> None:
    unit = _unit_settings(UNIT)
    module_unit = _evaluate_module("{ " + BASE_SETTINGS + " }")["service"]["serviceConfig"]
    skip = {"ExecStart", "LoadCredential", "SystemCallFilter"}
    for key, value in module_unit.items():
        if key in skip:
            continue
        assert unit.get(key) == [_as_unit_value(value)], key
    assert unit["SystemCallFilter"] == module_unit["SystemCallFilter"]
    assert unit["LoadCredential"] == ["dsn:/etc/slotwatch/dsn"]
    assert "SLOTWATCH_DSN_FILE=%d/dsn" in unit["Environment"]


def test_systemd_analyze_accepts_the_plain_unit(tmp_path: Path) -> None:
    # verify insists that ExecStart's binary exists: point it at a stand-in, change nothing else.
    stand_in = tmp_path / "slotwatch"
    stand_in.write_text("#!/bin/sh\nexit 0\n")
    stand_in.chmod(0o755)
    text = UNIT.read_text()
    assert "ExecStart=/opt/slotwatch/bin/slotwatch run" in text
    copy = tmp_path / "slotwatch.service"
    copy.write_text(text.replace("/opt/slotwatch/bin/slotwatch", str(stand_in)))

    result = subprocess.run(
        [_tool("systemd-analyze"), "verify", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # verify exits 0 even for unknown keys and bad values; it only complains on stderr.
    complaints = [line for line in result.stderr.splitlines() if "slotwatch" in line]
    assert result.returncode == 0, result.stderr
    assert complaints == []


# -- podman quadlet -------------------------------------------------------------------------


def test_quadlet_runs_read_only_as_a_numeric_user_with_file_secrets_and_a_health_check() -> None:
    # Debian 12's podman (4.3) has no quadlet generator yet, so the file is checked as text.
    settings = _unit_settings(QUADLET)
    assert settings["ReadOnly"] == ["true"]
    assert settings["Network"] == ["host"]
    assert settings["User"] == ["65532"]
    assert settings["NoNewPrivileges"] == ["true"]
    assert settings["DropCapability"] == ["all"]
    assert settings["Tmpfs"] == ["/run/secrets"]
    assert any(value.startswith("slotwatch-dsn,type=mount") for value in settings["Secret"])
    assert "SLOTWATCH_DSN_FILE=/run/secrets/slotwatch-dsn" in settings["Environment"]
    assert "SLOTWATCH_LISTEN=127.0.0.1:9847" in settings["Environment"]
    assert "/healthz" in settings["HealthCmd"][0]
    assert not any(value.startswith("SLOTWATCH_DSN=") for value in settings["Environment"])
    assert settings["RestartPreventExitStatus"] == ["78"]


def test_quadlet_bounds_memory_tasks_and_file_descriptors_like_the_unit() -> None:
    settings = _unit_settings(QUADLET)
    soft, _, hard = settings["Ulimit"][0].removeprefix("nofile=").partition(":")
    assert settings["Ulimit"][0].startswith("nofile=")
    assert int(soft) >= MIN_FDS
    assert int(hard) >= int(soft)
    podman_args = " ".join(settings["PodmanArgs"]).split()
    memory = next(a.removeprefix("--memory=") for a in podman_args if a.startswith("--memory="))
    pids = next(a.removeprefix("--pids-limit=") for a in podman_args if a.startswith("--pids-"))
    assert _size_bytes(memory.upper()) == MEMORY_MAX_BYTES
    assert int(pids) >= MIN_TASKS
    # The same figures as the plain unit.
    unit = _unit_settings(UNIT)
    assert int(soft) == int(unit["LimitNOFILE"][0])
    assert int(pids) == int(unit["TasksMax"][0])


# -- least-privilege roles ------------------------------------------------------------------

CONSUMER_ROLE = "powersync_replicator"
CONSUMER_APP = "powersync/1.25.0"


class ConsumerAsRole(Consumer):
    """pg_recvlogical logged in as PowerSync's own (non-superuser) replication role."""

    def argv(self) -> list[str]:
        dsn = self.cluster.dsn(user=CONSUMER_ROLE, application_name=self.application_name)
        return [f"--dbname={dsn}" if arg.startswith("--dbname=") else arg for arg in super().argv()]


@pytest.fixture
def source(cluster_factory: Callable[..., Cluster]) -> Cluster:
    """A source database with roles.sql applied (twice: it must be rerunnable)."""
    cluster = cluster_factory()
    roles = ROLES_SQL.read_bytes()
    with cluster.connect() as conn:
        conn.execute(roles)
        conn.execute(roles)
        conn.execute(f"CREATE ROLE {CONSUMER_ROLE} LOGIN REPLICATION")
        conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {CONSUMER_ROLE}")
        conn.execute("CREATE ROLE unprivileged LOGIN")
    return cluster


def _poll_as(cluster: Cluster, role: str) -> PollResult:
    target = TargetConnection(
        "default",
        SecretStr(cluster.dsn(user=role)),
        "powersync_selfhost%",
        "powersync/%",
        connect_timeout=5,
        statement_timeout=5,
    )
    try:
        return target.poll()
    finally:
        target.close()


def _by_name(result: PollResult) -> dict[str, SlotRow]:
    return {slot.name: slot for slot in result.slots}


def _connect_as(cluster: Cluster, role: str, **params: str) -> psycopg.Connection[Any]:
    conn = psycopg.connect(cluster.dsn(user=role, **params), autocommit=True)
    # The monitoring role defaults to read-only sessions; switch that off so what is tested
    # below is the privilege itself, not the read-only guard.
    conn.execute("SET default_transaction_read_only = off")
    return conn


def _terminate(admin: psycopg.Connection[Any], pid: int) -> tuple[Any, ...] | None:
    """pg_terminate_backend, returning once the backend has exited (14's timeout form; on 13,
    which has only the signal, by waiting for the pid to leave pg_stat_activity)."""
    if admin.info.server_version >= 140000:
        return admin.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,)).fetchone()
    ended = admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()
    gone = "SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = %s)"
    wait_until(lambda: admin.execute(gone, (pid,)).fetchone() == (True,), 5, message="exits")
    return ended


def test_monitoring_role_sees_everything_but_can_change_nothing(source: Cluster) -> None:
    streaming = "powersync_selfhost1_a0a0"
    snapshotting = "powersync_selfhost2_b1b1"
    create_slot(source, streaming)
    create_slot(source, snapshotting)
    with (
        ConsumerAsRole(source, streaming, application_name=CONSUMER_APP, reconnect=False) as cons,
        # PowerSync's snapshot session: a plain connection of its role, inside a transaction.
        psycopg.connect(source.dsn(user=CONSUMER_ROLE, application_name=CONSUMER_APP)) as copier,
    ):
        copier.execute("SELECT count(*) FROM lists")
        copier_pid = copier.info.backend_pid

        # slotwatch's own poll, as the monitoring role: every figure it needs is there.
        result = _poll_as(source, "slotwatch")
        assert result.error is None, result.error
        assert result.server is not None
        assert result.server.wal_directory_bytes is not None
        assert result.server.wal_directory_bytes > 0
        slots = _by_name(result)
        assert set(slots) == {streaming, snapshotting}
        assert slots[streaming].active
        assert slots[streaming].sender_pid is not None
        assert slots[streaming].sent_lsn is not None
        assert slots[streaming].sender_application_name == CONSUMER_APP
        assert slots[snapshotting].consumer_busy
        # The decoding counters come from pg_stat_replication_slots, which 14 added: on 13 the
        # poll leaves them unknown rather than failing.
        if source.install.major >= 14:
            assert slots[streaming].total_bytes is not None
        else:
            assert slots[streaming].total_bytes is None

        # Without pg_monitor those figures are hidden: it is what the monitoring role needs.
        with (
            _connect_as(source, "unprivileged") as bare,
            pytest.raises(errors.InsufficientPrivilege),
        ):
            bare.execute("SELECT count(*) FROM pg_ls_waldir()")
        with _connect_as(source, "unprivileged") as bare:
            hidden = bare.execute(
                "SELECT sent_lsn FROM pg_stat_replication WHERE application_name = %s",
                (CONSUMER_APP,),
            ).fetchall()
            assert hidden == [(None,)]
            busy = bare.execute(
                "SELECT state FROM pg_stat_activity WHERE pid = %s", (copier_pid,)
            ).fetchall()
            assert busy == [(None,)]

        walsender = slots[streaming].sender_pid
        with _connect_as(source, "slotwatch") as monitor:
            with pytest.raises(errors.InsufficientPrivilege):
                monitor.execute("SELECT pg_drop_replication_slot(%s)", (snapshotting,))
            with pytest.raises(errors.InsufficientPrivilege):
                monitor.execute("SELECT pg_terminate_backend(%s)", (walsender,))
            with pytest.raises(errors.InsufficientPrivilege):
                monitor.execute("SELECT pg_terminate_backend(%s)", (copier_pid,))
            with pytest.raises(errors.InsufficientPrivilege):
                monitor.execute("SELECT pg_cancel_backend(%s)", (copier_pid,))
            with pytest.raises(errors.InsufficientPrivilege):
                monitor.execute("SELECT count(*) FROM lists")
        # The default read-only session refuses writes on its own, too.
        with (
            psycopg.connect(source.dsn(user="slotwatch"), autocommit=True) as monitor,
            pytest.raises(errors.ReadOnlySqlTransaction),
        ):
            monitor.execute("CREATE TEMP TABLE scratch (x int)")

        assert source.slot(streaming) is not None
        assert source.slot(snapshotting) is not None
        assert cons.running
        assert copier.execute("SELECT 1").fetchone() == (1,)

        # The drop role: an active slot is refused until its walsender is gone, then dropped.
        with _connect_as(source, "slotwatch_admin") as admin:
            with pytest.raises(errors.ObjectInUse):
                admin.execute("SELECT pg_drop_replication_slot(%s)", (streaming,))
            assert _terminate(admin, walsender) == (True,)
            admin.execute("SELECT pg_drop_replication_slot(%s)", (streaming,))

            assert _terminate(admin, copier_pid) == (True,)
            copier.close()
            admin.execute("SELECT pg_drop_replication_slot(%s)", (snapshotting,))

        assert source.slot(streaming) is None
        assert source.slot(snapshotting) is None
        wait_until(lambda: not cons.running, 10, message="pg_recvlogical exits")


def test_drop_role_cannot_end_a_superuser_session(source: Cluster) -> None:
    # pg_signal_backend stops at superusers: a consumer running as one cannot be unstuck by
    # `slotwatch drop --terminate`, which the docs warn about.
    with (
        source.connect() as superuser,
        _connect_as(source, "slotwatch_admin") as admin,
        pytest.raises(errors.InsufficientPrivilege),
    ):
        admin.execute("SELECT pg_terminate_backend(%s)", (superuser.info.backend_pid,))
