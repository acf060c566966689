"""Other slots (not matching the pattern): owner guesses, the top K, their inactivity clocks,
and the poll rows they come from. Pure: hand-made rows, no database."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from metrics_fixture import GIB, MIB, SNAPSHOT

from slotwatch.config.settings import load_settings
from slotwatch.errors import ConfigError, SlotwatchError, UnsupportedServer
from slotwatch.judge.memory import Memory
from slotwatch.judge.others import OWNER_NAMES, owner_guess, watch_others
from slotwatch.model import OtherSlotRow, PollResult, ServerRow, SlotRow, Thresholds
from slotwatch.poll.queries import poll_statement
from slotwatch.poll.rows import parse_poll, read_poll
from slotwatch.report import status_table
from slotwatch.serve.metrics import FAMILIES
from slotwatch.serve.store import Snapshot, TargetView
from slotwatch.wiring import same_slots

HEAD = 10_000_000


def server(**overrides: Any) -> ServerRow:
    values: dict[str, Any] = {
        "version_num": 150010,
        "in_recovery": False,
        "current_lsn": HEAD,
        "max_slot_wal_keep_size": -1,
        "wal_segment_size": 16 * 1024 * 1024,
        "wal_directory_bytes": None,
        "wal_sender_timeout": 60.0,
        "server_epoch": 1000.0,
    }
    return ServerRow(**{**values, **overrides})


def other(name: str, **overrides: Any) -> OtherSlotRow:
    values: dict[str, Any] = {
        "name": name,
        "slot_type": "logical",
        "plugin": "pgoutput",
        "database": "app",
        "active": False,
        "restart_lsn": HEAD - 1000,
        "wal_status": "reserved",
    }
    return OtherSlotRow(**{**values, **overrides})


@pytest.mark.parametrize(
    ("name", "slot_type", "plugin", "owner"),
    [
        ("powersync_1_a0b1", "logical", "pgoutput", "powersync"),  # PowerSync Cloud's default
        ("powersyncxselfhost1_0000", "logical", "pgoutput", "powersync"),
        ("supabase_realtime_replication_slot_abc", "logical", "pgoutput", "supabase_realtime"),
        (
            "supabase_realtime_messages_replication_slot_",
            "logical",
            "pgoutput",
            "supabase_realtime",
        ),
        ("debezium", "logical", "pgoutput", "debezium"),
        ("orders_debezium_slot", "logical", "pgoutput", "debezium"),
        ("cdc_orders", "logical", "decoderbufs", "debezium"),  # Debezium's own plugin
        ("airbyte_slot", "logical", "pgoutput", "airbyte"),
        ("electric_slot_default", "logical", "pgoutput", "electric"),
        ("standby_gone", "physical", None, "physical"),
        ("powersync_standby", "physical", None, "physical"),  # a physical slot is a standby's
        ("etl_test", "logical", "wal2json", "unknown"),
    ],
)
def test_owner_is_guessed_from_type_name_and_plugin(
    name: str, slot_type: str, plugin: str | None, owner: str
) -> None:
    row = other(name, slot_type=slot_type, plugin=plugin)
    assert owner_guess(row) == owner
    assert owner in OWNER_NAMES


def test_top_k_holds_the_most_wal_and_the_counts_hold_every_slot() -> None:
    rows = tuple(
        other(f"s{k:03d}", restart_lsn=HEAD - k * 100, active=k % 3 == 0) for k in range(200)
    )
    others, _ = watch_others(rows, server(), {}, 1000.0, top=10)
    assert [view.row.name for view in others.top] == [f"s{k:03d}" for k in range(199, 189, -1)]
    assert [view.retained_wal_bytes for view in others.top][:2] == [19_900, 19_800]
    assert others.active == 67
    assert others.inactive == 133
    off, _ = watch_others(rows, server(), {}, 1000.0, top=0)
    assert off.top == ()
    assert (off.active, off.inactive) == (67, 133)


def test_a_slot_holding_no_wal_ranks_last_with_no_figure() -> None:
    rows = (
        other("never_reserved", slot_type="physical", plugin=None, restart_lsn=None),
        other("z_caught_up", restart_lsn=HEAD),  # holds 0 bytes: still ranks before "none"
        other("a"),
    )
    others, _ = watch_others(rows, server(), {}, 1000.0, top=10)
    assert [(v.row.name, v.retained_wal_bytes) for v in others.top] == [
        ("a", 1000),
        ("z_caught_up", 0),
        ("never_reserved", None),
    ]


def test_inactive_clock_is_the_servers_on_17_else_slotwatchs_own() -> None:
    rows = (
        other("new_server", server_inactive_seconds=86_400.0 * 12),
        other("old_server"),
        other("busy", active=True),
    )
    _, clocks = watch_others(rows, server(), {}, 1000.0, top=10)
    assert clocks == {"old_server": 1000.0}
    later, clocks = watch_others(rows, server(), clocks, 1090.0, top=10)
    seconds = {v.row.name: v.inactive_seconds for v in later.top}
    assert seconds == {"new_server": 86_400.0 * 12, "old_server": 90.0, "busy": 0.0}
    # It comes back: the clock is dropped, and starts again when it leaves.
    back = (*rows[:1], other("old_server", active=True), rows[2])
    _, clocks = watch_others(back, server(), clocks, 1100.0, top=10)
    assert clocks == {}
    again, _ = watch_others(rows, server(), clocks, 1200.0, top=10)
    assert {v.row.name: v.inactive_seconds for v in again.top}["old_server"] == 0.0


def test_a_clock_is_kept_for_slots_outside_the_top_k() -> None:
    small = other("small", restart_lsn=HEAD - 10)
    big = other("big", restart_lsn=HEAD - 10_000)
    _, clocks = watch_others((small, big), server(), {}, 1000.0, top=1)
    grown = other("small", restart_lsn=HEAD - 100_000)
    others, _ = watch_others((grown, big), server(), clocks, 1600.0, top=1)
    [(view)] = others.top
    assert (view.row.name, view.inactive_seconds) == ("small", 600.0)


def test_memory_judges_other_slots_and_keeps_their_clocks_across_a_failed_poll() -> None:
    memory = Memory("t", Thresholds(other_slots_top=1))
    rows = (other("debezium_orders"), other("airbyte_slot", restart_lsn=HEAD - 5))
    first = memory.judge(PollResult("t", 1000.0, 0.01, server(), (), others=rows))
    assert first is not None
    assert [(v.row.name, v.owner) for v in first.others.top] == [("debezium_orders", "debezium")]
    assert memory.judge(PollResult("t", 1030.0, 0.01, error=None)) is None
    later = memory.judge(PollResult("t", 1060.0, 0.01, server(), (), others=rows))
    assert later is not None
    assert later.others.top[0].inactive_seconds == 60.0


# --- the poll rows ---------------------------------------------------------------------------


def row(name: str | None, **overrides: Any) -> dict[str, Any]:
    """One row with the server's figures and a slot's, by column name (what parse_poll takes)."""
    values: dict[str, Any] = {
        "version_num": 180001,
        "in_recovery": False,
        "current_lsn": HEAD,
        "max_slot_wal_keep_size": 64 * 1024 * 1024,
        "wal_segment_size": 16 * 1024 * 1024,
        "wal_sender_timeout_ms": 60_000.0,
        "wal_directory_bytes": None,
        "system_identifier": 7_300_000_000_000_000_001,
        "server_epoch": 1000.0,
        "name": name,
        "matched": False,
        "in_scope": True,
        "plugin": "pgoutput",
        "slot_type": "logical",
        "database": "app",
        "temporary": False,
        "active": False,
        "active_pid": None,
        "restart_lsn": HEAD - 500,
        "confirmed_flush_lsn": HEAD - 400,
        "wal_status": "reserved",
        "safe_wal_size": 1000,
        "catalog_xmin_age": 3,
        "server_inactive_seconds": 5.0,
        "invalidation_reason": None,
        "synced": False,
        "failover": False,
        "sender_pid": None,
        "sender_application_name": None,
        "sender_state": None,
        "sent_lsn": None,
        "consumer_busy": False,
        "spill_bytes": 0,
        "stream_bytes": 0,
        "total_bytes": 0,
    }
    return {**values, **overrides}


def test_rows_split_into_matched_other_and_out_of_scope_slots() -> None:
    rows = [
        row("powersync_selfhost1_ab12", matched=True),
        row("debezium", restart_lsn=HEAD - 9000),
        row(
            "standby_gone",
            slot_type="physical",
            plugin=None,
            database=None,
            in_scope=False,
            restart_lsn=HEAD - 20_000,
            confirmed_flush_lsn=None,
        ),
        row("other_db_slot", in_scope=False),
    ]
    srv, slots, others = parse_poll(rows)
    assert [s.name for s in slots] == ["powersync_selfhost1_ab12"]
    assert [o.name for o in others] == ["debezium"]
    # What pins pg_wal is the oldest slot of the server, in scope or not.
    assert (srv.oldest_restart_slot, srv.wal_retained_bytes) == ("standby_gone", 20_000)
    assert srv.system_identifier == 7_300_000_000_000_000_001


def test_a_server_without_slots_is_one_row_of_nulls() -> None:
    srv, slots, others = parse_poll([row(None)])
    assert (slots, others) == ((), ())
    assert srv.oldest_restart_slot is None
    assert srv.wal_retained_bytes is None


def test_counters_not_read_this_poll_keep_their_last_values() -> None:
    read = row("powersync_selfhost1_ab12", matched=True, total_bytes=77)
    unread = row(
        "powersync_selfhost1_ab12",
        matched=True,
        spill_bytes=None,
        stream_bytes=None,
        total_bytes=None,
    )
    first = read_poll(*statement_rows([unread]))
    assert (first.slots[0].total_bytes, first.unknown) == (None, True)  # never read: ask for all
    second = read_poll(*statement_rows([read]), first.counters)
    assert (second.slots[0].total_bytes, second.unknown) == (77, False)
    third = read_poll(*statement_rows([unread]), second.counters)
    assert (third.slots[0].total_bytes, third.unknown) == (77, False)
    assert read_poll(*statement_rows([row(None)]), third.counters).counters == {}


def test_a_slots_repeated_texts_are_shared_with_the_last_polls_not_copied() -> None:
    def fresh(text: str) -> str:
        return "".join(list(text))  # equal, but a new object, as the driver makes each poll

    def polled() -> SlotRow:
        values = {
            "plugin": fresh("pgoutput"),
            "slot_type": fresh("logical"),
            "database": fresh("app"),
            "wal_status": fresh("reserved"),
        }
        slot = row(fresh("powersync_selfhost1_ab12"), matched=True, **values)
        return parse_poll([slot])[1][0]

    first, second = polled(), polled()
    assert first == second
    for field in ("name", "plugin", "slot_type", "database", "wal_status"):
        assert getattr(first, field) is getattr(second, field), field


SERVER_COLUMNS = (
    "version_num",
    "in_recovery",
    "current_lsn",
    "max_slot_wal_keep_size",
    "wal_segment_size",
    "wal_sender_timeout_ms",
    "wal_directory_bytes",
    "system_identifier",
    "server_epoch",
)


def statement_rows(
    rows: list[dict[str, Any]],
) -> tuple[tuple[str, ...], list[tuple[Any, ...]]]:
    """`rows` split, with their columns: one row of the server's figures (slot columns NULL) and
    one per slot (server columns NULL), the server's row wherever it falls."""
    columns = tuple(rows[0])
    server_row = tuple(None if c not in SERVER_COLUMNS else rows[0][c] for c in columns)
    slot_rows = [
        tuple(None if c in SERVER_COLUMNS else r[c] for c in columns)
        for r in rows
        if r["name"] is not None
    ]
    return columns, [*slot_rows[:1], server_row, *slot_rows[1:]]


