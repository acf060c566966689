"""Every slot that pins WAL is watched, on real PostgreSQL 15 and 18: the ones PowerSync does not
own are counted, the top K by WAL held are exported with an owner guess, and the slot that holds
the oldest position is named, as an operator reads them in /metrics, /status and `status`.

The story: a self-hosted PowerSync streams its slot; PowerSync Cloud's `powersync_1_a0b1` stayed
behind after the move, a removed standby left a physical slot, and a Debezium connector has a slot.
slotwatch runs as the monitoring role of deploy/sql/roles.sql (pg_monitor and nothing else).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from slotwatch_proc import Metrics, SlotwatchProcess, run_cli

from sandbox.cluster import Cluster
from sandbox.consumer import Consumer, create_slot
from sandbox.installs import PgInstall
from sandbox.waiting import wait_until
from slotwatch.poll import db
from slotwatch.poll.queries import poll_statement

POLL = 0.5
ROOT = Path(__file__).resolve().parents[2]
CLOUD = "powersync_1_a0b1"  # PowerSync Cloud's slot, default prefix `powersync_`
STANDBY = "standby_gone"  # a removed standby's physical slot
DEBEZIUM = "debezium"
OWNERS = {CLOUD: "powersync", STANDBY: "physical", DEBEZIUM: "debezium"}
OTHERS = 200


@pytest.fixture(scope="module")
def source(pg_install: PgInstall) -> Iterator[Cluster]:
    """A cluster with the roles from deploy/sql/roles.sql and the three foreign slots, the
    physical one made first so that it holds the oldest position."""
    with Cluster(pg_install, settings={"max_replication_slots": OTHERS + 20}) as cluster:
        with cluster.connect() as conn:
            conn.execute((ROOT / "deploy" / "sql" / "roles.sql").read_bytes())
        cluster.execute("SELECT pg_create_physical_replication_slot(%s, true)", (STANDBY,))
        cluster.write(rows=200)
        create_slot(cluster, CLOUD)
        cluster.write(rows=200)
        create_slot(cluster, DEBEZIUM)
        cluster.write(rows=200)
        yield cluster


@pytest.fixture
def powersync(source: Cluster, consumer_factory: Callable[..., Consumer]) -> Consumer:
    return consumer_factory(source)


def settings_for(cluster: Cluster, **extra: str) -> dict[str, str]:
    return {
        "SLOTWATCH_DSN": cluster.dsn(user="slotwatch"),
        "SLOTWATCH_POLL_INTERVAL": f"{POLL}s",
        "SLOTWATCH_LIVENESS_URL": "",
        **extra,
    }


def retained(cluster: Cluster) -> dict[str, int]:
    """What PostgreSQL itself says each slot holds right now."""
    rows = cluster.query(
        "SELECT slot_name, pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint"
        " FROM pg_replication_slots WHERE restart_lsn IS NOT NULL"
    )
    return {name: int(value) for name, value in rows}


def other_slots(m: Metrics, target: str = "default") -> dict[str, dict[str, str]]:
    return {lbl["slot"]: lbl for lbl, _ in m.find("slotwatch_other_slot_info", target=target)}


def test_foreign_slots_are_watched_with_owner_and_retained_wal_and_vanish_when_dropped(
    source: Cluster, powersync: Consumer, tmp_path: Path
) -> None:
    with SlotwatchProcess(settings_for(source), tmp_path / "slotwatch.log") as daemon:
        before = retained(source)
        mark = time.time()
        m = daemon.metrics_after(mark)
        after = retained(source)

        # PowerSync's own slot is judged as before; the others are not among the judged slots.
        assert m.value("slotwatch_matched_slots", target="default") == 1
        assert m.state("default", powersync.slot_name) is not None
        judged = {lbl["slot"] for lbl, _ in m.find("slotwatch_slot_info")}
        assert judged == {powersync.slot_name}

        # Each other slot with its owner guess, type, plugin and database.
        info = other_slots(m)
        assert {slot: lbl["owner"] for slot, lbl in info.items()} == OWNERS
        assert info[STANDBY]["slot_type"] == "physical"
        assert (info[STANDBY]["plugin"], info[STANDBY]["database"]) == ("", "")
        assert (info[CLOUD]["slot_type"], info[CLOUD]["plugin"], info[CLOUD]["database"]) == (
            "logical",
            "pgoutput",
            "app",
        )
        assert m.value("slotwatch_other_slots", target="default", active="false") == 3
        assert m.value("slotwatch_other_slots", target="default", active="true") == 0

        # Retained bytes are PostgreSQL's pg_wal_lsn_diff at poll time: between the readings
        # taken before and after that poll.
        for slot in OWNERS:
            value = m.value("slotwatch_other_slot_retained_wal_bytes", slot=slot)
            assert value is not None, slot
            assert before[slot] <= value <= after[slot], (slot, before[slot], value, after[slot])
            assert m.value("slotwatch_other_slot_active", slot=slot) == 0
            inactive = m.value("slotwatch_other_slot_inactive_seconds", slot=slot)
            assert inactive is not None
            assert inactive >= 0

        # The physical slot, made first, pins pg_wal; the whole-server figure is its hold.
        assert [lbl["slot"] for lbl, _ in m.find("slotwatch_wal_retained_by")] == [STANDBY]
        total = m.value("slotwatch_wal_retained_bytes", target="default")
        assert total is not None
        assert before[STANDBY] <= total <= after[STANDBY]
        assert total == max(
            m.value("slotwatch_other_slot_retained_wal_bytes", slot=slot) or 0 for slot in OWNERS
        )

        # /status lists them in their own section, biggest first.
        (target,) = daemon.status()["targets"]
        assert [s["slot"] for s in target["slots"]] == [powersync.slot_name]
        listed = target["other_slots"]
        assert (listed["active"], listed["inactive"]) == (0, 3)
        assert [entry["slot"] for entry in listed["top"]] == [STANDBY, CLOUD, DEBEZIUM]
        assert {entry["slot"]: entry["owner"] for entry in listed["top"]} == OWNERS
        assert target["server"]["wal_retained_by"] == STANDBY

        # The inactivity clock: the server's inactive_since on 17+, else slotwatch's own,
        # which keeps counting from the first poll that saw the slot inactive.
        first = m.value("slotwatch_other_slot_inactive_seconds", slot=DEBEZIUM)
        assert first is not None
        m2 = daemon.metrics_after(time.time() + 1.0)
        later = m2.value("slotwatch_other_slot_inactive_seconds", slot=DEBEZIUM)
        assert later is not None
        assert later >= first + 1.0

        # Dropped in SQL, a foreign slot's series vanish at the next poll; the count follows.
        source.execute("SELECT pg_drop_replication_slot(%s)", (DEBEZIUM,))
        try:
            gone = daemon.metrics_after(time.time())
            assert [name for name, lbl, _ in gone.samples if lbl.get("slot") == DEBEZIUM] == []
            assert set(other_slots(gone)) == {CLOUD, STANDBY}
            assert gone.value("slotwatch_other_slots", target="default", active="false") == 2
        finally:
            create_slot(source, DEBEZIUM)


def test_status_lists_foreign_slots_in_their_own_section(source: Cluster) -> None:
    done = run_cli("status", env=settings_for(source))
    assert done.returncode == 0, done.stderr
    _, _, section = done.stdout.partition("\n\n")
    header, *lines = section.splitlines()
    assert header.split() == [
        "TARGET",
        "OTHER_SLOT",
        "OWNER",
        "TYPE",
        "ACTIVE",
        "RETAINED",
        "INACTIVE",
    ]
    rows = {cells[1]: cells for cells in (line.split() for line in lines[:3])}
    assert {slot: cells[2] for slot, cells in rows.items()} == OWNERS
    assert f"is held by {STANDBY}" in section
    as_json = run_cli("status", "--json", env=settings_for(source))
    (target,) = json.loads(as_json.stdout)["targets"]
    assert {entry["slot"] for entry in target["other_slots"]["top"]} == set(OWNERS)


def test_drop_still_refuses_a_slot_outside_the_pattern(source: Cluster) -> None:
    """PowerSync Cloud's slot is the tempting one to drop: the guard refuses it, --force or not."""
    env = {**settings_for(source), "SLOTWATCH_ADMIN_DSN": source.dsn()}
    for extra in ([], ["--force", "--reason", "left over from PowerSync Cloud", "--terminate"]):
        done = run_cli("drop", CLOUD, f"--confirm={CLOUD}", *extra, env=env)
        assert done.returncode == 3, done.stdout + done.stderr
        assert "does not match the slot pattern" in done.stdout + done.stderr
        assert source.slot(CLOUD) is not None


