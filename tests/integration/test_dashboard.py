"""The shipped Grafana dashboard: true to Grafana's schema, laid out, querying contract metrics.

Grafana itself is not run here. The schema check type-checks the JSON against the TypeScript
types Grafana publishes (`@grafana/schema`, pinned in tests/dashboard-schema/package.json; run
`npm ci` there first, offline afterwards); the end-to-end test sends every query to real servers.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from alerting import metric_names_in
from dashboards import (
    DASHBOARD_PATH,
    REPO,
    iter_panels,
    load_dashboard,
    runnable_queries,
    substitute,
)
from spec_contract import METRIC_NAMES, SCRAPE_METRICS

DASHBOARD = load_dashboard()
PANELS = list(iter_panels(DASHBOARD))
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
SCHEMA_DIR = REPO / "tests" / "dashboard-schema"
TSC = SCHEMA_DIR / "node_modules" / ".bin" / "tsc"
GRID_WIDTH = 24

# What an operator needs on screen during an incident (issue: dashboard panels).
REQUIRED_METRICS = {
    "slotwatch_slot_state",
    "slotwatch_slot_retained_wal_bytes",
    "slotwatch_slot_lag_bytes",
    "slotwatch_max_slot_wal_keep_size_bytes",
    "slotwatch_slot_wal_budget_ratio",
    "slotwatch_slot_invalidation_eta_seconds",
    "slotwatch_wal_rate_bytes_per_second",
    "slotwatch_wal_written_bytes_total",
    "slotwatch_slot_flush_stall_seconds",
    "slotwatch_slot_inactive_seconds",
    "slotwatch_slot_sent_lag_bytes",
    "slotwatch_liveness_up",
    "slotwatch_liveness_touched_age_seconds",
    "slotwatch_matched_slots",
    "up",
    "slotwatch_up",
    "slotwatch_poll_duration_seconds",
    "slotwatch_poll_errors_total",
    "slotwatch_last_poll_success_timestamp_seconds",
}


# docs/contract.md §3 "Other slots", which "Who holds the WAL" reads beside the matched slots.
OTHER_SLOT_METRICS = frozenset({"slotwatch_other_slot_retained_wal_bytes"})


def _run(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=cwd, check=False)


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: the dashboard's queries would go unchecked")
    return path


def test_panel_ids_are_unique() -> None:
    ids = [panel["id"] for panel in PANELS]
    assert len(ids) == len(set(ids))


def test_panels_fit_the_grid_without_overlapping() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in PANELS:
        pos = panel["gridPos"]
        assert pos["w"] > 0
        assert pos["h"] > 0
        assert pos["x"] >= 0
        assert pos["x"] + pos["w"] <= GRID_WIDTH, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]


def test_every_panel_and_query_uses_the_datasource_variable() -> None:
    for panel in PANELS:
        assert panel.get("datasource") == DATASOURCE, panel["title"]
        for target in panel.get("targets", []):
            assert target.get("datasource", DATASOURCE) == DATASOURCE, panel["title"]
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    for name in ("target", "slot"):
        assert variables[name]["datasource"] == DATASOURCE


def test_template_variables() -> None:
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["instance"]["query"]["query"] == "label_values(slotwatch_build_info, instance)"
    assert variables["target"]["query"]["query"] == (
        'label_values(slotwatch_up{instance=~"$instance"}, target)'
    )
    assert variables["slot"]["query"]["query"] == (
        'label_values(slotwatch_slot_state{instance=~"$instance", target=~"$target"}, slot)'
    )
    for name in ("instance", "target", "slot"):
        assert variables[name]["type"] == "query"
        assert variables[name]["includeAll"]
        assert variables[name]["allValue"] == ".*"
        assert variables[name]["datasource"] == DATASOURCE


# The thresholds a panel draws come from variables set to the deployment's own settings, never
# from numbers fixed to the defaults: variable -> (the setting, its docs/contract.md §6 default
# in seconds or bytes).
THRESHOLD_VARIABLES = {
    "stall_after": ("SLOTWATCH_STALL_AFTER", "300"),
    "inactive_after": ("SLOTWATCH_INACTIVE_AFTER", "120"),
    "at_risk_eta": ("SLOTWATCH_AT_RISK_ETA", "3600"),
    "lag_warn_bytes": ("SLOTWATCH_LAG_WARN_BYTES", "268435456"),
}


def test_thresholds_are_variables_drawn_as_lines_not_numbers_fixed_to_the_defaults() -> None:
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    for name, (setting, default) in THRESHOLD_VARIABLES.items():
        assert variables[name]["type"] == "textbox", name
        assert variables[name]["query"] == default, name
        assert setting in variables[name]["description"], name
        drawn = [t["expr"] for p in PANELS for t in p.get("targets", []) if f"${name}" in t["expr"]]
        assert drawn, f"no panel draws ${name}"
        # The panels that draw it carry no fixed number beside it.
        for panel in PANELS:
            if any(f"${name}" in t["expr"] for t in panel.get("targets", [])):
                steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
                assert [step["value"] for step in steps] == [None], panel["title"]


def _panel(title: str) -> dict[str, Any]:
    return next(p for p in PANELS if p["title"] == title)


def test_an_overview_table_of_every_slot_comes_first() -> None:
    first = min(
        (p for p in PANELS if p["type"] != "row"),
        key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"]),
    )
    assert first["type"] == "table"
    assert first["gridPos"]["w"] == GRID_WIDTH
    queries = {t["refId"]: t for t in first["targets"]}
    for target in queries.values():
        assert target["instant"] is True
        assert target["format"] == "table"
        # One row per slot: every query keeps the same identifying labels.
        assert "max by (instance, target, slot" in target["expr"], target["expr"]
    used = set().union(*(metric_names_in(t["expr"]) for t in queries.values()))
    assert used >= {
        "slotwatch_slot_state",
        "slotwatch_slot_lag_bytes",
        "slotwatch_slot_retained_wal_bytes",
        "slotwatch_slot_invalidation_eta_seconds",
        "slotwatch_liveness_up",
    }
    organize = next(t for t in first["transformations"] if t["id"] == "organize")["options"]
    columns = [*organize["indexByName"]]
    assert columns[:4] == ["instance", "target", "slot", "state"]
    assert set(organize["renameByName"].values()) == {
        "lag",
        "retained WAL",
        "invalidation ETA",
        "liveness",
    }
    units = {
        o["matcher"]["options"]: {p["id"]: p["value"] for p in o["properties"]}
        for o in first["fieldConfig"]["overrides"]
    }
    assert units["lag"]["unit"] == "bytes"
    assert units["retained WAL"]["unit"] == "bytes"
    assert units["invalidation ETA"]["unit"] == "s"
    state_texts = {
        option["text"]
        for mapping in units["state"]["mappings"]
        for option in mapping["options"].values()
    }
    assert state_texts == {
        "healthy",
        "lagging",
        "snapshotting",
        "inactive",
        "wedged",
        "at_risk",
        "lost",
    }


def test_who_holds_the_wal_shows_matched_and_other_slots_and_answers_without_the_others() -> None:
    panel = _panel("Who holds the WAL")
    (target,) = panel["targets"]
    assert metric_names_in(target["expr"]) == {
        "slotwatch_slot_retained_wal_bytes",
        "slotwatch_other_slot_retained_wal_bytes",
    }
    # `or`: the matched slots alone still answer where the other slots are not exported.
    assert "\nor label_replace(slotwatch_other_slot_retained_wal_bytes" in target["expr"]
    assert panel["fieldConfig"]["defaults"]["unit"] == "bytes"
    assert panel["fieldConfig"]["defaults"]["custom"]["stacking"]["mode"] == "normal"


def _runbook_anchors() -> set[str]:
    text = (REPO / "docs" / "runbook.md").read_text()
    return {
        re.sub(r"[^a-z0-9 -]", "", line[3:].strip().lower()).replace(" ", "-")
        for line in text.splitlines()
        if line.startswith("## ")
    }


def test_every_panel_links_to_its_runbook_section() -> None:
    anchors = _runbook_anchors()
    for panel in PANELS:
        if panel["type"] == "row":
            continue
        links = panel.get("links", [])
        assert links, panel["title"]
        for link in links:
            page, _, anchor = link["url"].partition("#")
            assert page.endswith("/docs/runbook.md"), link
            assert anchor in anchors, (panel["title"], anchor)


def test_units_say_what_is_counted() -> None:
    assert _panel("Poll errors")["fieldConfig"]["defaults"]["unit"] == "cps"
    for panel in PANELS:
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
        assert unit != "reqps", panel["title"]  # slotwatch serves no requests to count


def test_every_query_follows_the_instance_picker_and_keeps_replicas_apart() -> None:
    for panel in PANELS:
        for target in panel.get("targets", []):
            expr = target["expr"]
            assert 'instance=~"$instance"' in expr, (panel["title"], expr)
            for grouping in re.findall(r"by \(([^)]*)\)", expr):
                assert "instance" in grouping.split(", "), (panel["title"], expr)


def test_every_panel_with_data_has_a_description_and_queries() -> None:
    for panel in PANELS:
        if panel["type"] == "row":
            continue
        assert panel.get("description"), panel["title"]
        assert panel.get("targets"), panel["title"]
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])


def test_queries_use_only_spec_metrics_and_show_what_an_incident_needs() -> None:
    used: set[str] = set()
    for panel in PANELS:
        for target in panel.get("targets", []):
            names = metric_names_in(target["expr"])
            assert names, (panel["title"], target["expr"])
            known = METRIC_NAMES | SCRAPE_METRICS | OTHER_SLOT_METRICS
            assert names <= known, (panel["title"], names - known)
            used |= names
    assert used >= REQUIRED_METRICS, REQUIRED_METRICS - used
    # Per-slot panels must follow the slot picker, per-target ones the target picker.
    for panel in PANELS:
        for target in panel.get("targets", []):
            names = metric_names_in(target["expr"])
            if any(n.startswith("slotwatch_slot_") for n in names):
                assert 'slot=~"$slot"' in target["expr"], panel["title"]
            if names - SCRAPE_METRICS:
                assert 'target=~"$target"' in target["expr"], panel["title"]


@pytest.mark.parametrize(
    ("expr", "variables", "expected"),
    [
        ('x{target=~"$target"}', {"target": "prod"}, 'x{target=~"prod"}'),
        ('x{target=~"${target}"}', {"target": "a|b"}, 'x{target=~"a|b"}'),
        ('x{target=~"${target:regex}"}', {"target": ".*"}, 'x{target=~".*"}'),
        ('x{slot=~"[[slot]]"}', {"slot": "s1"}, 'x{slot=~"s1"}'),
        ("rate(x[$__rate_interval])", {"__rate_interval": "1m"}, "rate(x[1m])"),
        # `$target` must not eat the start of `$targets`.
        ("$targets + $target", {"targets": "2", "target": "1"}, "2 + 1"),
    ],
)
def test_substitute(expr: str, variables: dict[str, str], expected: str) -> None:
    assert substitute(expr, variables) == expected


def test_substitute_refuses_an_unknown_variable() -> None:
    with pytest.raises(KeyError, match="nope"):
        substitute("x{a=~'$nope'}", {})


def test_runnable_queries_cover_every_query_without_variables_left() -> None:
    queries = list(runnable_queries(DASHBOARD, {"target": "prod"}))
    assert len(queries) == sum(len(p.get("targets", [])) for p in PANELS)
    for query in queries:
        assert "$" not in query.expr, query
        assert "[[" not in query.expr, query
    assert any('target=~"prod"' in q.expr for q in queries)


def test_queries_parse_as_promql_and_metricsql(tmp_path: Path) -> None:
    # Each query becomes a recording rule, so both parsers check it without a server.
    rules = [
        {"record": f"dashboard:panel{q.panel_id}_{q.ref_id}", "expr": q.expr}
        for q in runnable_queries(DASHBOARD)
    ]
    path = tmp_path / "queries.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    promtool = _run(_tool("promtool"), "check", "rules", str(path))
    assert promtool.returncode == 0, promtool.stdout + promtool.stderr
    vmalert = _run(_tool("vmalert"), "-dryRun", f"-rule={path}")
    assert vmalert.returncode == 0, vmalert.stdout + vmalert.stderr


def _typescript_check(dashboard: dict[str, Any], workdir: Path) -> subprocess.CompletedProcess[str]:
    if not TSC.exists():
        pytest.fail(f"TypeScript is not installed: run `npm ci` in {SCHEMA_DIR}")
    (workdir / "node_modules").symlink_to(SCHEMA_DIR / "node_modules", target_is_directory=True)
    (workdir / "tsconfig.json").write_text(
        json.dumps(
            {
                "compilerOptions": {
                    "strict": True,
                    "noEmit": True,
                    "module": "esnext",
                    "moduleResolution": "bundler",
                    "target": "es2022",
                    "skipLibCheck": True,
                    "types": [],
                },
                "files": ["dashboard.ts"],
            }
        )
    )
    # Panel type -> (options type, custom field config type) of its published panel schema.
    panel_types = {
        "timeseries": ("TimeSeries.Options", "TimeSeries.FieldConfig"),
        "state-timeline": ("StateTimeline.Options", "StateTimeline.FieldConfig"),
        "stat": ("Stat.Options", "Record<string, unknown>"),
        "table": ("Table.Options", "Table.FieldConfig"),
    }
    checks = []
    for panel in dashboard["panels"]:
        literal = json.dumps(panel, indent=1)
        if panel["type"] == "row":
            checks.append(f"({literal}) satisfies Json<RowPanel>;")
        else:
            options, custom = panel_types[panel["type"]]
            checks.append(
                f"({literal})"
                f" satisfies TypedPanel<{json.dumps(panel['type'])}, {options}, {custom}>;"
            )
    source = "\n".join(
        [
            'import type { Dashboard, Panel, RowPanel } from "@grafana/schema";',
            *(
                f'import type * as {module} from "@grafana/schema/dist/esm/raw/composable/'
                f'{kind.replace("-", "")}/panelcfg/x/{name}PanelCfg_types.gen";'
                for kind, module, name in (
                    ("timeseries", "TimeSeries", "TimeSeries"),
                    ("state-timeline", "StateTimeline", "StateTimeline"),
                    ("stat", "Stat", "Stat"),
                    ("table", "Table", "Table"),
                )
            ),
            # JSON holds an enum's value ("absolute"), never the member (ThresholdsMode.Absolute):
            # compare against the values, keeping every other constraint, excess keys included.
            "type Json<T> = T extends string ? (string extends T ? string : `${T}`)",
            "  : T extends readonly (infer U)[] ? Json<U>[]",
            "  : T extends object ? { [K in keyof T]: Json<T[K]> } : T;",
            "interface PrometheusQuery {",
            '  refId: string; datasource: { type: "prometheus"; uid: string }; expr: string;',
            "  legendFormat?: string; range?: boolean; instant?: boolean;",
            '  editorMode?: "code" | "builder"; hide?: boolean;',
            '  format?: "time_series" | "table" | "heatmap";',
            "}",
            "type TypedPanel<TType extends string, O, F> = Json<Panel<O, F>> &",
            "  { type: TType; targets: PrometheusQuery[]; options: Json<O>;",
            "    fieldConfig: { defaults: { custom?: Json<F> } } };",
            f"export const dashboard = ({json.dumps(dashboard, indent=1)}) satisfies"
            " Json<Dashboard>;",
            *checks,
        ]
    )
    (workdir / "dashboard.ts").write_text(source + "\n")
    return _run(str(TSC), "-p", str(workdir), cwd=workdir)


def test_dashboard_satisfies_grafanas_published_schema(tmp_path: Path) -> None:
    result = _typescript_check(DASHBOARD, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("mistake", "reported"),
    [
        ("enum value", '"absolut"'),
        ("stray key", '"gridpos"'),
        ("stat option", '"colour"'),
    ],
)
def test_schema_check_rejects_what_a_hand_edit_gets_wrong(
    mistake: str, reported: str, tmp_path: Path
) -> None:
    # Proves the schema check can fail. TypeScript reports one error per object literal, so each
    # mistake is checked on its own.
    broken = json.loads(DASHBOARD_PATH.read_text(encoding="utf-8"))
    timeseries = next(p for p in broken["panels"] if p["type"] == "timeseries")
    stat = next(p for p in broken["panels"] if p["type"] == "stat")
    if mistake == "enum value":
        timeseries["fieldConfig"]["defaults"]["thresholds"]["mode"] = "absolut"
    elif mistake == "stray key":
        timeseries["gridpos"] = timeseries["gridPos"]
    else:
        stat["options"]["colorMode"] = "colour"
    result = _typescript_check(broken, tmp_path)
    assert result.returncode != 0
    assert reported in result.stdout, result.stdout


def test_provisioning_points_at_the_dashboards_and_a_prometheus_datasource() -> None:
    provider = yaml.safe_load(
        (REPO / "grafana" / "provisioning" / "dashboards" / "slotwatch.yml").read_text()
    )
    assert provider["apiVersion"] == 1
    (entry,) = provider["providers"]
    assert entry["type"] == "file"
    assert entry["options"]["path"]
    datasources = yaml.safe_load(
        (REPO / "grafana" / "provisioning" / "datasources" / "victoriametrics.yml").read_text()
    )
    (source,) = datasources["datasources"]
    # VictoriaMetrics speaks the Prometheus query API: the dashboard's datasource variable
    # (type prometheus) lists it.
    assert source["type"] == "prometheus"
    assert source["url"].startswith("http://")
