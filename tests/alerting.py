"""Access to the shipped alert rules for tests: load them, and write a copy with short `for:`.

The end-to-end test cannot wait the production `for:` windows (minutes to hours), so it loads
a generated copy in which every `for:` is shortened; the expressions, labels and annotations stay
exactly those that ship, but for a size threshold a test names explicitly (`sizes`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
RULES_PATH = REPO / "deploy" / "alerts" / "slotwatch.rules.yml"
RULES_TEST_PATH = REPO / "deploy" / "alerts" / "slotwatch.rules.test.yml"
RUNBOOK_PATH = REPO / "docs" / "runbook.md"
RUNBOOK_URL = "https://github.com/slotwatch/slotwatch/blob/main/docs/runbook.md"

_METRIC_RE = re.compile(r"\b(slotwatch_[a-z0-9_]+|up)\b(?!\s*\()")


def load_rules(path: Path = RULES_PATH) -> dict[str, Any]:
    with path.open(encoding="utf-8") as f:
        doc: dict[str, Any] = yaml.safe_load(f)
    return doc


def iter_alerts(doc: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    for group in doc["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                yield rule


def metric_names_in(expr: str) -> set[str]:
    """Every metric name a PromQL expression selects (label names in `on (...)` excluded)."""
    without_groupings = re.sub(
        r"\b(on|ignoring|by|without|group_left|group_right)\s*\([^)]*\)", "", expr
    )
    without_matchers = re.sub(r"\{[^}]*\}", "", without_groupings)
    return set(_METRIC_RE.findall(without_matchers))


def short_rules(
    doc: Mapping[str, Any],
    for_: str = "10s",
    overrides: Mapping[str, str] | None = None,
    interval: str | None = "5s",
    sizes: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, Any]:
    """A copy of the rule document with every alert's `for:` set to `for_` (or its override).

    `interval` sets each group's evaluation interval (vmalert and Prometheus both honour it),
    so a test does not depend on the evaluator's global default. `sizes` maps an alert to
    {constant as written in its expression: smaller constant}, for the thresholds "configured in
    the rule" that a test cannot fill in seconds; a constant the expression does not contain is
    an error, so the copy never silently keeps the shipped size.
    """
    overrides = overrides or {}
    sizes = sizes or {}
    groups = []
    for group in doc["groups"]:
        rules = []
        for rule in group["rules"]:
            copy = dict(rule)
            if "alert" in copy:
                copy["for"] = overrides.get(copy["alert"], for_)
                for shipped, smaller in sizes.get(copy["alert"], {}).items():
                    if copy["expr"].count(shipped) != 1:
                        raise ValueError(f"{copy['alert']}: {shipped!r} is not in its expr once")
                    copy["expr"] = copy["expr"].replace(shipped, smaller)
            rules.append(copy)
        new_group = {**group, "rules": rules}
        if interval is not None:
            new_group["interval"] = interval
        groups.append(new_group)
    return {**doc, "groups": groups}


def write_short_rules(
    dest: Path,
    for_: str = "10s",
    overrides: Mapping[str, str] | None = None,
    interval: str | None = "5s",
    sizes: Mapping[str, Mapping[str, str]] | None = None,
) -> Path:
    """Write the shortened copy of the shipped rules to `dest` and return it."""
    doc = short_rules(load_rules(), for_=for_, overrides=overrides, interval=interval, sizes=sizes)
    dest.write_text(yaml.safe_dump(doc, sort_keys=False, width=1000), encoding="utf-8")
    return dest