@pytest.fixture
def crowded(source: Cluster) -> Iterator[list[str]]:
    """200 more foreign slots (physical: instant to make), reserved at different positions."""
    names = [f"crowd_{k:03d}" for k in range(OTHERS - 3)]
    for k, name in enumerate(names):
        source.execute("SELECT pg_create_physical_replication_slot(%s, true)", (name,))
        if k % 20 == 0:
            source.write(rows=50)
    yield names
    source.execute(
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
        " WHERE slot_name LIKE 'crowd\\_%%'"
    )


def test_with_200_other_slots_only_the_top_k_carry_series_and_the_poll_is_one_statement(
    source: Cluster, crowded: list[str], tmp_path: Path
) -> None:
    # Every statement the daemon sends goes to the server log, so none can hide.
    source.set_config(log_statement="all")
    try:
        for top in ("10", "3", "0"):
            settings = settings_for(source, SLOTWATCH_OTHER_SLOTS_TOP=top)
            started = len(source.log_text())
            with SlotwatchProcess(settings, tmp_path / f"slotwatch-{top}.log") as daemon:
                daemon.metrics_after(time.time())
                m = daemon.metrics_after(time.time())
            expected = [
                name
                for (name,) in source.query(
                    "SELECT slot_name FROM pg_replication_slots"
                    " WHERE slot_name NOT LIKE 'powersync\\_selfhost%%'"
                    " ORDER BY restart_lsn, slot_name LIMIT %s",
                    (int(top),),
                )
            ]
            assert sorted(other_slots(m)) == sorted(expected), top
            for family in (
                "slotwatch_other_slot_retained_wal_bytes",
                "slotwatch_other_slot_active",
                "slotwatch_other_slot_inactive_seconds",
            ):
                assert len(m.find(family)) == int(top), (family, top)
            assert m.value("slotwatch_other_slots", target="default", active="false") == OTHERS
            # Physical slots reserve from the last checkpoint's redo pointer, so several share the
            # oldest position: the name breaks the tie, as in the server's own ORDER BY.
            oldest = source.scalar(
                "SELECT slot_name FROM pg_replication_slots ORDER BY restart_lsn, slot_name LIMIT 1"
            )
            assert [lbl["slot"] for lbl, _ in m.find("slotwatch_wal_retained_by")] == [oldest]

            statements = _statements_of(source.log_text()[started:], "slotwatch")
            polls = [s for s in statements if s.startswith("/* slotwatch: poll */")]
            asked = [s for s in statements if "may this role list pg_wal" in s]
            assert len(polls) >= 2
            # One privilege question per connection, and otherwise only the poll statement.
            assert len(asked) == 1, asked
            assert len(statements) == len(polls) + len(asked), statements
    finally:
        source.set_config(log_statement="none")


