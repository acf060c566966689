"""Properties that hold for any input: every setting, the slot pattern, drop's arguments.

Whatever an operator writes, slotwatch either accepts a value that `run` can honour or refuses
it with one line that names the setting and never repeats the value (it may be a secret).
"""

from __future__ import annotations

import argparse
import re
import string
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr, ValidationError

from slotwatch.config.names import render
from slotwatch.config.secrets import check_dsn, redact_dsn, redact_url
from slotwatch.config.settings import Settings
from slotwatch.drop.verb import SLOT_NAME, check_arguments
from slotwatch.errors import ConfigError, UsageError
from slotwatch.patterns import like_pattern, pattern_matches
from slotwatch.units import MAX_SIZE, parse_duration, parse_size

CANARY = "Qx7CANARYz"
DSN = "host=127.0.0.1 user=x dbname=x"

# (setting, lowest, highest) in seconds: the bounds `run` can honour.
DURATIONS = [
    ("poll_interval", 0.1, 86400.0),
    ("probe_interval", 0.1, 86400.0),
    ("probe_timeout", 0.1, 3600.0),
    ("connect_timeout", 1.0, 3600.0),
    ("statement_timeout", 1.0, 2147483.0),
    ("stall_after", 0.0, 365 * 86400.0),
    ("inactive_after", 0.0, 365 * 86400.0),
    ("at_risk_eta", 0.0, 365 * 86400.0),
    ("forecast_window", 0.0, 365 * 86400.0),
]
SIZES = ["lag_floor_bytes", "lag_warn_bytes", "wal_budget_bytes"]
TEXTS = ["slot_pattern", "liveness_url", "probe_name", "consumer_app", "target_name", "listen"]
CHOICES = ["log_format", "log_level"]

numbers = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(allow_nan=False, allow_infinity=False, places=3).map(str),
)
units = st.sampled_from(["", "ms", "s", "m", "h", "d", "B", "kB", "KiB", "MiB", "GiB", "TiB", "x"])
shaped = st.builds(
    lambda n, u, pad: f"{pad}{n}{u}{pad}", numbers, units, st.sampled_from(["", " "])
)
anything: st.SearchStrategy[Any] = st.one_of(
    shaped,
    numbers,
    st.text(max_size=40),
    st.booleans(),
    st.none(),
    st.text(max_size=20).map(lambda t: f"{t}{CANARY}{t}"),
)


def _load(values: dict[str, Any]) -> tuple[Settings | None, str | None]:
    """Settings from file-style values, or the one-line message the operator would read."""
    try:
        built = Settings(**{"dsn": DSN, **values})
        built.resolved_targets()
    except ValidationError as exc:
        return None, render(exc)
    except ConfigError as exc:
        return None, str(exc)
    return built, None


def _refusal_is_clean(message: str, value: object) -> None:
    assert "\n" not in message
    assert CANARY not in message
    text = str(value)
    if len(text) >= 12 and text not in message.split("'"):
        # Long free text must not be echoed (short numbers may coincide with a bound).
        assert text not in message


@pytest.mark.parametrize(("key", "low", "high"), DURATIONS, ids=[d[0] for d in DURATIONS])
@settings(max_examples=40, deadline=None)
@given(value=anything)
def test_every_duration_is_in_bounds_or_refused(
    key: str, low: float, high: float, value: object
) -> None:
    built, message = _load({key: value})
    if built is None:
        assert message is not None
        _refusal_is_clean(message, value)
        return
    if key in ("stall_after", "inactive_after", "at_risk_eta", "forecast_window"):
        (target,) = built.resolved_targets()
        seconds = getattr(target.thresholds, key)
    else:
        seconds = getattr(built, key)
    if value is None:
        return  # unset: the default, which is in bounds by the test below
    assert low <= seconds <= high


@pytest.mark.parametrize("key", SIZES)
@settings(max_examples=40, deadline=None)
@given(value=anything)
def test_every_size_is_in_bounds_or_refused(key: str, value: object) -> None:
    built, message = _load({key: value})
    if built is None:
        assert message is not None
        _refusal_is_clean(message, value)
        return
    (target,) = built.resolved_targets()
    size = getattr(target.thresholds, key)
    assert size is None or 0 <= size <= MAX_SIZE


@pytest.mark.parametrize("key", TEXTS + CHOICES)
@settings(max_examples=40, deadline=None)
@given(value=st.one_of(st.text(max_size=80), st.text(max_size=10).map(lambda t: CANARY + t)))
def test_every_text_setting_is_accepted_printable_or_refused(key: str, value: str) -> None:
    built, message = _load({key: value})
    if built is None:
        assert message is not None
        _refusal_is_clean(message, value)
        return
    (target,) = built.resolved_targets()
    for shown in (target.slot_pattern, target.probe_name, target.consumer_app, target.name):
        assert "\x00" not in shown
        assert all(c.isprintable() for c in shown)


def test_the_defaults_are_in_bounds() -> None:
    built, message = _load({})
    assert message is None
    assert built is not None
    for key, low, high in DURATIONS:
        value = getattr(built, key, None)
        if value is None:
            (target,) = built.resolved_targets()
            value = getattr(target.thresholds, key)
        assert low <= value <= high, key


