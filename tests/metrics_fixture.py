"""A hand-made snapshot that reaches every branch of the metric table, for in-process tests.

Two targets: `prod` polled fine, with slots in several states, one on every optional column
missing, a label value that needs escaping, a budget ratio above 1 (safe_wal_size counts the
partly filled segment) and one below 0 (unreserved), and a probe; `replica` down after errors,
its probe never run. No database, no clock: every figure is written here.
"""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType

from slotwatch.model import (
    INF,
    Assessment,
    OtherSlotRow,
    OtherSlots,
    OtherSlotView,
    PollError,
    PollResult,
    ProbeResult,
    ServerRow,
    SlotRow,
    SlotState,
    SlotView,
    Thresholds,
)
from slotwatch.serve.store import Snapshot, TargetView

MIB = 1024 * 1024
GIB = 1024 * MIB
T0 = 1_764_590_000.0
HEAD = 0x16_B374_D848
KEEP = 4 * GIB

SERVER = ServerRow(
    version_num=150010,
    in_recovery=False,
    current_lsn=HEAD,
    max_slot_wal_keep_size=KEEP,
    wal_segment_size=16 * MIB,
    wal_directory_bytes=1056 * MIB,
    wal_sender_timeout=0.0,
    server_epoch=T0,
    oldest_restart_lsn=HEAD - 3 * GIB,
    oldest_restart_slot="powersync_1_a0b1",
)

# Slots not matching the pattern: PowerSync Cloud's left-over holding the oldest WAL, and a
# physical slot without plugin or database; one more counted but outside the top K.
OTHERS = OtherSlots(
    active=1,
    inactive=2,
    top=(
        OtherSlotView(
            OtherSlotRow(
                "powersync_1_a0b1",
                "logical",
                "pgoutput",
                "postgres",
                False,
                HEAD - 3 * GIB,
                "extended",
            ),
            "powersync",
            3 * GIB,
            86_400.0 * 12,
        ),
        OtherSlotView(
            OtherSlotRow("standby_gone", "physical", None, None, True, HEAD - MIB, "reserved"),
            "physical",
            MIB,
            0.0,
        ),
    ),
)


def _assessment(state: SlotState, **figures: object) -> Assessment:
    base = Assessment(
        state=state,
        reasons=(f"fixture: {state.value}",),
        lag_bytes=4096,
        retained_wal_bytes=20 * MIB,
        sent_lag_bytes=0,
        flush_stall_seconds=0.0,
        inactive_seconds=0.0,
        invalidation_eta_seconds=INF,
        wal_budget_bytes=KEEP,
        wal_budget_ratio=0.5,
        wal_rate_bytes_per_second=65536.0,
    )
    return replace(base, **figures)  # type: ignore[arg-type]


def _row(name: str, **columns: object) -> SlotRow:
    base = SlotRow(
        name=name,
        plugin="pgoutput",
        slot_type="logical",
        database="app",
        temporary=False,
        active=True,
        active_pid=4242,
        restart_lsn=HEAD - 20 * MIB,
        confirmed_flush_lsn=HEAD - 4096,
        wal_status="reserved",
        safe_wal_size=KEEP - 20 * MIB,
        catalog_xmin_age=17,
        sender_pid=4242,
        sender_application_name="powersync/1.25.0",
        sender_state="streaming",
        sent_lsn=HEAD,
        spill_bytes=0,
        stream_bytes=0,
        total_bytes=123_456_789,
    )
    return base._replace(**columns)


SLOTS = (
    SlotView(_row("powersync_selfhost1_180c"), _assessment(SlotState.HEALTHY)),
    SlotView(
        # Idle right after a checkpoint: safe_wal_size counts the partly filled segment too.
        _row("powersync_selfhost2_9a3e", safe_wal_size=KEEP + 14 * MIB),
        _assessment(SlotState.HEALTHY, wal_budget_ratio=(KEEP + 14 * MIB) / KEEP),
    ),
    SlotView(
        _row(
            "powersync_selfhost3_04bd",
            active=False,
            active_pid=None,
            sender_pid=None,
            sender_application_name=None,
            sender_state=None,
            sent_lsn=None,
            wal_status="unreserved",
            safe_wal_size=-64 * MIB,
            database='we"ird\\db\nname',
        ),
        _assessment(
            SlotState.AT_RISK,
            lag_bytes=5 * GIB,
            retained_wal_bytes=5 * GIB,
            sent_lag_bytes=None,
            inactive_seconds=4321.5,
            invalidation_eta_seconds=0.0,
            wal_budget_ratio=-64 * MIB / KEEP,
        ),
    ),
    SlotView(
        _row(
            "powersync_selfhost4_77aa",
            plugin=None,
            database=None,
            restart_lsn=None,
            confirmed_flush_lsn=None,
            wal_status=None,
            safe_wal_size=None,
            catalog_xmin_age=None,
            spill_bytes=None,
            stream_bytes=None,
            total_bytes=None,
            active=False,
            sender_pid=None,
            sent_lsn=None,
        ),
        _assessment(
            SlotState.LOST,
            lag_bytes=None,
            retained_wal_bytes=None,
            sent_lag_bytes=None,
            wal_budget_ratio=None,
            flush_stall_seconds=612.25,
            invalidation_eta_seconds=12345.678,
        ),
    ),
)

PROD = TargetView(
    name="prod",
    probe_name="powersync",
    slot_pattern="powersync_selfhost%",
    thresholds=Thresholds(),
    up=True,
    last_poll=PollResult("prod", T0, 0.0123, SERVER, tuple(v.row for v in SLOTS)),
    last_success=T0 + 0.0123,
    server=SERVER,
    slots=SLOTS,
    poll_errors=MappingProxyType(
        {"connect": 2, "auth": 0, "timeout": 1, "query": 0, "tls": 0, "other": 0}
    ),
    polls_skipped=3,
    wal_rate=65536.0,
    probe=ProbeResult(
        "http://127.0.0.1:8080/probes/liveness", T0, True, 0.004, status_code=200, touched_age=1.5
    ),
    probe_last_success=T0,
    others=OTHERS,
)

REPLICA = TargetView(
    name="replica",
    probe_name="api",
    slot_pattern="powersync_selfhost%",
    thresholds=Thresholds(),
    up=False,
    last_poll=PollResult(
        "replica", T0, 5.0, error=PollError("timeout", "statement timeout after 5s")
    ),
    poll_errors=MappingProxyType(
        {"connect": 0, "auth": 0, "timeout": 7, "query": 0, "tls": 0, "other": 0}
    ),
    probe=ProbeResult("http://127.0.0.1:9/x", T0, False, 5.0, error="connection refused"),
)

SNAPSHOT = Snapshot((PROD, REPLICA))


def many_slots(count: int) -> Snapshot:
    """`prod` with `count` slots, cycling through the fixture's four: for render timings."""
    slots = tuple(
        SlotView(s.row._replace(name=f"powersync_selfhost{k}_{k:04x}"), s.assessment)
        for k, s in ((k, SLOTS[k % len(SLOTS)]) for k in range(count))
    )
    return Snapshot((replace(PROD, slots=slots), REPLICA))