def _statements_of(log: str, application: str) -> list[str]:
    """The statements `application` sent, from a server log with `%m [%p] %a ` prefixes."""
    found = []
    # Simple protocol logs `statement:`, extended (bound parameters) `execute <name>:`.
    for match in re.finditer(
        rf"^\S+ \S+ \S+ \[\d+\] {application} LOG:  (?:statement|execute [^:]*): (.*)$",
        log,
        re.M,
    ):
        found.append(match.group(1))
    return found


def _all_slots(m: Metrics, target: str) -> set[str]:
    return {
        lbl["slot"]
        for name, lbl, _ in m.samples
        if lbl.get("target") == target and "slot" in lbl and name != "slotwatch_wal_retained_by"
    }


def test_slot_database_keeps_each_target_to_its_database_and_overlaps_are_warned(
    source: Cluster, tmp_path: Path
) -> None:
    source.execute("CREATE DATABASE shop")
    shop_slot = "powersync_selfhost3_5b0b"
    with source.connect(dbname="shop") as conn:
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (shop_slot,))
    config = tmp_path / "slotwatch.toml"
    targets: list[dict[str, Any]] = [
        {"name": "app", "dsn": source.dsn(user="slotwatch"), "slot_database": "app"},
        {
            "name": "shop",
            "dsn": source.dsn(user="slotwatch", dbname="shop"),
            "slot_database": "shop",
        },
        {"name": "everything", "dsn": source.dsn(user="slotwatch")},
    ]
    config.write_text(
        "".join(
            "[[targets]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in t.items())
            for t in targets
        )
    )
    settings = {
        "SLOTWATCH_CONFIG": str(config),
        "SLOTWATCH_POLL_INTERVAL": f"{POLL}s",
        "SLOTWATCH_LIVENESS_URL": "",
    }
    try:
        with SlotwatchProcess(settings, tmp_path / "slotwatch.log") as daemon:
            for name in ("app", "shop", "everything"):
                m = daemon.metrics_after(time.time(), target=name)
            assert _all_slots(m, "app") == {CLOUD, DEBEZIUM}
            assert _all_slots(m, "shop") == {shop_slot}
            assert m.value("slotwatch_matched_slots", target="shop") == 1
            # Every database: the physical slot (no database) and both databases' slots.
            assert _all_slots(m, "everything") == {CLOUD, DEBEZIUM, STANDBY, shop_slot}
            # The oldest position is a fact of the server, whichever scope a target has.
            for name in ("app", "shop", "everything"):
                held = m.find("slotwatch_wal_retained_by", target=name)
                assert [lbl["slot"] for lbl, _ in held] == [STANDBY], name

            def warned() -> list[dict[str, Any]]:
                return list(
                    daemon.events(
                        "two targets watch the same cluster and report the same slots twice;"
                        " give each its own slot_database, or keep one"
                    )
                )

            events = wait_until(warned, 10, message="the overlap warning")
            daemon.metrics_after(time.time() + 2 * POLL, target="everything")
            events = warned()
            pairs = {frozenset((e["target"], e["other_target"])) for e in events}
            assert pairs == {frozenset(("everything", "app")), frozenset(("everything", "shop"))}
            assert len(events) == 2  # once per pair, not once per poll
            assert all(e["level"] == "warning" for e in events)
    finally:
        source.execute("SELECT pg_drop_replication_slot(%s)", (shop_slot,))
        source.execute("DROP DATABASE shop")


def test_each_versions_text_of_the_one_statement_runs_and_reads_the_same_slots(
    source: Cluster,
) -> None:
    """The text for an older major uses a subset of a newer server's columns, so every variant
    up to this server's own runs here: the PostgreSQL 13 one included, though no 13 is at hand."""
    conn = db.connect(
        SecretStr(source.dsn(user="slotwatch")), connect_timeout=5, statement_timeout=5
    )
    try:
        own = conn.info.server_version
        readings = {}
        for version in (130000, 140000, 170000, own):
            if version > own:
                continue
            server, slots, others = db.fetch(
                conn, poll_statement(version), "powersync_selfhost%", "powersync/%"
            )
            readings[version] = (
                [s.name for s in slots],
                [(o.name, o.slot_type, o.database) for o in others],
                server.oldest_restart_slot,
            )
            # What only newer servers have is NULL in an older server's text.
            assert all(o.server_inactive_seconds is None for o in others) == (version < 170000)
        assert len(set(map(repr, readings.values()))) == 1, readings
        assert readings[own][2] == STANDBY
    finally:
        conn.close()