SPLIT_ROWS = [
    row("powersync_selfhost2_cd34", matched=True, active=True, total_bytes=5),
    row("powersync_selfhost1_ab12", matched=True, spill_bytes=None, stream_bytes=None),
    row("debezium", restart_lsn=HEAD - 9000),
    row(
        "standby_gone",
        slot_type="physical",
        plugin=None,
        database=None,
        in_scope=False,
        restart_lsn=HEAD - 20_000,
    ),
    row("powersync_selfhost3_ef56", matched=True, in_scope=False),
]


def test_the_statements_rows_read_as_the_same_poll_as_rows_that_each_carry_the_server() -> None:
    parsed = read_poll(*statement_rows(SPLIT_ROWS))
    assert (parsed.server, parsed.slots, parsed.others) == parse_poll(SPLIT_ROWS)
    # Sorted by name, whatever order the server sent them in.
    names = [s.name for s in parsed.slots]
    assert names == ["powersync_selfhost1_ab12", "powersync_selfhost2_cd34"]
    assert parsed.server.oldest_restart_slot == "standby_gone"
    server_only = read_poll(*statement_rows([row(None)]))
    assert (server_only.slots, server_only.others, server_only.counters) == ((), (), {})
    assert server_only.server == parse_poll([row(None)])[0]


