"""The shipped scrape, NixOS and Alertmanager configs: accepted by the real tools, consistent."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from spec_contract import ALERTS, SCRAPE_JOB

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
VM_SCRAPE = DEPLOY / "victoriametrics" / "scrape.yml"
VM_NIXOS = DEPLOY / "victoriametrics" / "nixos.nix"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"
ALERTMANAGER = DEPLOY / "alertmanager" / "alertmanager.yml"
DEFAULT_LISTEN = "127.0.0.1:9847"  # docs/contract.md §4


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: the config it checks would go unverified")
    return path


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def _slotwatch_job(scrape_configs: list[dict[str, Any]]) -> dict[str, Any]:
    jobs = [job for job in scrape_configs if job["job_name"] == SCRAPE_JOB]
    assert len(jobs) == 1
    return jobs[0]


def test_victoriametrics_accepts_the_scrape_config() -> None:
    result = _run(
        _tool("victoria-metrics"), f"-promscrape.config={VM_SCRAPE}", "-promscrape.config.dryRun"
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_victoriametrics_dry_run_rejects_a_misspelt_field(tmp_path: Path) -> None:
    # Proves the check above can fail: VictoriaMetrics parses scrape configs strictly.
    broken = tmp_path / "scrape.yml"
    broken.write_text(
        VM_SCRAPE.read_text(encoding="utf-8").replace("scrape_timeout", "scrape_timout"),
        encoding="utf-8",
    )
    result = _run(
        _tool("victoria-metrics"), f"-promscrape.config={broken}", "-promscrape.config.dryRun"
    )
    assert result.returncode != 0


def test_prometheus_accepts_the_config_and_loads_the_rules() -> None:
    result = _run(_tool("promtool"), "check", "config", str(PROMETHEUS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


def test_every_scrape_config_uses_the_job_the_rules_expect() -> None:
    for path in (VM_SCRAPE, PROMETHEUS):
        job = _slotwatch_job(yaml.safe_load(path.read_text(encoding="utf-8"))["scrape_configs"])
        assert job["static_configs"] == [{"targets": [DEFAULT_LISTEN]}]
        # honor_labels would let a scraped `job`/`instance` override the scraper's own.
        assert not job.get("honor_labels", False)


def test_nixos_snippet_scrapes_exactly_like_the_scrape_file() -> None:
    expr = f"(import {VM_NIXOS} {{}}).services.victoriametrics.prometheusConfig.scrape_configs"
    result = _run(_tool("nix-instantiate"), "--eval", "--strict", "--json", "-E", expr)
    assert result.returncode == 0, result.stderr
    from_nix = json.loads(result.stdout)
    from_yaml = yaml.safe_load(VM_SCRAPE.read_text(encoding="utf-8"))["scrape_configs"]
    assert from_nix == from_yaml


def test_alertmanager_accepts_the_config() -> None:
    result = _run(_tool("amtool"), "check-config", str(ALERTMANAGER))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("alert", sorted(ALERTS))
def test_pages_reach_the_pager_and_tickets_the_queue(alert: str) -> None:
    severity, _ = ALERTS[alert]
    receiver = {"page": "pager", "ticket": "tickets"}[severity]
    result = _run(
        _tool("amtool"),
        "config",
        "routes",
        "test",
        f"--config.file={ALERTMANAGER}",
        f"--verify.receivers={receiver}",
        f"alertname={alert}",
        f"severity={severity}",
        "target=prod",
        "slot=powersync_selfhost3_17f9",
    )
    assert result.returncode == 0, result.stdout + result.stderr
