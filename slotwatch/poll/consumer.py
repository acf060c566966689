"""Read the consumer's own Prometheus metrics (PowerSync's `telemetry.prometheus_port`).

One bounded GET (`fetch`, the same client as the liveness probe) and prometheus_client's text
parser; `read()` never raises for an expected failure (refused, timeout, non-2xx, oversized,
unparseable): each becomes a down ConsumerReading with a one-line error. Only PowerSync's
replication counters and its lag gauge are kept; what each proves is in judge/consumer.py.
"""

from __future__ import annotations

import math
import time

from prometheus_client.parser import text_string_to_metric_families

from slotwatch.model import ConsumerReading
from slotwatch.poll.fetch import fetch

# PowerSync's whole exposition is a few KiB; a MiB leaves room for storage gauges and labels.
MAX_BODY = 1024 * 1024
ACCEPT = "text/plain; version=0.0.4"

ROWS = "powersync_rows_replicated"
DATA_BYTES = "powersync_data_replicated_bytes"
TRANSACTIONS = "powersync_transactions_replicated"
CHUNKS = "powersync_chunks_replicated"
LAG = "powersync_replication_lag_seconds"


def read(url: str, timeout: float) -> ConsumerReading:
    """One reading of `url`, within `timeout` seconds overall."""
    checked_at = time.time()
    got = fetch(url, timeout=timeout, max_bytes=MAX_BODY, accept=ACCEPT)
    if got.error is not None or not got.ok:
        error = got.error or f"HTTP {got.status_code}"
        return ConsumerReading(url, checked_at, up=False, duration=got.duration, error=error)
    try:
        values = parse(got.body.decode("utf-8"))
    except NotFinite as exc:
        return ConsumerReading(url, checked_at, up=False, duration=got.duration, error=str(exc))
    except (UnicodeDecodeError, ValueError, TypeError, IndexError, KeyError) as exc:
        return ConsumerReading(
            url,
            checked_at,
            up=False,
            duration=got.duration,
            error=f"not Prometheus text ({type(exc).__name__})",
        )
    return ConsumerReading(
        url,
        checked_at,
        up=True,
        duration=got.duration,
        rows=values.get(ROWS),
        data_bytes=values.get(DATA_BYTES),
        transactions=values.get(TRANSACTIONS),
        chunks=values.get(CHUNKS),
        lag_seconds=values.get(LAG),
    )


class NotFinite(ValueError):
    """A kept family's value is NaN or infinite: it proves nothing, and must not read as a rise."""


def parse(text: str) -> dict[str, float]:
    """The kept families' values, each summed over its series; raises ValueError on bad text,
    NotFinite when a kept value is NaN or infinite (legal in the format: +Inf would otherwise
    read as rows being applied, and NaN would never compare again).

    A counter is found by its family name whether it is exposed with `_total` or without.
    """
    wanted = {ROWS, DATA_BYTES, TRANSACTIONS, CHUNKS, LAG}
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        name = family.name.removesuffix("_total")
        if name not in wanted:
            continue
        for sample in family.samples:
            if sample.name.endswith(("_created", "_bucket", "_count", "_sum")):
                continue
            values[name] = values.get(name, 0.0) + float(sample.value)
    for name, value in values.items():
        if not math.isfinite(value):
            raise NotFinite(f"{name} reads {value}, not a finite number")
    return values
