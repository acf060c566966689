"""A throwaway PostgreSQL cluster set up like a PowerSync source database, for tests and the demo.

``initdb --no-sync --wal-segsize=1`` keeps WAL segments at 1 MiB so that a test can fill, retain
and lose WAL in seconds; ``wal_level=logical`` and a ``powersync`` publication over two tables
(``lists``, ``todos``) give a consumer something to stream. The server listens on 127.0.0.1 only,
on a free port, with its unix socket inside the data directory, and logs to a file that
:meth:`Cluster.log_text` returns for a failing test. The postmaster is started directly (not via
pg_ctl) so that :attr:`Cluster.pid` is the postmaster itself.
"""

from __future__ import annotations

import atexit
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, LiteralString, Self, TypeAlias

import psycopg
from psycopg import sql
from psycopg.abc import Params
from psycopg.conninfo import make_conninfo

from sandbox.installs import PgInstall
from sandbox.lifecycle import ChildProcess
from sandbox.osuser import private_dir, spawn_as_server
from sandbox.ports import free_port
from sandbox.waiting import wait_until

# psycopg's own alias gained template strings in 3.3; the sandbox only passes plain SQL.
Query: TypeAlias = LiteralString | bytes | sql.SQL | sql.Composed

MIB = 1024 * 1024
STOP_SIGNALS = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}
PUBLICATION = "powersync"

SCHEMA = """
CREATE TABLE lists (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE todos (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    list_id bigint NOT NULL REFERENCES lists (id),
    description text NOT NULL,
    completed boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now()
);
-- Not published: traffic here is WAL that a PowerSync consumer has no interest in.
CREATE TABLE ballast (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pad text NOT NULL
);
INSERT INTO lists (name) VALUES ('inbox');
CREATE PUBLICATION powersync FOR TABLE lists, todos;
"""

# Published rows, as the application writes them: bind (characters per row, rows).
INSERT_TODOS = (
    "INSERT INTO todos (list_id, description)"
    " SELECT (SELECT min(id) FROM lists), repeat('x', %s)"
    " FROM generate_series(1, %s)"
)

# Servers run in their own session, so nothing else stops them if the owner forgets to: a run
# that ends early (an exception, Ctrl-C in a demo) must not leave postmasters behind.
_UNDESTROYED: set[Cluster] = set()


@atexit.register
def _destroy_leftovers() -> None:
    for cluster in list(_UNDESTROYED):
        cluster.destroy()


