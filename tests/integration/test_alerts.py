"""Shipped alert rules: valid for Prometheus and vmalert, tested, true to docs/contract.md §7."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from alerting import (
    RULES_PATH,
    RULES_TEST_PATH,
    RUNBOOK_PATH,
    RUNBOOK_URL,
    iter_alerts,
    load_rules,
    metric_names_in,
    short_rules,
    write_short_rules,
)
from spec_contract import ALERTS, METRIC_NAMES, SCRAPE_JOB, SCRAPE_METRICS

RULES = load_rules()
RULES_BY_NAME: dict[str, list[dict[str, Any]]] = {}
for _rule in iter_alerts(RULES):
    RULES_BY_NAME.setdefault(_rule["alert"], []).append(_rule)


def _tool(name: str) -> str:
    # A missing binary must fail the suite, not skip it: these checks are the rules' only proof.
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed (Debian: prometheus, victoria-metrics packages)")
    return path


def _run(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=cwd, check=False)


def test_promtool_accepts_the_rules() -> None:
    result = _run(_tool("promtool"), "check", "rules", str(RULES_PATH))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {sum(len(g['rules']) for g in RULES['groups'])} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    # Run beside the file: its rule_files entry is relative.
    promtool = _tool("promtool")
    result = _run(promtool, "test", "rules", RULES_TEST_PATH.name, cwd=RULES_TEST_PATH.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_vmalert_accepts_the_rules() -> None:
    # vmalert evaluates the rules in production and parses MetricsQL, not PromQL.
    result = _run(_tool("vmalert"), "-dryRun", f"-rule={RULES_PATH}")
    assert result.returncode == 0, result.stdout + result.stderr


def test_vmalert_dry_run_rejects_a_broken_template(tmp_path: Path) -> None:
    # Proves the check above can fail: a template error must not pass unseen.
    broken = tmp_path / "broken.rules.yml"
    broken.write_text(
        RULES_PATH.read_text(encoding="utf-8").replace("{{ $labels.slot }}", "{{ $labels.slot", 1),
        encoding="utf-8",
    )
    result = _run(_tool("vmalert"), "-dryRun", f"-rule={broken}")
    assert result.returncode != 0
    assert "template" in result.stdout + result.stderr


def test_every_spec_alert_is_defined_and_nothing_else() -> None:
    assert set(RULES_BY_NAME) == set(ALERTS)


@pytest.mark.parametrize("alert", sorted(ALERTS))
def test_alert_labels_and_annotations(alert: str) -> None:
    severity, _ = ALERTS[alert]
    for rule in RULES_BY_NAME[alert]:
        assert rule["labels"]["severity"] == severity
        annotations = rule["annotations"]
        assert set(annotations) >= {"summary", "description", "runbook_url"}
        assert "\n" not in annotations["summary"].strip()
        # The description reports the figure, humanized for a reader at 3 a.m.
        assert re.search(r"\$value \| humanize", annotations["description"]), alert
        assert annotations["runbook_url"] == f"{RUNBOOK_URL}#{alert.lower()}"


def test_runbook_has_a_section_per_alert() -> None:
    # GitHub's anchor for a heading "## PowerSyncSlotWedged" is "#powersyncslotwedged".
    headings = {
        m.group(1).strip().lower()
        for m in re.finditer(r"^##\s+(.+)$", RUNBOOK_PATH.read_text(encoding="utf-8"), re.M)
    }
    missing = {a for a in ALERTS if a.lower() not in headings}
    assert not missing


def test_rules_use_only_spec_metrics_and_the_slotwatch_job() -> None:
    for name, rules in RULES_BY_NAME.items():
        for rule in rules:
            used = metric_names_in(rule["expr"])
            assert used, name
            assert used <= METRIC_NAMES | SCRAPE_METRICS, (name, used - METRIC_NAMES)
            for job in re.findall(r'job\s*=\s*"([^"]*)"', rule["expr"]):
                assert job == SCRAPE_JOB


def _unit_tests() -> list[dict[str, Any]]:
    with RULES_TEST_PATH.open(encoding="utf-8") as f:
        doc: dict[str, Any] = yaml.safe_load(f)
    tests: list[dict[str, Any]] = doc["tests"]
    return tests


@pytest.mark.parametrize("alert", sorted(ALERTS))
def test_unit_tests_fire_and_spare_every_alert(alert: str) -> None:
    """Each alert has a case that fires it, with the labels it concerns, and one that must not."""
    _, required_labels = ALERTS[alert]
    fired: list[dict[str, Any]] = []
    spared = 0
    for test in _unit_tests():
        for case in test.get("alert_rule_test", []):
            if case["alertname"] != alert:
                continue
            if case.get("exp_alerts"):
                fired.extend(case["exp_alerts"])
            else:
                spared += 1
    assert fired, f"no unit test fires {alert}"
    assert spared, f"no unit test expects {alert} to stay silent"
    for expected in fired:
        labels = expected["exp_labels"]
        assert labels["severity"] == ALERTS[alert][0]
        assert required_labels <= set(labels), (alert, labels)
        assert "state" not in labels, "the state label is the alert's name already"


def test_short_copy_keeps_everything_but_the_windows(tmp_path: Path) -> None:
    short = short_rules(RULES, for_="10s", overrides={"PowerSyncSlotWedged": "5s"})
    original = list(iter_alerts(RULES))
    shortened = list(iter_alerts(short))
    assert [r["alert"] for r in shortened] == [r["alert"] for r in original]
    for before, after in zip(original, shortened, strict=True):
        assert after["for"] == ("5s" if before["alert"] == "PowerSyncSlotWedged" else "10s")
        assert {k: v for k, v in after.items() if k != "for"} == {
            k: v for k, v in before.items() if k != "for"
        }
    # The shipped file is untouched by making a copy.
    assert next(iter_alerts(load_rules()))["for"] == "2m"
    path = write_short_rules(tmp_path / "short.rules.yml")
    for tool_argv in (
        (_tool("promtool"), "check", "rules", str(path)),
        (_tool("vmalert"), "-dryRun", f"-rule={path}"),
    ):
        result = _run(*tool_argv)
        assert result.returncode == 0, result.stdout + result.stderr
