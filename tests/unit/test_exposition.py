"""/metrics bytes, in process: the fast renderer writes what the client library writes, once per
snapshot, in the format and encoding the scraper asked for."""

from __future__ import annotations

import gc
import gzip
import random
import threading
import tracemalloc
import weakref
from collections.abc import Iterator
from dataclasses import replace

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from metrics_fixture import OTHERS, PROD, REPLICA, SLOTS, SNAPSHOT, many_slots
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from sandbox.waiting import wait_until
from slotwatch.logs import dropped_lines
from slotwatch.model import INF, WAL_STATUSES, SlotState, SlotView
from slotwatch.serve.collector import SlotwatchCollector
from slotwatch.serve.exposition import Exposition, accepts_gzip
from slotwatch.serve.render import Renderer, number_line, render
from slotwatch.serve.store import Snapshot

NAN = float("nan")

PROMETHEUS_2_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


class _Swappable:
    def __init__(self, snapshot: Snapshot) -> None:
        self.current = snapshot

    def snapshot(self) -> Snapshot:
        return self.current


def _library(snapshot: Snapshot, *, openmetrics: bool = False) -> bytes:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(SlotwatchCollector(_Swappable(snapshot)))
    return (generate_openmetrics if openmetrics else generate_latest)(registry)


def _empty_registry() -> CollectorRegistry:
    return CollectorRegistry(auto_describe=True)


@pytest.mark.parametrize(
    "snapshot",
    [SNAPSHOT, many_slots(1000), Snapshot(()), Snapshot((REPLICA,))],
    ids=["fixture", "1000-slots", "no-targets", "down-only"],
)
def test_the_renderer_writes_exactly_what_the_client_library_writes(snapshot: Snapshot) -> None:
    assert render(snapshot) == _library(snapshot)
    assert render(snapshot, openmetrics=True) + b"# EOF\n" == _library(snapshot, openmetrics=True)