def test_a_poll_without_the_servers_row_or_from_a_standby_is_refused() -> None:
    columns, rows = statement_rows(SPLIT_ROWS)
    version_at = columns.index("version_num")
    with pytest.raises(SlotwatchError, match="no server row"):
        read_poll(columns, [r for r in rows if r[version_at] is None])
    with pytest.raises(UnsupportedServer, match="standby"):
        read_poll(*statement_rows([row(None, in_recovery=True)]))


def unread(name: str, **overrides: Any) -> dict[str, Any]:
    counters = {"spill_bytes": None, "stream_bytes": None, "total_bytes": None}
    return row(name, matched=True, **counters, **overrides)


def test_counters_not_read_this_poll_are_filled_from_the_last_polls_as_rows_are_built() -> None:
    rows = [
        row("powersync_selfhost1_ab12", matched=True, active=True, total_bytes=9),  # read
        unread("powersync_selfhost2_cd34"),  # known from the last poll
        unread("powersync_selfhost3_ef56"),  # new and not read: unknown
        unread("powersync_selfhost4_phys", slot_type="physical", plugin=None, database=None),
        unread("powersync_selfhost5_else", in_scope=False),  # out of scope: not kept
    ]
    last = {
        "powersync_selfhost1_ab12": (1, 2, 3),
        "powersync_selfhost2_cd34": (4, 5, 6),
        "powersync_selfhost_gone": (7, 8, 9),
    }
    before = dict(last)
    parsed = read_poll(*statement_rows(rows), last)
    assert last == before  # pure: the caller keeps `counters` for the next poll
    counters = {s.name: (s.spill_bytes, s.stream_bytes, s.total_bytes) for s in parsed.slots}
    assert counters == {
        "powersync_selfhost1_ab12": (0, 0, 9),
        "powersync_selfhost2_cd34": (4, 5, 6),
        "powersync_selfhost3_ef56": (None, None, None),
        "powersync_selfhost4_phys": (None, None, None),
    }
    assert parsed.counters == {
        "powersync_selfhost1_ab12": (0, 0, 9),
        "powersync_selfhost2_cd34": (4, 5, 6),
        "powersync_selfhost4_phys": (None, None, None),  # a physical slot has none to read
    }
    assert parsed.unknown
    # Once every counter is known, nothing is left to ask for.
    again = read_poll(*statement_rows(rows[:2] + rows[3:]), parsed.counters)
    assert not again.unknown


