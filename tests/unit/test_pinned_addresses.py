"""A DSN's host names are looked up by slotwatch within the connect timeout and pinned as
`hostaddr`, so libpq and psycopg never look them up again (the silent name server itself is in
tests/integration/test_name_service.py). What may pass as it is, passes as it is."""

from __future__ import annotations

from pathlib import Path

import pytest

from slotwatch.errors import DatabaseUnreachable
from slotwatch.model import PollError
from slotwatch.poll import names
from slotwatch.poll.db import classify_error, error_exception, pinned_addresses, service_entry

LOOPBACK = {"127.0.0.1", "::1"}


@pytest.mark.parametrize(
    "params",
    [
        {"dbname": "app"},  # no host: libpq's socket directory
        {"host": "/var/run/postgresql"},
        {"host": "@abstract"},
        {"host": "db.example.com", "hostaddr": "192.0.2.7"},  # the DSN pinned it itself
    ],
    ids=["no host", "socket directory", "abstract socket", "hostaddr given"],
)
def test_what_needs_no_lookup_is_left_as_it_is(
    params: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("PGHOST", "PGHOSTADDR", "PGPORT"):
        monkeypatch.delenv(name, raising=False)
    assert pinned_addresses(dict(params), 2.0) == params


def test_addresses_pin_themselves_and_names_get_every_address_in_order() -> None:
    pinned = pinned_addresses(
        {
            "host": "192.0.2.7,localhost,/var/run/postgresql,2001:db8::1",
            "port": "5433",
            "dbname": "app",
        },
        2.0,
    )
    hosts = pinned["host"].split(",")
    addrs = pinned["hostaddr"].split(",")
    assert len(hosts) == len(addrs) == len(pinned["port"].split(","))
    assert set(pinned["port"].split(",")) == {"5433"}  # one port serves every entry, as in libpq
    assert (hosts[0], addrs[0]) == ("192.0.2.7", "192.0.2.7")
    local = [a for h, a in zip(hosts, addrs, strict=True) if h == "localhost"]
    assert local, pinned
    assert set(local) <= LOOPBACK, pinned  # from /etc/hosts
    assert (hosts[-2], addrs[-2]) == (
        "/var/run/postgresql",
        "",
    )  # a socket: libpq reads the host entry
    assert (hosts[-1], addrs[-1]) == ("2001:db8::1", "2001:db8::1")
    assert pinned["dbname"] == "app"


def test_each_host_keeps_its_own_port() -> None:
    pinned = pinned_addresses({"host": "192.0.2.7,localhost", "port": "5432,6543"}, 2.0)
    entries = list(zip(pinned["host"].split(","), pinned["port"].split(","), strict=True))
    assert entries[0] == ("192.0.2.7", "5432")
    assert {port for host, port in entries[1:]} == {"6543"}
    assert {host for host, port in entries[1:]} == {"localhost"}


def test_a_dsn_of_addresses_and_sockets_alone_is_left_as_it_is() -> None:
    params = {"host": "192.0.2.7,/var/run/postgresql", "port": "5432,6543"}
    assert pinned_addresses(dict(params), 2.0) == params


def test_lists_of_different_lengths_are_left_for_libpq_to_refuse() -> None:
    params = {"host": "192.0.2.7,192.0.2.8,192.0.2.9", "port": "5432,6543"}
    assert pinned_addresses(dict(params), 2.0) == params


@pytest.mark.parametrize(
    ("timed_out", "reason"), [(True, "timeout"), (False, "connect")], ids=["silent", "no such"]
)
def test_a_name_without_address_is_a_failed_connect_with_its_reason(
    timed_out: bool, reason: str
) -> None:
    exc = (
        names.no_answer("db.example.com", 2)
        if timed_out
        else names.Unresolved("db.example.com", "Name or service not known", timed_out=False)
    )
    error = classify_error(exc, connecting=True)
    assert error.reason == reason
    assert error.message.startswith('could not translate host name "db.example.com" to address')
    assert bool(error.hint) is timed_out  # a silent name server: what to do about it
    assert isinstance(error_exception(error), DatabaseUnreachable)  # exit 69
    assert isinstance(error, PollError)


SERVICE_FILE = """\
# slotwatch's services
[other]
host=192.0.2.9

[app]
host = localhost
port=6543
dbname=app

[pinned]
host=db.example.com
hostaddr=192.0.2.7
"""


@pytest.fixture
def service_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user service file (PGSERVICEFILE) and an empty system directory (PGSYSCONFDIR)."""
    for name in ("PGHOST", "PGHOSTADDR", "PGPORT", "PGSERVICE"):
        monkeypatch.delenv(name, raising=False)
    user = tmp_path / "pg_service.conf"
    user.write_text(SERVICE_FILE)
    system = tmp_path / "etc"
    system.mkdir()
    monkeypatch.setenv("PGSERVICEFILE", str(user))
    monkeypatch.setenv("PGSYSCONFDIR", str(system))
    return system


def test_a_service_names_the_host_and_port_that_are_looked_up(service_files: Path) -> None:
    # A host named only by the service file was looked up by libpq, unbounded.
    pinned = pinned_addresses({"service": "app", "user": "slotwatch"}, 2.0)
    hosts, addrs = pinned["host"].split(","), pinned["hostaddr"].split(",")
    assert set(hosts) == {"localhost"}
    assert set(addrs) <= LOOPBACK, pinned
    assert set(pinned["port"].split(",")) == {"6543"}
    assert pinned["service"] == "app"  # libpq still reads the rest of the entry (dbname)
    assert service_entry({"service": "app"}) == {
        "host": "localhost",
        "port": "6543",
        "dbname": "app",
    }


def test_pgservice_and_the_system_file_are_read_as_libpq_reads_them(
    service_files: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGSERVICE", "app")
    assert set(pinned_addresses({}, 2.0)["hostaddr"].split(",")) <= LOOPBACK
    # Not in the user file: the system-wide pg_service.conf is read.
    (service_files / "pg_service.conf").write_text("[sys]\nhost=localhost\n")
    assert service_entry({"service": "sys"}) == {"host": "localhost"}
    # The DSN's servicefile (libpq 18) comes before PGSERVICEFILE.
    own = service_files / "own.conf"
    own.write_text("[app]\nhost=192.0.2.5\n")
    assert service_entry({"service": "app", "servicefile": str(own)}) == {"host": "192.0.2.5"}


@pytest.mark.parametrize(
    ("params", "why"),
    [
        ({"service": "pinned"}, "the service sets hostaddr itself"),
        ({"service": "missing"}, "no file holds it: libpq's own error says so"),
        ({"service": "app", "host": "/var/run/postgresql"}, "the DSN's host comes first"),
    ],
)
def test_a_service_that_needs_no_lookup_is_left_as_it_is(
    service_files: Path, params: dict[str, str], why: str
) -> None:
    assert pinned_addresses(dict(params), 2.0) == params, why


def test_an_unreadable_service_file_is_libpqs_to_report(
    service_files: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PGSERVICEFILE", str(tmp_path / "absent.conf"))
    assert service_entry({"service": "app"}) == {}
    assert pinned_addresses({"service": "app"}, 2.0) == {"service": "app"}
