"""`slotwatch check`'s answer is one line whose text cannot be mistaken for its perfdata."""

from __future__ import annotations

from slotwatch.model import PollError, PollResult, Thresholds
from slotwatch.report import check_result
from slotwatch.serve.store import Snapshot, TargetView


def _line(view: TargetView) -> tuple[int, str]:
    return check_result(Snapshot((view,)))


def test_a_pattern_with_a_bar_does_not_start_the_perfdata() -> None:
    # Monitoring systems split the line at its first `|`: a pattern's own would cut the summary.
    view = TargetView("prod", "powersync", "power|sync%", Thresholds(), up=True)
    code, line = _line(view)
    assert code == 2
    assert line.count("|") == 1
    summary, perfdata = line.split(" | ")
    assert "no slot matches 'power\u00a6sync%'" in summary
    assert perfdata == "'prod_matched_slots'=0;;1:2"


def test_a_message_with_a_newline_or_an_escape_stays_one_inert_line() -> None:
    error = PollError("query", "permission denied\nDETAIL: \x1b[31mred | x")
    poll = PollResult("prod", 0.0, 0.1, error=error)
    view = TargetView("prod", "powersync", "powersync%", Thresholds(), last_poll=poll)
    code, line = _line(view)
    assert code == 3
    assert "\n" not in line
    assert "\x1b" not in line
    assert "|" not in line
    assert "permission denied\\x0aDETAIL: \\x1b[31mred \u00a6 x" in line
