"""slotwatch's own database sessions, as the server sees them (README "Settings", docs/contract.md
§1): a poll's session is read-only, its statement timeout is also its lock timeout, and a
multi-host DSN is tried host by host, each with the connect timeout. Real PostgreSQL, every
install; a real listener that never answers stands for a dead first host.
"""

from __future__ import annotations

import time

import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from pydantic import SecretStr
from slotwatch_proc import run_cli

from sandbox.cluster import Cluster
from sandbox.consumer import create_slot, powersync_slot_name
from sandbox.fleet import BlackHole
from slotwatch.poll import db

STATEMENT_TIMEOUT = 7.0


def test_a_poll_session_is_read_only_and_waits_for_no_lock_longer_than_a_statement(
    cluster: Cluster,
) -> None:
    conn = db.connect(
        SecretStr(cluster.dsn()), connect_timeout=5, statement_timeout=STATEMENT_TIMEOUT
    )
    try:
        millis = str(int(STATEMENT_TIMEOUT * 1000))
        assert conn.execute("SHOW default_transaction_read_only").fetchone() == ("on",)
        settings = conn.execute(
            "SELECT name, setting FROM pg_settings"
            " WHERE name IN ('statement_timeout', 'lock_timeout') ORDER BY name"
        ).fetchall()
        assert settings == [("lock_timeout", millis), ("statement_timeout", millis)]
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("CREATE TABLE slotwatch_must_not_write (x int)")
    finally:
        conn.close()
    with cluster.connect() as check:
        assert check.execute("SELECT to_regclass('slotwatch_must_not_write')").fetchone() == (None,)


def test_a_dead_first_host_of_a_multi_host_dsn_costs_one_connect_timeout(
    cluster: Cluster,
) -> None:
    # README: the connect timeout is per host; libpq tries the hosts in turn. The first host
    # takes the TCP connection and never answers; the second is the real server.
    slot = create_slot(cluster, powersync_slot_name(7))
    connect_timeout = 2
    try:
        with BlackHole() as hole:
            dsn = make_conninfo(
                cluster.dsn(),
                host="127.0.0.1,127.0.0.1",
                port=f"{hole.port},{cluster.port}",
            )
            began = time.monotonic()
            run = run_cli(
                "status",
                env={
                    "SLOTWATCH_DSN": dsn,
                    "SLOTWATCH_LIVENESS_URL": "",
                    "SLOTWATCH_CONNECT_TIMEOUT": f"{connect_timeout}s",
                },
            )
            elapsed = time.monotonic() - began
    finally:
        cluster.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
    print(f"status through a dead first host: exit {run.returncode} after {elapsed:.2f}s")
    assert run.returncode == 0, run.stdout + run.stderr
    assert slot in run.stdout
    assert connect_timeout <= elapsed < 2 * connect_timeout + 3, elapsed
