"""Settings parsing: durations, sizes, unknown variables, DSN checks and redaction, and the loader
itself on os.environ and a TOML file (in-process)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from psycopg import pq
from pydantic import SecretStr, ValidationError

from slotwatch.config.conninfo import ENUMERATED, ConninfoError, parse_conninfo
from slotwatch.config.files import read_small_file
from slotwatch.config.names import render
from slotwatch.config.secrets import check_dsn
from slotwatch.config.settings import (
    REDACTED,
    check_environment,
    known_variables,
    load_settings,
    parse_listen,
    redact_dsn,
)
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
        (int("1" + "0" * 400), "finite"),  # a TOML integer too large for a float
        ("\u0663\u0660s", "expected a duration"),  # 30 s in Arabic-Indic digits
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


# ---- the loader: os.environ and a TOML file, in-process ------------------------------------


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No SLOTWATCH_* variable in any case, then one DSN."""
    for name in list(os.environ):
        if name.upper().startswith("SLOTWATCH_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SLOTWATCH_DSN", "postgresql://mon@127.0.0.1/app")
    return monkeypatch


def _refused(config: Path | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    line = str(caught.value)
    assert "\n" not in line
    assert CANARY not in line
    return line


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        # float() of a TOML integer of 401 digits: OverflowError, not ValueError
        ("stall_after = 1" + "0" * 400, "config file {path}: stall_after: expected a finite"),
        ("poll_interval = 1" + "0" * 400, "config file {path}: poll_interval: expected a finite"),
        (
            '[[targets]]\nname = "a"\nstall_after = 1' + "0" * 400,
            "targets[0].stall_after: expected a finite",
        ),
        # tomllib itself: int() of more than sys.get_int_max_str_digits() digits
        (
            "lag_warn_bytes = 1" + "0" * 5000,
            "config file {path}: lag_warn_bytes (line 2): an integer of more than 4300 digits",
        ),
        # os.open: embedded null byte
        (
            r'dsn_file = "/tmp/a\u0000b"',
            "config file {path}: dsn_file: must be a path without a NUL",
        ),
        (r'audit_log = "/tmp/a\u0000b"', "config file {path}: audit_log: must be a path without"),
        (
            '[[targets]]\nname = "a"\nadmin_dsn_file = "/tmp/a\\u0000b"',
            "targets[0].admin_dsn_file: must be a path without a NUL",
        ),
        (r'slot_database = "a\u0000b"', "config file {path}: slot_database: must be printable"),
        (r'listen = "a\u0000b:9847"', "config file {path}: listen: the host must be printable"),
    ],
)
def test_a_file_value_python_cannot_take_is_one_config_error_naming_file_and_key(
    env: pytest.MonkeyPatch, tmp_path: Path, toml: str, expected: str
) -> None:
    config = tmp_path / "slotwatch.toml"
    dsn = f'dsn = "{URI_DSN}"\n' if "[[targets]]" not in toml else ""
    toml = toml.replace('name = "a"\n', f'name = "a"\ndsn = "{URI_DSN}"\n')
    config.write_text(f"{dsn}{toml}\n")
    env.delenv("SLOTWATCH_DSN")
    assert _refused(config).startswith(expected.format(path=config))


def test_a_dsn_with_a_nul_is_refused_not_cut_short() -> None:
    # libpq reads a C string: everything after the NUL would be dropped without a word.
    with pytest.raises(ConninfoError):
        parse_conninfo(f"host=h\0 password={CANARY}")


def test_a_secret_file_path_with_a_nul_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="SLOTWATCH_DSN_FILE: the path holds a NUL"):
        read_small_file(Path("a\0b"), 100, "SLOTWATCH_DSN_FILE")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        # os.environ hands bytes that are not UTF-8 over as surrogates (b"\xff" -> "\udcff")
        ("SLOTWATCH_LISTEN", "\udcff:59851"),
        ("SLOTWATCH_SLOT_DATABASE", "\udcff"),
        ("SLOTWATCH_SLOT_PATTERN", "powersync_\udcff%"),
        ("slotwatch_probe_name", "\udcff"),
    ],
)
def test_a_text_setting_that_is_not_utf8_is_refused(
    env: pytest.MonkeyPatch, name: str, value: str
) -> None:
    env.setenv(name, value)
    assert _refused() == f"{name}: must be UTF-8 text"