@settings(max_examples=150, deadline=None)
@given(value=anything)
def test_parse_duration_returns_a_finite_non_negative_number_or_value_error(value: object) -> None:
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        error = str(exc)
    else:
        assert 0 <= seconds < float("inf")
        return
    assert CANARY not in error


@settings(max_examples=150, deadline=None)
@given(value=anything)
def test_parse_size_returns_bytes_within_the_cap_or_value_error(value: object) -> None:
    try:
        size = parse_size(value)
    except ValueError as exc:
        error = str(exc)
    else:
        assert isinstance(size, int)
        assert 0 <= size <= MAX_SIZE
        return
    assert CANARY not in error


# --- DSNs: a password never comes back, whatever it holds ---------------------------------

passwords = st.text(alphabet=string.printable.strip() + "@/?#%:", min_size=1, max_size=20).map(
    lambda t: CANARY + t
)


@settings(max_examples=200, deadline=None)
@given(password=passwords, form=st.sampled_from(["uri", "kv", "uri-sslpassword", "kv-sslpassword"]))
def test_a_dsn_password_never_reaches_a_message_or_the_redacted_form(
    password: str, form: str
) -> None:
    # `sslpassword` is libpq's other secret: the passphrase of the client's key.
    if form == "uri":
        dsn = f"postgresql://mon:{password}@127.0.0.1:5432/app"
    elif form == "uri-sslpassword":
        dsn = f"postgresql://mon@127.0.0.1:5432/app?sslkey=/k&sslpassword={password}"
    elif form == "kv":
        dsn = f"host=127.0.0.1 user=mon password={password} dbname=app"
    else:
        dsn = f"host=127.0.0.1 user=mon sslpassword={password} dbname=app"
    try:
        check_dsn(SecretStr(dsn), "SLOTWATCH_DSN")
    except ConfigError as exc:
        error = str(exc)
    else:
        # Accepted: the password sits where libpq reads one, and the redacted form hides it.
        assert CANARY not in redact_dsn(dsn)
        return
    assert CANARY not in error


@settings(max_examples=150, deadline=None)
@given(password=passwords.map(lambda p: p.replace("@", "").replace("/", "").replace("#", "")))
def test_a_liveness_url_password_is_redacted(password: str) -> None:
    url = f"http://probe:{quote(password, safe='')}@127.0.0.1:8080/probes/liveness"
    assert CANARY not in redact_url(url)


# --- the slot pattern: `%` is the only wildcard -------------------------------------------

slot_chars = st.sampled_from(list("abcdefghijklmnopqrstuvwxyz0123456789_"))
names = st.text(alphabet=slot_chars, min_size=1, max_size=63)
patterns = st.text(alphabet=st.sampled_from(list("ab_%\\.*[]^$x1")), min_size=1, max_size=12)


def _oracle(pattern: str, name: str) -> bool:
    regex = ".*".join(re.escape(part) for part in pattern.split("%"))
    return re.fullmatch(regex, name, flags=re.DOTALL) is not None


@settings(max_examples=300, deadline=None)
@given(pattern=patterns, name=st.one_of(names, patterns))
def test_pattern_matching_treats_every_character_but_percent_literally(
    pattern: str, name: str
) -> None:
    assert pattern_matches(pattern, name) == _oracle(pattern, name)


@settings(max_examples=150, deadline=None)
@given(pattern=patterns)
def test_the_like_pattern_leaves_percent_as_the_only_wildcard(pattern: str) -> None:
    like = like_pattern(pattern)
    # Outside an escape, only % is special: every _ and \ is escaped.
    i = 0
    while i < len(like):
        if like[i] == "\\":
            assert like[i + 1] in "_\\"
            i += 2
            continue
        assert like[i] != "_"
        i += 1


# --- drop's arguments -----------------------------------------------------------------------

hostile = st.one_of(
    names,
    st.text(max_size=80),
    st.text(alphabet=st.sampled_from(list("\n\r\x1b[]0123456789;m%_aZ")), max_size=40),
)


def _args(**given: Any) -> argparse.Namespace:
    base = {
        "slot": None,
        "confirm": None,
        "reason": None,
        "daemon_url": None,
        "observe": "30s",
        "deadline": "30s",
        "terminate": False,
        "force": False,
    }
    return argparse.Namespace(**{**base, **given})


@settings(max_examples=150, deadline=None)
@given(
    slot=st.one_of(st.none(), hostile),
    confirm=st.one_of(st.none(), st.just(""), hostile),
    reason=st.one_of(st.none(), hostile),
    daemon_url=st.one_of(st.none(), hostile, st.just("http://[::1"), st.just("http://127.0.0.1:1")),
)
def test_drop_arguments_are_legal_or_a_one_line_escaped_usage_error(
    slot: str | None, confirm: str | None, reason: str | None, daemon_url: str | None
) -> None:
    args = _args(slot=slot, confirm=confirm, reason=reason, daemon_url=daemon_url)
    try:
        check_arguments(args)
    except UsageError as exc:
        refused: UsageError | None = exc
    else:
        refused = None
    if refused is not None:
        assert refused.exit_code == 64
        assert all(c.isprintable() for c in str(refused)), repr(str(refused))
        return
    assert slot is None or SLOT_NAME.fullmatch(slot)
    assert confirm is None or confirm == "" or SLOT_NAME.fullmatch(confirm)
    assert reason is None or reason.isprintable()
