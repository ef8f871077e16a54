"""The chart's Grafana dashboard queries only metrics the operator exports.

The exported names are not listed by hand: every module of the package that uses
prometheus_client is found in the source and imported, and the names are read from the
registry they register in (so a metric renamed in the code fails this test).
"""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import REGISTRY

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "operator"
DASHBOARD = ROOT / "helm" / "respool" / "dashboards" / "respool.json"

# PromQL words that are not metric names.
PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
    "count_values", "group", "by", "without", "on", "ignoring", "group_left", "group_right",
    "and", "or", "unless", "offset", "bool", "rate", "irate", "increase", "delta", "idelta",
    "deriv", "histogram_quantile", "clamp_min", "clamp_max", "abs", "ceil", "floor", "round",
    "label_values", "label_replace", "vector", "scalar", "time", "absent", "changes", "resets",
    "avg_over_time", "max_over_time", "min_over_time", "sum_over_time", "last_over_time",
}


def metric_modules() -> list[str]:
    """Modules of the package that use prometheus_client."""
    found = []
    for path in sorted((PACKAGE / "respool").rglob("*.py")):
        text = path.read_text()
        if re.search(r"^\s*(from prometheus_client import|import prometheus_client)", text, re.M) and \
                re.search(r"\b(Gauge|Counter|Histogram|Summary|Info|Enum)\(", text):
            found.append(".".join(path.relative_to(PACKAGE).with_suffix("").parts))
    return found


# The series names each kind of metric family is exposed as (a labelled family has no samples
# until a label set is used, so its names come from its type).
SERIES_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "unknown": ("",),
}


def exported_names() -> set[str]:
    for module in metric_modules():
        importlib.import_module(module)
    names = set()
    for family in REGISTRY.collect():
        names.update(family.name + suffix for suffix in SERIES_SUFFIXES[family.type])
        names.update(sample.name for sample in family.samples)
    return names


def queried_names(expr: str) -> set[str]:
    """The metric names in a PromQL expression (or a Grafana label_values() query)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)            # strings
    text = re.sub(r"\{[^}]*\}", "", text)                   # label matchers
    text = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", text)  # grouping labels
    text = re.sub(r"\[[^\]]*\]", "", text)                  # range selectors
    text = re.sub(r",\s*[a-zA-Z_]\w*\s*\)", ")", text)      # label_values(metric, label)
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text))
    return {w for w in words if w not in PROMQL_WORDS and not re.fullmatch(r"\d+\w*", w)}


def dashboard_queries(dashboard: dict[str, Any]) -> list[str]:
    queries = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            queries.extend(target["expr"] for target in panel.get("targets", []) if target.get("expr"))
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if variable["type"] == "query":
            queries.append(query["query"] if isinstance(query, dict) else query)
    return queries


def test_the_metric_modules_are_found() -> None:
    modules = metric_modules()
    assert "respool.controller.metrics" in modules
    assert "respool.controller.leader" in modules


def test_every_queried_metric_is_exported() -> None:
    exported = exported_names()
    assert "respool_reservations" in exported and "respool_decision_seconds_bucket" in exported
    dashboard = json.loads(DASHBOARD.read_text())
    queries = dashboard_queries(dashboard)
    assert len(queries) >= 20
    used: set[str] = set()
    for expr in queries:
        names = queried_names(expr)
        assert names, f"no metric found in {expr!r}"
        assert names <= exported, f"{expr!r} queries {sorted(names - exported)}, not exported"
        used |= names
    # Every respool metric is shown somewhere.
    respool_families = {family.name for family in REGISTRY.collect() if family.name.startswith("respool_")}
    shown = {name for name in respool_families if any(u == name or u.startswith(name + "_") for u in used)}
    assert shown == respool_families, f"not on the dashboard: {sorted(respool_families - shown)}"


def test_the_parser_sees_what_it_should() -> None:
    assert queried_names(
        'histogram_quantile(0.99, sum by (le) (rate(respool_x_bucket{job=~"$job"}[5m])))'
    ) == {"respool_x_bucket"}
    assert queried_names("label_values(respool_reservations{job=~\"$job\"}, pool)") == {"respool_reservations"}
    assert queried_names("sum(a{b=\"c\"}) / sum by (pool) (d)") == {"a", "d"}


def test_dashboard_is_well_formed() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    names = {variable["name"] for variable in dashboard["templating"]["list"]}
    assert {"datasource", "job", "pool"} <= names
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


def test_chart_ships_it_opt_in_with_the_sidecar_label() -> None:
    values = yaml.safe_load((ROOT / "helm" / "respool" / "values.yaml").read_text())
    grafana = values["metrics"]["grafanaDashboard"]
    assert grafana["enabled"] is False
    assert grafana["labels"] == {"grafana_dashboard": "1"}
    template = (ROOT / "helm" / "respool" / "templates" / "grafana-dashboard.yaml").read_text()
    assert '.Files.Get "dashboards/respool.json"' in template
    assert template.lstrip().startswith("{{- if .Values.metrics.grafanaDashboard.enabled }}")