def _lsn_of(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT (pg_current_wal_lsn() - '0/0')::bigint").fetchone()
    if row is None:
        raise RuntimeError("pg_current_wal_lsn() returned no row")
    return int(row[0])


def _conf_value(value: object) -> str:
    text = str(value).replace("'", "''")
    return f"'{text}'"


class Cluster(ChildProcess):
    """One throwaway cluster: created on first :meth:`start`, deleted by :meth:`destroy`."""

    def __init__(
        self,
        install: PgInstall,
        *,
        max_slot_wal_keep_size: str = "-1",
        wal_sender_timeout: str = "60s",
        max_wal_size: str = "32MB",
        min_wal_size: str = "2MB",
        settings: Mapping[str, object] | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        self.install = install
        self.root = private_dir(f"slotwatch-{install.name}-")
        self.datadir = self.root / "data"
        self.log_path = self.root / "postgres.log"
        self.port = free_port()
        self.start_timeout = start_timeout
        self.settings: dict[str, object] = {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(self.datadir),
            "wal_level": "logical",
            "fsync": "off",
            "max_wal_size": max_wal_size,
            "min_wal_size": min_wal_size,
            "max_slot_wal_keep_size": max_slot_wal_keep_size,
            "wal_sender_timeout": wal_sender_timeout,
            "max_replication_slots": 10,
            "max_wal_senders": 10,
            "shared_buffers": "32MB",
            "log_line_prefix": "%m [%p] %a ",
            "log_replication_commands": "on",
            # 14's default and Supabase's: PostgreSQL 13 would store md5 secrets, which a
            # scram-sha-256 line in pg_hba.conf refuses ("does not have a valid SCRAM secret").
            "password_encryption": "scram-sha-256",
            **(settings or {}),
        }
        self.initdb_seconds: float | None = None
        self.start_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._initialised = False
        _UNDESTROYED.add(self)

    # -- lifecycle -------------------------------------------------------------------------

    def teardown(self) -> None:
        self.destroy()

    def start(self) -> Self:
        """Start the server (running initdb and creating the ``app`` database the first time)."""
        if self.running:
            return self
        _UNDESTROYED.add(self)
        began = time.monotonic()
        first = not self._initialised
        if first:
            self._initdb()
        self._spawn()
        if first:
            self._create_app_database()
        self.start_seconds = time.monotonic() - began
        return self

    def stop(self, mode: str = "fast", timeout: float = 30.0) -> None:
        """Shut down with PostgreSQL's ``smart``, ``fast`` or ``immediate`` mode."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(STOP_SIGNALS[mode])
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)

    def restart(self, mode: str = "fast") -> Self:
        """Stop and start again on the same port with the same data."""
        self.stop(mode)
        return self.start()

    def destroy(self) -> None:
        """Stop at once and delete everything on disk; the cluster is unusable afterwards."""
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
        _UNDESTROYED.discard(self)

    def _run_as_server_user(self, argv: list[str]) -> None:
        code = spawn_as_server(argv, log_path=self.log_path, cwd=self.root).wait()
        if code != 0:
            raise RuntimeError(f"{argv[0]} failed ({code}):\n{self.log_text()}")

    def _initdb(self) -> None:
        began = time.monotonic()
        self._run_as_server_user(
            [
                str(self.install.binary("initdb")),
                "--no-sync",
                "--wal-segsize=1",
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "-D",
                str(self.datadir),
            ]
        )
        self._write_conf()
        self._initialised = True
        self.initdb_seconds = time.monotonic() - began

    def _write_conf(self) -> None:
        lines = [f"{name} = {_conf_value(value)}" for name, value in self.settings.items()]
        lines.append(f"port = {self.port}")
        with (self.datadir / "postgresql.conf").open("a") as conf:
            conf.write("\n# slotwatch sandbox\n" + "\n".join(lines) + "\n")

    def _spawn(self) -> None:
        self._proc = spawn_as_server(
            [str(self.install.binary("postgres")), "-D", str(self.datadir)],
            log_path=self.log_path,
            cwd=self.root,
        )
        wait_until(self._accepting, self.start_timeout, interval=0.05, message="server start")

    def _accepting(self) -> bool:
        if not self.running:
            raise RuntimeError(f"postgres exited during start:\n{self.log_text()}")
        try:
            with psycopg.connect(self.dsn(dbname="postgres", connect_timeout=2)):
                return True
        except psycopg.OperationalError:
            return False

    def _create_app_database(self) -> None:
        with psycopg.connect(self.dsn(dbname="postgres"), autocommit=True) as conn:
            conn.execute("CREATE DATABASE app")
        with self.connect() as conn:
            conn.execute(SCHEMA)

    # -- SQL -------------------------------------------------------------------------------

    def dsn(self, user: str = "postgres", dbname: str = "app", **params: str | int) -> str:
        """A libpq connection string to this cluster over TCP on 127.0.0.1."""
        return make_conninfo(
            "", host="127.0.0.1", port=self.port, user=user, dbname=dbname, **params
        )

    @contextmanager
    def connect(
        self, dbname: str = "app", **params: str | int
    ) -> Iterator[psycopg.Connection[Any]]:
        """An autocommit superuser connection, closed on exit."""
        conninfo = make_conninfo(self.dsn(dbname=dbname), **params)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            yield conn

    def execute(self, query: Query, params: Params | None = None) -> None:
        with self.connect() as conn:
            conn.execute(query, params)

    def query(self, query: Query, params: Params | None = None) -> list[tuple[Any, ...]]:
        with self.connect() as conn:
            return conn.execute(query, params).fetchall()

    def scalar(self, query: Query, params: Params | None = None) -> Any:
        """The first column of the first row, or None when there is no row."""
        rows = self.query(query, params)
        return rows[0][0] if rows else None

    def set_config(self, **gucs: object) -> None:
        """``ALTER SYSTEM`` each setting, reload, and wait until new sessions see the reload."""
        with self.connect() as conn:
            loaded_before = conn.execute("SELECT pg_conf_load_time()").fetchone()
            for name, value in gucs.items():
                conn.execute(
                    sql.SQL("ALTER SYSTEM SET {} = {}").format(
                        sql.Identifier(name), sql.Literal(str(value))
                    )
                )
            conn.execute("SELECT pg_reload_conf()")

        # A backend inherits the postmaster's load time, so a newer one means the reload is in.
        def reloaded() -> bool:
            return self.query("SELECT pg_conf_load_time()")[0] != loaded_before

        wait_until(reloaded, 10, interval=0.02, message="configuration reload")

    def current_lsn(self) -> int:
        """The WAL write position as a byte count."""
        with self.connect() as conn:
            return _lsn_of(conn)

    def slot(self, name: str) -> dict[str, Any] | None:
        """The slot's row of ``pg_replication_slots`` as a dict, plus LSNs as byte counts."""
        with self.connect() as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
            return cur.execute(
                "SELECT *, (restart_lsn - '0/0')::bigint AS restart_bytes,"
                " (confirmed_flush_lsn - '0/0')::bigint AS confirmed_flush_bytes"
                " FROM pg_replication_slots WHERE slot_name = %s",
                (name,),
            ).fetchone()

    def write(self, rows: int = 100, pad: int = 100) -> int:
        """Insert ``rows`` todos of ``pad`` characters each (published WAL); return the new LSN."""
        with self.connect() as conn:
            conn.execute(INSERT_TODOS, (pad, rows))
            return _lsn_of(conn)

    def push_wal(
        self, megabytes: float, *, published: bool = False, checkpoint: bool = True
    ) -> int:
        """Move the WAL head forward by at least ``megabytes`` MiB; return the new LSN.

        Each round writes one row and switches to a fresh 1 MiB segment, so a push costs one
        round trip per MiB. By default the rows go to the unpublished ``ballast`` table, like
        unrelated application traffic; ``published=True`` writes todos instead. The final
        CHECKPOINT is where PostgreSQL removes old segments and invalidates slots that
        ``max_slot_wal_keep_size`` no longer covers.
        """
        insert: Query = (
            "INSERT INTO todos (list_id, description) SELECT min(id), 'wal' FROM lists"
            if published
            else "INSERT INTO ballast (pad) VALUES ('wal')"
        )
        with self.connect() as conn:
            start = _lsn_of(conn)
            target = start + int(megabytes * MIB)
            lsn = start
            while lsn < target:
                conn.execute(insert)
                conn.execute("SELECT pg_switch_wal()")
                lsn = _lsn_of(conn)
            if checkpoint:
                conn.execute("CHECKPOINT")
            return _lsn_of(conn)
