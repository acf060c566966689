"""Read the shipped Grafana dashboards for tests: their panels, and their queries made runnable.

Grafana substitutes template variables before a query reaches Prometheus or VictoriaMetrics;
`runnable_queries` does the same, so the end-to-end test can send every panel query to both
servers exactly as an operator's browser would.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DASHBOARD_DIR = REPO / "grafana" / "dashboards"
DASHBOARD_PATH = DASHBOARD_DIR / "slotwatch.json"

# Grafana's built-in interval variables, with values that suit a 15s scrape interval.
BUILTINS = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h"}

_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)")


@dataclass(frozen=True, slots=True)
class PanelQuery:
    panel_id: int
    panel_title: str
    ref_id: str
    expr: str


def load_dashboard(path: Path = DASHBOARD_PATH) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return doc


def iter_panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows included, and the panels folded inside collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def substitute(expr: str, variables: Mapping[str, str]) -> str:
    """Replace `$name`, `${name}`, `${name:fmt}` and `[[name]]`; an unknown variable is an error."""

    def replace(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group is not None)
        if name not in variables:
            raise KeyError(f"query uses ${name}, which has no value: {expr}")
        return variables[name]

    return _VARIABLE.sub(replace, expr)


def runnable_queries(
    dashboard: Mapping[str, Any],
    variables: Mapping[str, str] | None = None,
) -> Iterator[PanelQuery]:
    """Every panel query with its template variables substituted.

    `variables` default to "All" for `instance`, `target` and `slot` (the regex `.*`, as the
    dashboard's allValue), the dashboard's own value for a textbox or constant variable (the
    thresholds), plus Grafana's interval built-ins; pass e.g. {"target": "default", "slot":
    "powersync_selfhost1_abcd"} to pin one, or {"__rate_interval": "30s"} for a short test.
    """
    typed = {
        v["name"]: str(v["query"])
        for v in dashboard.get("templating", {}).get("list", [])
        if v.get("type") in ("textbox", "constant")
    }
    values = {
        "instance": ".*",
        "target": ".*",
        "slot": ".*",
        **typed,
        **BUILTINS,
        **(variables or {}),
    }
    for panel in iter_panels(dashboard):
        for target in panel.get("targets", []):
            if target.get("hide"):
                continue
            yield PanelQuery(
                panel_id=panel["id"],
                panel_title=panel["title"],
                ref_id=target["refId"],
                expr=substitute(target["expr"], values),
            )