def test_the_decoding_counters_are_the_last_fields_of_a_slot_row() -> None:
    """read_poll carries counters by swapping the tail of a row's values."""
    names = list(SlotRow._fields)
    assert names[-3:] == ["spill_bytes", "stream_bytes", "total_bytes"]


@pytest.mark.parametrize("version", [130010, 140010, 160004, 170002, 180001])
@pytest.mark.parametrize("waldir", [True, False])
def test_one_statement_file_gives_every_version_its_text(version: int, waldir: bool) -> None:
    text = poll_statement(version, list_waldir=waldir)
    assert "/*end*/" not in text
    assert ("pg_ls_waldir" in text) == waldir
    assert ("inactive_since" in text) == (version >= 170000)
    assert ("pg_stat_get_replication_slot" in text) == (version >= 140000)
    assert "conflicting" not in text
    assert "json_agg(" not in text
    assert "json_build_object(" not in text
    assert text.count("%(") == (5 if version >= 140000 else 4)


# --- two targets, one cluster ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("clusters", "overlapping"),
    [
        ({"a": (1, None), "b": (1, None)}, {"b"}),
        ({"a": (1, "app"), "b": (1, None)}, {"b"}),  # b reports every database, app's too
        ({"a": (1, "app"), "b": (1, "app")}, {"b"}),
        ({"a": (1, "app"), "b": (1, "shop")}, set()),  # a fleet done right
        ({"a": (1, None), "b": (2, None)}, set()),  # two clusters
        ({"a": (1, None)}, set()),
    ],
)
def test_targets_on_one_cluster_with_overlapping_scopes_are_found(
    clusters: dict[str, tuple[int, str | None]], overlapping: set[str]
) -> None:
    assert {name for name, _ in same_slots(clusters, "a")} == overlapping


def test_status_table_lists_other_slots_in_their_own_section() -> None:
    memory = Memory("prod", Thresholds())
    rows = (
        other(
            "powersync_1_a0b1",
            restart_lsn=HEAD - 12 * 1024 * 1024,
            server_inactive_seconds=86_400.0 * 12,
        ),
        other("standby_gone", slot_type="physical", plugin=None, database=None, active=True),
    )
    srv = server(oldest_restart_lsn=HEAD - 12 * 1024 * 1024, oldest_restart_slot="powersync_1_a0b1")
    result = PollResult("prod", 1000.0, 0.01, srv, (), others=rows)
    judgement = memory.judge(result)
    assert judgement is not None
    view = TargetView(
        "prod",
        "powersync",
        "powersync_selfhost%",
        Thresholds(),
        up=True,
        last_poll=result,
        server=srv,
        others=judgement.others,
    )
    table = status_table(Snapshot((view,)))
    _, _, section = table.partition("\n\n")
    lines = section.splitlines()
    assert lines[0].split() == [
        "TARGET",
        "OTHER_SLOT",
        "OWNER",
        "TYPE",
        "ACTIVE",
        "RETAINED",
        "INACTIVE",
    ]
    assert lines[1].split() == [
        "prod",
        "powersync_1_a0b1",
        "powersync",
        "logical",
        "no",
        "12.0MiB",
        "12d00h",
    ]
    assert lines[2].split()[:5] == ["prod", "standby_gone", "physical", "physical", "yes"]
    assert "the oldest WAL (12.0MiB) is held by powersync_1_a0b1" in section