def test_a_file_name_that_is_not_utf8_is_still_a_file_name(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = tmp_path / "dsn-\udcff"  # a legal file name on Linux
    secret.write_text(URI_DSN)
    env.delenv("SLOTWATCH_DSN")
    env.setenv("SLOTWATCH_DSN_FILE", str(secret))
    env.setenv("SLOTWATCH_AUDIT_LOG", str(tmp_path / "audit-\udcff"))
    _, (target,) = load_settings()
    assert target.dsn.get_secret_value() == URI_DSN


@pytest.mark.parametrize(
    "listen", ["127.0.0.1:\u0669\u0668\u0664\u0667", "127.0.0.1:\uff19\uff18\uff14\uff17", "h:²"]
)
def test_a_listen_port_is_ascii_digits(listen: str) -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_listen(listen)


def test_a_dsn_port_is_ascii_digits() -> None:
    with pytest.raises(ConfigError, match="SLOTWATCH_DSN: the port is not a number"):
        check_dsn(SecretStr("host=h port=\u0665\u0664\u0663\u0662"), "SLOTWATCH_DSN")


@pytest.mark.parametrize(
    ("option", "keyword"),
    [
        ("sslmode=bogus", "sslmode"),
        ("sslmode=Require", "sslmode"),  # libpq compares case-sensitively
        ("target_session_attrs=bogus", "target_session_attrs"),
        ("gssencmode=bogus", "gssencmode"),
        ("channel_binding=bogus", "channel_binding"),
        ("load_balance_hosts=bogus", "load_balance_hosts"),
        ("sslcertmode=bogus", "sslcertmode"),
        ("sslnegotiation=bogus", "sslnegotiation"),
        ("ssl_min_protocol_version=TLSv9", "ssl_min_protocol_version"),
        ("max_protocol_version=4.0", "max_protocol_version"),
    ],
)
@pytest.mark.parametrize("form", ["uri", "key=value"])
def test_a_dsn_option_libpq_refuses_only_when_connecting_is_refused_at_load(
    option: str, keyword: str, form: str
) -> None:
    dsn = f"{URI_DSN}?{option}" if form == "uri" else f"{KV_DSN} {option}"
    with pytest.raises(ConfigError) as caught:
        check_dsn(SecretStr(dsn), "targets[1].dsn")
    line = str(caught.value)
    assert line.startswith(f"targets[1].dsn: {keyword} must be one of ")
    assert CANARY not in line
    assert option.partition("=")[2] not in line  # the value is never echoed


def test_dsn_options_libpq_accepts_pass() -> None:
    for keyword, values in ENUMERATED.items():
        for value in values:
            check_dsn(SecretStr(f"host=h {keyword}={value}"), "SLOTWATCH_DSN")
    check_dsn(SecretStr("host=h ssl_min_protocol_version=tlsv1.3"), "SLOTWATCH_DSN")


@pytest.mark.parametrize("keyword", sorted(ENUMERATED))
def test_the_enumerated_keywords_are_those_libpq_checks_with_its_values(keyword: str) -> None:
    # PQconnectStart runs libpq's option checks before any I/O: every value of the table must
    # pass them, and a value outside it must not (else the keyword has no place in the table).
    def complaint(value: str) -> str:
        conn = pq.PGconn.connect_start(f"host=/nonexistent-dir {keyword}='{value}'".encode())
        try:
            return str(conn.get_error_message())
        finally:
            conn.finish()

    def refused(value: str) -> bool:
        # `invalid sslmode value`, `invalid "ssl_min_protocol_version" value`; not a range error
        # such as a maximum TLS version below the default minimum.
        message = complaint(value)
        return f"{keyword} value" in message or f'"{keyword}" value' in message

    assert refused("bogus")
    for value in ENUMERATED[keyword]:
        assert not refused(value), value


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("slotwatch_dsn", "host=x"),
        ("Slotwatch_Dsn_File", "/nonexistent"),
        ("slotwatch_target_name", "prod"),
        ("SlotWatch_Admin_Dsn", "host=x"),
    ],
)
def test_a_per_target_variable_in_any_case_is_refused_beside_targets(
    env: pytest.MonkeyPatch, tmp_path: Path, name: str, value: str
) -> None:
    config = tmp_path / "slotwatch.toml"
    config.write_text(f'[[targets]]\nname = "a"\ndsn = "{URI_DSN}"\n')
    env.delenv("SLOTWATCH_DSN")
    env.setenv(name, value)
    assert _refused(config) == (
        f"{name} cannot apply when the config file lists [[targets]]; set it per target"
    )