def test_a_burst_of_scrapes_renders_a_snapshot_once_and_a_new_snapshot_once_more() -> None:
    store = _Swappable(many_slots(200))
    exposition = Exposition(store, _empty_registry())
    start = threading.Barrier(50)
    bodies: list[bytes] = []

    def scrape() -> None:
        start.wait(timeout=10)
        bodies.append(exposition.response(None, None).body)

    threads = [threading.Thread(target=scrape) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(bodies) == 50
    assert len(set(bodies)) == 1
    assert exposition.renders == 1
    for _ in range(10):
        exposition.response(None, "gzip")
    assert exposition.renders == 1

    store.current = Snapshot((replace(PROD, polls_skipped=PROD.polls_skipped + 1), REPLICA))
    body = exposition.response(None, None).body
    assert exposition.renders == 2
    assert b'slotwatch_polls_skipped_total{target="prod"} 4.0\n' in body
    assert body == render(store.current)


@pytest.mark.parametrize(
    ("accept", "content_type"),
    [
        (None, "text/plain; version=0.0.4; charset=utf-8"),
        ("text/plain", "text/plain; version=0.0.4; charset=utf-8"),
        ("*/*", "text/plain; version=0.0.4; charset=utf-8"),
        (PROMETHEUS_2_ACCEPT, "application/openmetrics-text; version=1.0.0; charset=utf-8"),
        (
            "application/openmetrics-text; version=1.0.0",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
    ],
)
def test_the_format_is_negotiated_as_the_client_library_does(
    accept: str | None, content_type: str
) -> None:
    exposition = Exposition(_Swappable(SNAPSHOT), _empty_registry())
    response = exposition.response(accept, None)
    assert response.content_type.startswith(content_type)
    assert response.content_encoding is None
    if content_type.startswith("application/openmetrics-text"):
        assert response.body.endswith(b"# EOF\n")
        assert response.body == _library(SNAPSHOT, openmetrics=True)
        names = {family.name for family in parse_openmetrics(response.body.decode())}
        assert {"slotwatch_poll_errors", "slotwatch_slot_state"} <= names
    else:
        assert response.body == _library(SNAPSHOT)


def test_process_metrics_follow_the_snapshot_and_stay_fresh() -> None:
    exposition = Exposition(_Swappable(SNAPSHOT))
    text = exposition.response(None, None).body.decode()
    assert text.startswith(render(SNAPSHOT).decode())
    assert "\nprocess_cpu_seconds_total " in text
    assert "\npython_info{" in text
    # slotwatch's own process counters come first, with what the process has counted so far.
    tail = text[len(render(SNAPSHOT).decode()) :]
    assert tail.startswith("# HELP slotwatch_log_lines_dropped_total ")
    assert f"\nslotwatch_log_lines_dropped_total {float(dropped_lines())}\n" in tail
    openmetrics = exposition.response("application/openmetrics-text", None).body.decode()
    assert openmetrics.count("# EOF\n") == 1
    assert openmetrics.endswith("# EOF\n")
    assert "\nprocess_cpu_seconds_total " in openmetrics
    assert "\n# TYPE slotwatch_log_lines_dropped counter\n" in openmetrics


@pytest.mark.parametrize("accept", [None, "application/openmetrics-text; version=1.0.0"])
def test_gzip_when_accepted_decompresses_to_the_identity_body(accept: str | None) -> None:
    exposition = Exposition(_Swappable(many_slots(100)), _empty_registry())
    plain = exposition.response(accept, None)
    for _ in range(3):  # the cached stream is continued, never consumed, by each request
        packed = exposition.response(accept, "gzip, deflate, br")
        assert packed.content_encoding == "gzip"
        assert packed.content_type == plain.content_type
        assert len(packed.body) < len(plain.body) / 10
        assert gzip.decompress(packed.body) == plain.body
    assert exposition.renders == 1


@pytest.mark.parametrize(
    ("header", "gzip_ok"),
    [
        (None, False),
        ("", False),
        ("gzip", True),
        ("GZIP", True),
        ("deflate, gzip;q=0.5", True),
        ("gzip;q=0", False),
        ("gzip; q=0.000", False),
        ("x-gzip", True),
        ("br, identity", False),
        ("*", False),  # a wildcard is allowed to mean identity; say gzip to get gzip
    ],
)
def test_accept_encoding_is_read_as_http_defines_it(header: str | None, gzip_ok: bool) -> None:
    assert accepts_gzip(header) is gzip_ok


def test_a_burst_shares_its_process_lines_and_later_scrapes_read_them_again() -> None:
    class Reads(Collector):
        count = 0

        def collect(self) -> Iterator[GaugeMetricFamily]:
            Reads.count += 1
            yield GaugeMetricFamily(
                "process_reads", "How often the process lines were read.", value=Reads.count
            )

    process = CollectorRegistry(auto_describe=False)
    process.register(Reads())
    exposition = Exposition(_Swappable(SNAPSHOT), process, process_ttl=0.2)
    first = exposition.response(None, None).body
    assert [exposition.response(None, None).body for _ in range(20)] == [first] * 20
    assert b"\nprocess_reads 1.0\n" in first
    later = wait_until(
        lambda: (body := exposition.response(None, None).body) != first and body,
        5,
        interval=0.05,
        message="process lines read again",
    )
    assert later.startswith(render(SNAPSHOT))
    assert b"\nprocess_reads 2.0\n" in later
    assert exposition.renders == 1


def test_an_uncompressed_body_is_made_when_asked_and_not_kept_past_its_snapshot() -> None:
    store = _Swappable(many_slots(1000))
    exposition = Exposition(store, _empty_registry())
    second = many_slots(1000)  # the next poll's, made before memory is traced
    gc.collect()
    tracemalloc.start()
    try:
        packed = exposition.response(None, "gzip").body
        only_gzip = tracemalloc.get_traced_memory()[0]
        plain = exposition.response(None, None).body
        assert len(plain) > 1_900_000  # the body is nearly 2 MB ...
        assert len(packed) < len(plain) / 10  # ... its gzip a tenth of it
        del plain, packed
        with_body = tracemalloc.get_traced_memory()[0]
        assert with_body - only_gzip > 1_500_000  # held while its snapshot is current
        store.current = second  # a new poll, scraped with gzip only from now on
        packed = exposition.response(None, "gzip").body
        assert tracemalloc.get_traced_memory()[0] < with_body - 1_500_000
        assert gzip.decompress(packed) == render(second)
    finally:
        tracemalloc.stop()
    assert exposition.renders == 2


def test_what_is_kept_of_a_render_does_not_keep_its_snapshot_alive() -> None:
    store = _Swappable(many_slots(50))
    exposition = Exposition(store, _empty_registry())
    for accept, encoding in ((None, None), (None, "gzip"), (PROMETHEUS_2_ACCEPT, None)):
        exposition.response(accept, encoding)
    polled = weakref.ref(store.current)
    store.current = many_slots(50)  # the next poll lands; nobody has scraped it yet
    gc.collect()
    assert polled() is None  # the last poll's rows and judgements are already gone
    assert gzip.decompress(exposition.response(None, "gzip").body).startswith(render(store.current))
    assert exposition.renders == 3


# --- what a Renderer keeps between renders ------------------------------------------------------


class _Folded:
    """A Renderer, and the body its families stand for: each None (a family as at the last
    render) is filled from the last render, as `Exposition` fills it from its segments."""

    def __init__(self, *, openmetrics: bool = False) -> None:
        self.renderer = Renderer(openmetrics=openmetrics)
        self.families: list[bytes] = []
        self.written = 0  # families written (not None) by the last render

    def render(self, snapshot: Snapshot) -> bytes:
        families = self.renderer.render(snapshot)
        self.written = sum(family is not None for family in families)
        self.families = [
            family if family is not None else self.families[index]
            for index, family in enumerate(families)
        ]
        return b"".join(self.families)


# Figures a slot may show: repeated ones (kept texts), zeros of both signs (one dict key, two
# texts), ints beyond a float's exact range, and the non-finite ones.
FIGURES = (
    0,
    1,
    0.0,
    -0.0,
    4096,
    999_999,
    1_000_000,
    5 * 2**30,
    2**53 + 1,
    0.5,
    1234567.5,
    -64.25,
    1e16,
    INF,
    -INF,
    NAN,
)
NAMES = ("powersync_a", "powersync_a_", "powersync_b", 'we"ird\\sl\not', "p%sercent", "slót_ü")
WAL = (*WAL_STATUSES, None, "unknown_status")


def _slot(rng: random.Random, name: str) -> SlotView:
    base = SLOTS[rng.randrange(len(SLOTS))]
    row = base.row._replace(
        name=name,
        active=rng.random() < 0.5,
        wal_status=rng.choice(WAL),
        safe_wal_size=rng.choice((None, *FIGURES)),
        catalog_xmin_age=rng.choice((None, 17, 18)),
        total_bytes=rng.choice((None, *FIGURES)),
        database=rng.choice(("app", None, 'x"y')),
    )
    assessment = replace(
        base.assessment,
        state=rng.choice(list(SlotState)),
        lag_bytes=rng.choice((None, *FIGURES)),
        flush_stall_seconds=rng.choice(FIGURES),
        invalidation_eta_seconds=rng.choice(FIGURES),
        wal_budget_ratio=rng.choice((None, 0.25, 1.5, -0.5, -0.0)),
    )
    return SlotView(row, assessment)


def _churning(count: int, seed: int = 11) -> Iterator[Snapshot]:
    """Snapshots in which slots appear, vanish, come back renamed by a character, change state
    and WAL status, and a target goes down and up again."""
    rng = random.Random(seed)  # noqa: S311 - seeded, reproducible fixtures, not secrets
    pool = [f"{n}{k}" for n in NAMES for k in range(4)]
    for step in range(count):
        names = rng.sample(pool, rng.randrange(len(pool) + 1))
        slots = tuple(_slot(rng, name) for name in names)
        prod = replace(PROD, slots=slots, polls_skipped=step % 3)
        if step % 5 == 3:  # down: no server, no slots
            prod = replace(PROD, up=False, server=None, slots=(), others=replace(OTHERS, top=()))
        yield Snapshot((prod, REPLICA) if step % 7 else (REPLICA, prod))


def test_one_renderer_across_a_churning_sequence_writes_what_the_library_writes() -> None:
    text, openmetrics = _Folded(), _Folded(openmetrics=True)
    store = _Swappable(SNAPSHOT)
    exposition = Exposition(store, _empty_registry())
    for snapshot in [*_churning(40), SNAPSHOT, Snapshot(()), SNAPSHOT]:
        expected, expected_om = _library(snapshot), _library(snapshot, openmetrics=True)
        assert text.render(snapshot) == expected
        assert openmetrics.render(snapshot) + b"# EOF\n" == expected_om
        store.current = snapshot
        assert exposition.response(None, None).body == expected
        assert gzip.decompress(exposition.response(None, "gzip").body) == expected
        assert exposition.response(PROMETHEUS_2_ACCEPT, None).body == expected_om
        assert gzip.decompress(exposition.response(PROMETHEUS_2_ACCEPT, "gzip").body) == (
            expected_om
        )


def test_a_renderer_writes_the_same_snapshot_again_the_same() -> None:
    renderer = _Folded()
    snapshot = many_slots(300)
    first = renderer.render(snapshot)
    assert renderer.written == len(renderer.families)  # the first render writes them all
    assert renderer.render(snapshot) == first
    assert renderer.written == 0  # and the same snapshot none
    assert renderer.render(many_slots(300)) == first  # equal figures, other objects
    assert renderer.written == 0
    assert renderer.render(SNAPSHOT) == _library(SNAPSHOT)
    assert renderer.render(snapshot) == first
    renderer.renderer.forget()
    assert renderer.render(snapshot) == first
    assert renderer.written == len(renderer.families)  # forgotten: every family written again


def test_a_slot_that_changes_state_is_written_anew_among_those_copied() -> None:
    renderer = _Folded()
    snapshot = many_slots(300)
    before = renderer.render(snapshot)
    view = snapshot.targets[0]
    changed = list(view.slots)
    for k, state in ((7, SlotState.WEDGED), (8, SlotState.LOST)):
        moved = replace(changed[k].assessment, state=state)
        changed[k] = replace(changed[k], assessment=moved)
    after = Snapshot((replace(view, slots=tuple(changed)), *snapshot.targets[1:]))
    assert renderer.render(after) == _library(after) != before
    assert renderer.written == 1  # the state family; the others are as they were
    assert renderer.render(snapshot) == _library(snapshot) == before  # and back


def test_what_a_renderer_keeps_stays_bounded_while_every_slot_is_new_each_render() -> None:
    renderer = Renderer()
    views = many_slots(1000).targets[0].slots
    kept = []
    for step in range(50):
        slots = tuple(
            SlotView(
                view.row._replace(name=f"churn_{step}_{k}"),
                replace(view.assessment, lag_bytes=step * 1000 + k),  # one-off figures too
            )
            for k, view in enumerate(views)
        )
        renderer.render(Snapshot((replace(PROD, slots=slots), REPLICA)))
        kept.append(renderer.cached())
    # One render's worth is about 2,000 entries (label texts, info prefixes) and its numbers;
    # what slots seen once leave behind is cut back, never accumulated.
    assert kept[0] > 2000
    assert max(kept) < 3 * kept[0]
    assert max(kept[25:]) <= max(kept[:25])


@settings(max_examples=2000, deadline=None)
@given(
    st.one_of(
        st.integers(),
        st.integers(min_value=10**5, max_value=10**17),  # where Go's exponent starts, and 2**53
        st.floats(allow_nan=True, allow_infinity=True),
        st.floats(min_value=1e5, max_value=1e17),
        st.booleans(),
    )
)
@example(999_999)
@example(1_000_000)
@example(2**53 - 1)
@example(2**53)
@example(-(2**53) + 1)
@example(-0.0)
@example(1234567.0)
@example(1e16)
def test_numbers_are_written_as_the_library_writes_them(value: float) -> None:
    assert number_line(value, repr(value)) == floatToGoString(value) + "\n"


def test_a_render_that_fails_halfway_leaves_the_next_one_right() -> None:
    renderer = _Folded()
    renderer.render(SNAPSHOT)
    moved = replace(PROD, polls_skipped=PROD.polls_skipped + 1)  # a target figure: written first
    broken = Snapshot((replace(moved, slots=(*PROD.slots, None)), REPLICA))  # type: ignore[arg-type]
    with pytest.raises(AttributeError):
        renderer.render(broken)
    fixed = Snapshot((moved, REPLICA))
    assert renderer.render(fixed) == _library(fixed)
