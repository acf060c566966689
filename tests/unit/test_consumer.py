"""The consumer's own account: reading PowerSync's metrics text, and what its counters prove.

The reader runs against a real HTTP server on 127.0.0.1 in this process, serving text shaped like
PowerSync 1.25's OpenTelemetry exporter; the account is pure and tested with tables.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from slotwatch.judge.consumer import advance, progress_age
from slotwatch.model import ConsumerAccount, ConsumerReading, Thresholds
from slotwatch.poll import consumer
from slotwatch.report import consumer_document, consumer_text, status_table, target_document
from slotwatch.serve.collector import SlotwatchCollector
from slotwatch.serve.store import Snapshot, TargetView

POWERSYNC_TEXT = """\
# HELP target_info Target metadata
# TYPE target_info gauge
target_info{service_name="powersync"} 1
# HELP powersync_data_replicated_bytes_total Uncompressed size of replicated data
# UNIT powersync_data_replicated_bytes_total bytes
# TYPE powersync_data_replicated_bytes_total counter
powersync_data_replicated_bytes_total{otel_scope_name="powersync"} 446123456
# HELP powersync_rows_replicated_total Total number of replicated rows
# TYPE powersync_rows_replicated_total counter
powersync_rows_replicated_total{otel_scope_name="powersync"} 1000000
# HELP powersync_transactions_replicated_total Total number of replicated transactions
# TYPE powersync_transactions_replicated_total counter
powersync_transactions_replicated_total{otel_scope_name="powersync"} 17
# HELP powersync_chunks_replicated_total Total number of replication chunks
# TYPE powersync_chunks_replicated_total counter
powersync_chunks_replicated_total{otel_scope_name="powersync"} 5012
# HELP powersync_replication_lag_seconds Replication lag between the source database and PowerSync
# TYPE powersync_replication_lag_seconds gauge
powersync_replication_lag_seconds{otel_scope_name="powersync"} 41
# HELP powersync_replication_storage_size_bytes Size of current data stored in PowerSync
# TYPE powersync_replication_storage_size_bytes gauge
powersync_replication_storage_size_bytes{otel_scope_name="powersync"} 98304
"""


class _Endpoint:
    """A metrics endpoint whose reply the test sets: (status, body)."""

    def __init__(self) -> None:
        self.reply: tuple[int, bytes] = (200, POWERSYNC_TEXT.encode())
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body = endpoint.reply
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - its name
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/metrics"


@pytest.fixture
def endpoint() -> Iterator[_Endpoint]:
    server = _Endpoint()
    thread = threading.Thread(target=server.server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.server.shutdown()
        server.server.server_close()
        thread.join(timeout=5)


def test_powersync_text_is_read_into_its_counters(endpoint: _Endpoint) -> None:
    reading = consumer.read(endpoint.url, timeout=2.0)
    assert reading.up, reading.error
    assert reading.error is None
    assert reading.rows == 1_000_000
    assert reading.data_bytes == 446_123_456
    assert reading.transactions == 17
    assert reading.chunks == 5012
    assert reading.lag_seconds == 41


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        pytest.param((500, b"oops"), "HTTP 500", id="server-error"),
        pytest.param(
            (200, b"powersync_rows_replicated_total {{{ 1\n"), "not Prometheus text", id="garbage"
        ),
        pytest.param((200, b"\xff\xfe\x00"), "not Prometheus text", id="not-utf8"),
        pytest.param((200, b"#" * (consumer.MAX_BODY + 1)), "body larger than", id="oversized"),
        # Legal in the format, and no reading: +Inf would pass for rows applied, NaN never
        # compares again, and neither can be written into /status (JSON has neither).
        pytest.param(
            (200, POWERSYNC_TEXT.replace(" 1000000\n", " NaN\n").encode()),
            "powersync_rows_replicated reads nan, not a finite number",
            id="rows-nan",
        ),
        pytest.param(
            (200, POWERSYNC_TEXT.replace(" 1000000\n", " +Inf\n").encode()),
            "powersync_rows_replicated reads inf",
            id="rows-inf",
        ),
        pytest.param(
            (200, POWERSYNC_TEXT.replace(" 1000000\n", " 1" + "0" * 5000 + "\n").encode()),
            "powersync_rows_replicated reads inf",
            id="rows-5000-digits",
        ),
        pytest.param(
            (200, POWERSYNC_TEXT.replace(" 41\n", " -Inf\n").encode()),
            "powersync_replication_lag_seconds reads -inf",
            id="lag-minus-inf",
        ),
        pytest.param(
            (
                200,
                b'powersync_rows_replicated_total{a="1"} 1e308\n'
                b'powersync_rows_replicated_total{a="2"} 1e308\n',
            ),
            "powersync_rows_replicated reads inf",
            id="rows-sum-overflows",
        ),
    ],
)
def test_a_bad_answer_is_a_down_reading_with_one_line(
    endpoint: _Endpoint, reply: tuple[int, bytes], error: str
) -> None:
    endpoint.reply = reply
    reading = consumer.read(endpoint.url, timeout=2.0)
    assert not reading.up
    assert reading.error is not None
    assert error in reading.error
    assert "\n" not in reading.error
    assert reading.rows is None


def test_nobody_listening_is_a_down_reading(endpoint: _Endpoint) -> None:
    url = endpoint.url
    endpoint.server.shutdown()
    endpoint.server.server_close()
    reading = consumer.read(url, timeout=2.0)
    assert not reading.up
    assert reading.error == "connection refused or unreachable"


def test_text_without_powersync_families_carries_no_counters(endpoint: _Endpoint) -> None:
    endpoint.reply = (200, b"# TYPE other_total counter\nother_total 3\n")
    reading = consumer.read(endpoint.url, timeout=2.0)
    assert reading.up
    assert (reading.rows, reading.data_bytes, reading.lag_seconds) == (None, None, None)


def _reading(at: float, rows: float | None, *, up: bool = True) -> ConsumerReading:
    return ConsumerReading("u", at, up=up, duration=0.0, rows=rows, error=None if up else "x")


def _account(*readings: ConsumerReading) -> ConsumerAccount:
    account: ConsumerAccount | None = None
    for reading in readings:
        account = advance(account, reading)
    assert account is not None
    return account


@pytest.mark.parametrize(
    ("readings", "rising", "progress_at", "rose_by"),
    [
        pytest.param([_reading(0, 10)], False, 0, 0, id="first-reading-is-a-baseline"),
        pytest.param([_reading(0, 10), _reading(10, 90)], True, 10, 80, id="rising"),
        pytest.param(
            [_reading(0, 10), _reading(10, 90), _reading(20, 90)], False, 10, 0, id="then-flat"
        ),
        pytest.param(
            [_reading(0, 10), _reading(10, 90), _reading(20, None, up=False)],
            False,
            10,
            0,
            id="down-keeps-when-it-last-rose",
        ),
        pytest.param(
            [_reading(0, 10), _reading(10, 90), _reading(20, None, up=False), _reading(30, 95)],
            True,
            30,
            5,
            id="up-again-and-rising",
        ),
        pytest.param(
            [_reading(0, 5000), _reading(10, 12)], False, 10, 0, id="restart-is-a-new-baseline"
        ),
        pytest.param([_reading(0, None), _reading(10, None)], False, None, 0, id="no-counter"),
    ],
)
def test_the_account_says_when_rows_last_rose(
    readings: list[ConsumerReading], rising: bool, progress_at: float | None, rose_by: float
) -> None:
    account = _account(*readings)
    assert account.rising is rising
    assert account.progress_at == progress_at
    assert account.rose_by == rose_by


def test_progress_age_counts_from_the_last_rise() -> None:
    account = _account(_reading(0, 1), _reading(10, 2), _reading(20, 2), _reading(30, 2))
    assert progress_age(account, 30) == 20
    assert progress_age(_account(_reading(0, None)), 30) is None


def _view_with(account: ConsumerAccount | None) -> TargetView:
    view = TargetView(
        "prod", "powersync", "powersync_selfhost%", Thresholds(), consumer_enabled=True
    )
    return replace(view, consumer=account)


def _families(view: TargetView) -> dict[str, list[tuple[dict[str, str], float]]]:
    registry = CollectorRegistry(auto_describe=True)

    class Fixed:
        def snapshot(self) -> Snapshot:
            return Snapshot((view,))

    registry.register(SlotwatchCollector(Fixed()))  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def test_the_consumer_families_carry_the_account() -> None:
    account = _account(_reading(0, 1), _reading(10, 2), _reading(20, 2), _reading(30, 2))
    found = _families(_view_with(account))
    assert found["slotwatch_consumer_up"] == [({"target": "prod"}, 1.0)]
    assert found["slotwatch_consumer_progress_age_seconds"] == [({"target": "prod"}, 20.0)]
    down = _families(_view_with(advance(account, _reading(40, None, up=False))))
    assert down["slotwatch_consumer_up"] == [({"target": "prod"}, 0.0)]
    assert down["slotwatch_consumer_progress_age_seconds"] == [({"target": "prod"}, 30.0)]


def test_without_the_url_there_are_no_consumer_series() -> None:
    view = TargetView("prod", "powersync", "powersync_selfhost%", Thresholds())
    found = _families(view)
    assert "slotwatch_consumer_up" not in found
    assert consumer_document(view) is None
    assert target_document(view)["consumer"] is None


def test_status_shows_the_consumer_reading() -> None:
    rising = _account(
        ConsumerReading("http://127.0.0.1:9464/metrics", 0, True, 0.01, rows=10, lag_seconds=0),
        ConsumerReading("http://127.0.0.1:9464/metrics", 10, True, 0.01, rows=78010, lag_seconds=0),
    )
    view = _view_with(rising)
    document = target_document(view)["consumer"]
    assert document["up"] is True
    assert document["rows_replicated_total"] == 78010
    assert document["applying_rows"] is True
    assert document["progress_age_seconds"] == 0
    assert document["replication_lag_seconds"] == 0
    assert consumer_text(view) == (
        "consumer metrics: up, rows_replicated 78010, rose by 78000 in 10s: applying changes;"
        " PowerSync's own replication lag 0s"
    )
    assert consumer_text(_view_with(advance(rising, _reading(20, None, up=False)))) == (
        "consumer metrics: down (x)"
    )
    assert "prod: consumer metrics: up" in status_table(Snapshot((view,)))


def test_a_counter_gone_infinite_neither_rises_nor_breaks_the_status_document(
    endpoint: _Endpoint,
) -> None:
    first = consumer.read(endpoint.url, timeout=2.0)
    endpoint.reply = (200, POWERSYNC_TEXT.replace(" 1000000\n", " +Inf\n").encode())
    account = advance(advance(None, first), consumer.read(endpoint.url, timeout=2.0))
    assert not account.rising
    assert account.progress_at == first.checked_at
    document = target_document(_view_with(account))
    assert '"up": false' in json.dumps(document, allow_nan=False)
    assert (
        document["consumer"]["error"] == "powersync_rows_replicated reads inf, not a finite number"
    )