# --- the metric table --------------------------------------------------------------------------


def test_the_table_exports_other_slots_and_who_pins_pg_wal_only_for_a_target_that_is_up() -> None:
    samples = {f.name: list(f.samples(SNAPSHOT)) for f in FAMILIES}
    assert samples["slotwatch_wal_retained_bytes"] == [(("prod",), 3 * GIB)]
    assert samples["slotwatch_wal_retained_by"] == [(("prod", "powersync_1_a0b1"), 1)]
    assert samples["slotwatch_other_slots"] == [(("prod", "true"), 1), (("prod", "false"), 2)]
    assert samples["slotwatch_other_slot_info"] == [
        (("prod", "powersync_1_a0b1", "logical", "pgoutput", "postgres", "powersync"), 1),
        (("prod", "standby_gone", "physical", "", "", "physical"), 1),
    ]
    assert samples["slotwatch_other_slot_retained_wal_bytes"] == [
        (("prod", "powersync_1_a0b1"), 3 * GIB),
        (("prod", "standby_gone"), MIB),
    ]
    assert samples["slotwatch_other_slot_active"] == [
        (("prod", "powersync_1_a0b1"), 0),
        (("prod", "standby_gone"), 1),
    ]
    assert samples["slotwatch_other_slot_inactive_seconds"] == [
        (("prod", "powersync_1_a0b1"), 86_400.0 * 12),
        (("prod", "standby_gone"), 0.0),
    ]


# --- the settings ------------------------------------------------------------------------------


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("SLOTWATCH_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SLOTWATCH_DSN", "postgresql://mon@127.0.0.1/app")
    return monkeypatch


def test_other_slots_top_and_slot_database_default_to_ten_and_every_database(
    env: pytest.MonkeyPatch,
) -> None:
    _, (target,) = load_settings()
    assert target.thresholds.other_slots_top == 10
    assert target.slot_database is None
    env.setenv("SLOTWATCH_OTHER_SLOTS_TOP", "0")
    env.setenv("SLOTWATCH_SLOT_DATABASE", "app")
    _, (target,) = load_settings()
    assert (target.thresholds.other_slots_top, target.slot_database) == (0, "app")
    env.setenv("SLOTWATCH_SLOT_DATABASE", "")  # empty, as from a unit file: every database
    _, (target,) = load_settings()
    assert target.slot_database is None


@pytest.mark.parametrize("value", ["-1", "1.5", "ten", "true", "1001"])
def test_a_bad_other_slots_top_is_one_line_naming_the_setting(
    env: pytest.MonkeyPatch, value: str
) -> None:
    env.setenv("SLOTWATCH_OTHER_SLOTS_TOP", value)
    with pytest.raises(ConfigError) as error:
        load_settings()
    assert str(error.value) == (
        "SLOTWATCH_OTHER_SLOTS_TOP: must be a whole number from 0 (off) to 1000"
    )


def test_each_target_of_the_file_has_its_own_database_and_top_k(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env.delenv("SLOTWATCH_DSN")
    config = tmp_path / "slotwatch.toml"
    config.write_text(
        "other_slots_top = 3\n"
        '[[targets]]\nname = "app"\ndsn = "postgresql://mon@h/app"\nslot_database = "app"\n'
        '[[targets]]\nname = "shop"\ndsn = "postgresql://mon@h/shop"\nother_slots_top = 0\n'
        '[[targets]]\nname = "bad"\ndsn = "postgresql://mon@h/x"\nother_slots_top = true\n'
    )
    with pytest.raises(ConfigError, match=r"targets\[2\]\.other_slots_top: must be a whole"):
        load_settings(config)
    config.write_text(config.read_text().rsplit("[[targets]]", 1)[0])
    _, (app, shop) = load_settings(config)
    assert (app.slot_database, app.thresholds.other_slots_top) == ("app", 3)
    assert (shop.slot_database, shop.thresholds.other_slots_top) == (None, 0)
