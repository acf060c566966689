"""Settings parsing as pure functions: durations, sizes, unknown variables, DSN redaction."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from slotwatch.config.names import render
from slotwatch.config.settings import REDACTED, check_environment, known_variables, redact_dsn
from slotwatch.config.targets import TargetEntry
from slotwatch.errors import ConfigError
from slotwatch.units import parse_duration, parse_size

CANARY = "CANARY-SECRET"
URI_DSN = f"postgresql://mon:{CANARY}@h/db"
KV_DSN = f"host=h port=5432 dbname=db user=mon password={CANARY}"
MiB = 1024**2
GiB = 1024**3


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("15", 15.0),
        (15, 15.0),
        (2.5, 2.5),
        ("30s", 30.0),
        ("500ms", 0.5),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("2d", 172800.0),
        (" 1.5m ", 90.0),
        ("0", 0.0),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected a duration"),
        ("5 fortnights", "expected a duration"),
        ("1h30m", "expected a duration"),
        ("-5m", "negative"),
        (-1, "negative"),
        (True, "expected a duration"),
        (float("nan"), "finite"),
        (float("inf"), "finite"),
        ("9" * 400, "finite"),
        (None, "expected a duration"),
    ],
)
def test_bad_durations(text: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1048576", MiB),
        (1048576, MiB),
        ("0", 0),
        ("512B", 512),
        ("1KiB", 1024),
        ("1kB", 1000),
        ("16MiB", 16 * MiB),
        ("16 MiB", 16 * MiB),
        ("16mib", 16 * MiB),  # pydantic ByteSize: units in any case
        ("1.5GiB", 3 * GiB // 2),
        ("4GiB", 4 * GiB),
        ("512MB", 512 * 1000**2),
        ("1TiB", 1024**4),
        (1.5e9, 1_500_000_000),
    ],
)
def test_sizes(text: object, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("-5MiB", "negative"),
        (-1, "negative"),
        ("16 mebibytes", "expected a size"),
        ("2PiB", "at most 1PiB"),
        ("16 furlongs", "expected a size"),
        ("lots", "expected a size"),
        ("", "expected a size"),
        (False, "expected a size"),
        (float("inf"), "finite"),
        ([16], "expected a size"),
    ],
)
def test_bad_sizes(text: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_size(text)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"SLOTWATCH_DNS": "x"}, "did you mean SLOTWATCH_DSN?"),
        ({"SLOTWATCH_DSN_FIEL": "x"}, "did you mean SLOTWATCH_DSN_FILE?"),
        ({"SLOTWATCH_LOGLEVEL": "x"}, "did you mean SLOTWATCH_LOG_LEVEL?"),
        ({"SLOTWATCH_TARGETS": "[]"}, "unknown setting SLOTWATCH_TARGETS"),
        ({"slotwatch_pol_interval": "1s"}, "did you mean SLOTWATCH_POLL_INTERVAL?"),
    ],
)
def test_unknown_variables_are_refused_with_a_hint(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("?", r"\?")):
        check_environment(environ)


def test_every_spec_variable_is_known() -> None:
    spec = [
        "DSN", "DSN_FILE", "ADMIN_DSN", "ADMIN_DSN_FILE", "CONFIG", "TARGET_NAME", "SLOT_PATTERN",
        "LIVENESS_URL", "PROBE_NAME", "CONSUMER_APP", "LISTEN", "POLL_INTERVAL", "PROBE_INTERVAL",
        "PROBE_TIMEOUT", "CONNECT_TIMEOUT", "STATEMENT_TIMEOUT", "STALL_AFTER", "INACTIVE_AFTER",
        "LAG_FLOOR_BYTES", "LAG_WARN_BYTES", "AT_RISK_ETA", "WAL_BUDGET_BYTES", "AUDIT_LOG",
        "LOG_FORMAT", "LOG_LEVEL",
    ]  # fmt: skip
    check_environment({f"SLOTWATCH_{name}": "x" for name in spec})


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        (URI_DSN, f"user=mon password={REDACTED} dbname=db host=h"),
        (KV_DSN, f"user=mon password={REDACTED} dbname=db host=h port=5432"),
        ("postgresql://mon@h/db", "user=mon dbname=db host=h"),
        (f"password='{CANARY} x' host=h", f"password={REDACTED} host=h"),
        # libpq's other secret: the client key's passphrase, in either form.
        (f"host=h sslkey=/k sslpassword={CANARY}", f"host=h sslkey=/k sslpassword={REDACTED}"),
        (
            f"postgresql://mon@h/db?sslpassword={CANARY}",
            f"user=mon dbname=db host=h sslpassword={REDACTED}",
        ),
        (f"host=h password={CANARY} dbname", REDACTED),  # unparseable: nothing shown at all
    ],
)
def test_redacted_dsn(dsn: str, shown: str) -> None:
    assert redact_dsn(dsn) == shown


def _target(**values: object) -> TargetEntry:
    return TargetEntry.model_validate({"name": "prod", **values})


def test_consumer_metrics_url_is_optional_and_empty_means_unset() -> None:
    assert _target().consumer_metrics_url is None
    assert _target(consumer_metrics_url="").consumer_metrics_url is None
    url = "http://127.0.0.1:9464/metrics"
    assert _target(consumer_metrics_url=url).consumer_metrics_url == url
    assert "SLOTWATCH_CONSUMER_METRICS_URL" in known_variables()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://127.0.0.1/metrics", "http:// or https://"),
        ("not a url", "http:// or https://"),
        ("http://127.0.0.1:9464/metrics\n", "printable"),
        (f"http://user:{CANARY}@127.0.0.1:9464/metrics", "must not carry credentials"),
    ],
)
def test_a_bad_consumer_metrics_url_is_one_line_without_the_value(url: str, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        _target(consumer_metrics_url=url)
    line = render(caught.value, "targets[0].")
    assert line.startswith("targets[0].consumer_metrics_url: ")
    assert message in line
    assert CANARY not in line
    assert "\n" not in line