def test_the_config_variable_is_read_in_any_case(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "slotwatch.toml"
    config.write_text(f'[[targets]]\nname = "from-file"\ndsn = "{URI_DSN}"\n')
    env.delenv("SLOTWATCH_DSN")
    env.setenv("slotwatch_config", str(config))
    _, (target,) = load_settings()
    assert target.name == "from-file"


def test_two_spellings_of_one_variable_are_refused() -> None:
    with pytest.raises(ConfigError, match="SLOTWATCH_DSN and slotwatch_dsn are both set"):
        check_environment({"SLOTWATCH_DSN": URI_DSN, "slotwatch_dsn": KV_DSN})


@pytest.mark.parametrize("value", ["0", "0MiB", "0.0GiB"])
def test_a_wal_budget_of_zero_is_refused(env: pytest.MonkeyPatch, value: str) -> None:
    env.setenv("SLOTWATCH_WAL_BUDGET_BYTES", value)
    assert _refused() == (
        "SLOTWATCH_WAL_BUDGET_BYTES: must be more than 0; leave it unset for none"
    )


@pytest.mark.parametrize("value", ["1.5", "0.4", "1.0001KiB", "0.3B", " 2.5 "])
def test_a_size_that_is_not_whole_bytes_is_refused(env: pytest.MonkeyPatch, value: str) -> None:
    env.setenv("SLOTWATCH_LAG_FLOOR_BYTES", value)
    assert _refused() == "SLOTWATCH_LAG_FLOOR_BYTES: must be a whole number of bytes"


def test_a_toml_float_size_that_is_not_whole_bytes_is_refused(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "slotwatch.toml"
    config.write_text("lag_floor_bytes = 0.5\n")
    assert _refused(config) == (
        f"config file {config}: lag_floor_bytes: must be a whole number of bytes"
    )


@pytest.mark.parametrize(
    ("value", "size"),
    [("1.5MiB", 3 * MiB // 2), ("0.5KiB", 512), ("1.1kB", 1100), ("2.0", 2), ("16MiB", 16 * MiB)],
)
def test_a_fractional_size_that_comes_to_whole_bytes_is_allowed(
    env: pytest.MonkeyPatch, value: str, size: int
) -> None:
    env.setenv("SLOTWATCH_LAG_FLOOR_BYTES", value)
    env.setenv("SLOTWATCH_WAL_BUDGET_BYTES", value)
    _, (target,) = load_settings()
    assert target.thresholds.lag_floor_bytes == size
    assert target.thresholds.wal_budget_bytes == size


@pytest.mark.parametrize("value", ["\u0663", "\u00b2", "1" + "0" * 5000])
def test_other_slots_top_is_ascii_digits(env: pytest.MonkeyPatch, value: str) -> None:
    env.setenv("SLOTWATCH_OTHER_SLOTS_TOP", value)
    assert _refused() == "SLOTWATCH_OTHER_SLOTS_TOP: must be a whole number from 0 (off) to 1000"
