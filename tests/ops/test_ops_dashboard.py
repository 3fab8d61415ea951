"""grafana/: importable dashboards and their provisioning files; every panel target of the Flujo dashboard and
every alert expression of both rules files, evaluated by a real Prometheus that scrapes real daemons over copies of
the real Flujo fixtures (the ops_stack fixture of conftest.py), returns data, and the rules run without errors.
The overview dashboard's queries are checked per fixture in test_ops_overview.py, the pynenc dashboard's (and
rules') against the daemons over the pynenc fixtures in test_ops_pynenc.py, the seeknal dashboard's (and rules')
against the daemon over the seeknal fixture in test_ops_seeknal.py, the Marianne dashboard's (and rules') against
the daemons over the Marianne fixtures in test_ops_marianne.py.

Grafana's variables are substituted the way Grafana does for "All" (``.*``); ``$__rate_interval`` becomes 1m,
which covers the test's whole life at a 1 s scrape interval.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from processes import http_get, promql
from support import ALL_FIXTURES, SMALL, SMALL06

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "prometheus" / "flujo.rules.yml"
RULE_FILES = (REPO / "prometheus" / "workflow.rules.yml", RULES)
DASHBOARD = REPO / "grafana" / "flujo-state-exporter.json"
OVERVIEW = REPO / "grafana" / "workflow-overview.json"
PYNENC = REPO / "grafana" / "pynenc.json"
SEEKNAL = REPO / "grafana" / "seeknal.json"
DASHBOARDS = {"flujo-state-exporter": DASHBOARD, "workflow-overview": OVERVIEW, "pynenc": PYNENC, "seeknal": SEEKNAL}
MARIANNE = REPO / "grafana" / "marianne.json"
DASHBOARDS["marianne"] = MARIANNE
PROVISIONING = REPO / "grafana" / "provisioning"
JOB = "flujo-state-exporter"
GRAFANA_INTERVALS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "5m"}
# Alerts the stack is expected to be in: the fixtures hold runs stuck for days, active runs last updated days ago
# and running background tasks last updated days ago; everything else is healthy (the span export recovered, every
# job succeeds, runs keep finishing).
EXPECTED_ALERTS = {"FlujoRunsStuck", "FlujoBackgroundTasksStale", "WorkflowRunsStuck", "WorkflowOldestActiveRunIdle"}


IDLE_ALERT = "WorkflowOldestActiveRunIdle"


def dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def panels(path: Path = DASHBOARD) -> list[dict[str, Any]]:
    found = []
    for panel in dashboard(path)["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def targets(path: Path = DASHBOARD) -> list[tuple[str, str]]:
    """(panel title / refId, expression) of every panel target."""
    return [
        (f"{panel['title']} / {target['refId']}", target["expr"])
        for panel in panels(path)
        for target in panel.get("targets", [])
    ]


def variables(path: Path = DASHBOARD) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard(path)["templating"]["list"]}


def substitute(expr: str, path: Path = DASHBOARD, values: dict[str, str] | None = None) -> str:
    """Grafana's substitution: each variable's value from ``values``, else "All" (allValue ``.*``)."""
    for name, value in GRAFANA_INTERVALS.items():
        expr = expr.replace(name, value)
    for name in variables(path):
        if name != "datasource":
            value = (values or {}).get(name, ".*")
            expr = re.sub(rf"\$\{{?{name}\}}?\b", lambda _, value=value: value, expr)
    assert "$" not in expr, f"unsubstituted variable in {expr!r}"
    return expr


def alerts(*paths: Path) -> list[dict[str, Any]]:
    """The alerting rules of ``paths`` (default: the Flujo and engine-neutral files)."""
    data = [yaml.safe_load(path.read_text()) for path in paths or RULE_FILES]
    return [rule for rules in data for group in rules["groups"] for rule in group["rules"] if "alert" in rule]


def selectors(expr: str) -> list[tuple[str, str]]:
    """(metric, matchers) of every selector; a metric without braces has empty matchers."""
    text = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)|\[[^\]]*\]", " ", expr)
    found = []
    for match in re.finditer(r"\b([a-z_][a-z0-9_]*)\s*(\{[^}]*\})?", text):
        name, braces = match.group(1), match.group(2)
        if name in {"sum", "min", "max", "rate", "increase", "histogram_quantile", "time", "or", "and", "unless"}:
            continue
        found.append((name, braces or ""))
    return found


# ---- splitting alert expressions into what each side selects ----


def split_top_level(expr: str, words: tuple[str, ...]) -> list[str]:
    """Split ``expr`` at the binary operators ``words`` outside parentheses, braces, brackets and strings."""
    parts, depth, start, i, quote = [], 0, 0, 0, ""
    while i < len(expr):
        char = expr[i]
        if quote:
            if char == "\\":
                i += 1
            elif char == quote:
                quote = ""
        elif char in "\"'`":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif depth == 0:
            match = re.match(rf"\b({'|'.join(words)})\b", expr[i:])
            if match and (i == 0 or not (expr[i - 1].isalnum() or expr[i - 1] == "_")):
                parts.append(expr[start:i])
                i += len(match.group(1))
                start = i
                continue
        i += 1
    parts.append(expr[start:])
    return [p.strip() for p in parts]


def operands(expr: str) -> list[str]:
    """The selecting parts of an alert expression: each side of and/or/unless, without its matching modifier and
    its threshold comparison; absent(x) is x (absent is empty while x is present, as it should be)."""
    found = []
    for part in split_top_level(expr, ("and", "or", "unless")):
        part = re.sub(r"^(?:on|ignoring)\s*\([^)]*\)\s*(?:group_(?:left|right)\s*(?:\([^)]*\))?)?", "", part).strip()
        part = re.sub(r"\s*(?:==|!=|>=|<=|>|<)\s*(?:bool\s+)?[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?$", "", part)
        absent = re.fullmatch(r"absent\((.*)\)", part.strip(), re.S)
        found.append((absent.group(1) if absent else part).strip())
    return found


def test_operands() -> None:
    """Control for the splitter used below."""
    assert operands('(a{x="and"} / b) > 0.25\nand\nsum by (job) (increase(c[30m])) >= 5') == [
        '(a{x="and"} / b)',
        "sum by (job) (increase(c[30m]))",
    ]
    assert operands("s == 0 unless on (job, instance) r == 0") == ["s", "r"]
    assert operands('absent(up{job="j"})') == ['up{job="j"}']
    assert operands("time() - t > 7200") == ["time() - t"]
    assert operands("band_x > 1 or sand") == ["band_x", "sand"]


# ---- the dashboard file ----


@pytest.mark.parametrize(("uid", "path"), DASHBOARDS.items(), ids=list(DASHBOARDS))
def test_dashboard_is_importable(uid: str, path: Path) -> None:
    data = dashboard(path)
    assert data["uid"] == uid and len(data["uid"]) <= 40
    assert data["title"] and data["schemaVersion"] >= 36
    assert "id" not in data or data["id"] is None, "an importable dashboard has no database id"
    assert "__inputs" not in data, "the data source is a template variable, so provisioning works as well"
    assert "${DS_" not in path.read_text()
    datasource = variables(path)["datasource"]
    assert datasource["type"] == "datasource" and datasource["query"] == "prometheus"
    ids = [p["id"] for p in panels(path)]
    assert len(ids) == len(set(ids))
    titles = [p["title"] for p in panels(path)]
    assert len(titles) == len(set(titles)), "targets are named by panel title"
    titles = [d["title"] for d in map(dashboard, DASHBOARDS.values())]
    assert titles == ["Flujo state", "Workflow overview", "pynenc state", "seeknal state", "Marianne state"]


def test_variables() -> None:
    found = variables()
    assert list(found) == ["datasource", "job", "instance", "pipeline"]
    for name in ("job", "instance", "pipeline"):
        variable = found[name]
        assert variable["type"] == "query"
        assert variable["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert variable["includeAll"] is True and variable["multi"] is True and variable["allValue"] == ".*"
        assert variable["query"].startswith("label_values(")
    assert "flujo_runs_finished_total" in found["pipeline"]["query"]


@pytest.mark.parametrize("path", DASHBOARDS.values(), ids=list(DASHBOARDS))
def test_every_panel_uses_the_datasource_variable_and_fits_the_grid(path: Path) -> None:
    occupied: set[tuple[int, int]] = set()
    for panel in panels(path):
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        x0, y0 = grid["x"], grid["y"]
        cells = {(x, y) for x in range(x0, x0 + grid["w"]) for y in range(y0, y0 + grid["h"])}
        assert not cells & occupied, f"{panel['title']} overlaps another panel"
        occupied |= cells
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
            assert target["expr"].strip()
        assert panel.get("description"), f"{panel['title']}: say what it shows"


def test_dashboard_covers_the_issue_areas() -> None:
    exprs = " ".join(expr for _, expr in targets())
    rows = {p["title"] for p in panels() if p["type"] == "row"}
    assert {"Runs", "Failures", "Durations", "Stuck and paused runs", "Background tasks", "Span export"} <= rows
    assert "Exporter health" in rows
    for needle in (
        "flujo:runs_finished:rate5m",  # runs by status
        "flujo:pipeline_failure_ratio:rate30m",  # failure ratio
        "flujo:run_duration_seconds:p95_rate1h",  # durations
        "flujo_workflows_stuck",  # stuck runs
        'status="paused"',  # paused runs
        "flujo_background_tasks",
        "state_exporter_span_export_failures_total",
        "state_exporter_collector_success",
    ):
        assert needle in exprs, needle


def test_provisioning_files() -> None:
    text = (PROVISIONING / "dashboards.yaml").read_text()
    assert all(path.name in text for path in DASHBOARDS.values()), "the provisioning file names every dashboard"
    assert {path.name for path in DASHBOARD.parent.glob("*.json")} == {path.name for path in DASHBOARDS.values()}
    dashboards = yaml.safe_load(text)
    assert dashboards["apiVersion"] == 1
    [provider] = dashboards["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/")
    datasources = yaml.safe_load((PROVISIONING / "datasources.yaml").read_text())
    assert datasources["apiVersion"] == 1
    [source] = datasources["datasources"]
    assert source["type"] == "prometheus" and source["access"] == "proxy" and source["url"].startswith("http")


# ---- evaluated against the real stack ----


def finite(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(series["value"][1])) for series in result)


@pytest.mark.parametrize(("where", "expr"), targets(), ids=[where for where, _ in targets()])
def test_panel_returns_data(ops_stack: Any, where: str, expr: str) -> None:
    result = promql(ops_stack.prometheus, substitute(expr))
    assert result, f"{where}: no data for {substitute(expr)!r}"
    assert finite(result), f"{where}: only NaN/Inf for {substitute(expr)!r}: {result}"


@pytest.mark.parametrize("name", ["job", "instance", "pipeline"])
def test_variable_query_returns_values(ops_stack: Any, name: str) -> None:
    match = re.fullmatch(r"label_values\((.*),\s*(\w+)\s*\)", variables()[name]["query"], re.S)
    assert match
    selector, label = substitute(match.group(1)), match.group(2)
    result = promql(ops_stack.prometheus, f"count by ({label}) ({selector})")
    values = {series["metric"].get(label) for series in result}
    if name == "job":
        assert values == {JOB}
    elif name == "instance":
        assert values == {d.url.removeprefix("http://") for d in ops_stack.daemons.values()}
    else:  # pipelines of workflows (doc_ingest) and of runs without workflow rows (adhoc_query, 0.6 fixture)
        assert {"doc_ingest", "long_job", "adhoc_query", "etl_daily"} <= values


@pytest.mark.parametrize("rule", alerts(), ids=lambda rule: rule["alert"])
def test_alert_expression_evaluates_and_its_operands_return_data(ops_stack: Any, rule: dict[str, Any]) -> None:
    """The full expression is valid; each side (without its threshold) has data on the fixtures, so the alert
    would fire on a threshold crossing rather than stay silent for lack of series."""
    expr = str(rule["expr"])
    full = promql(ops_stack.prometheus, expr)
    assert bool(full) == (rule["alert"] in EXPECTED_ALERTS), f"{rule['alert']}: {full}"
    for operand in operands(expr):
        assert promql(ops_stack.prometheus, operand), f"{rule['alert']}: no data for {operand!r}"


def test_rules_are_healthy_and_only_the_expected_alerts_are_active(ops_stack: Any) -> None:
    status, body = http_get(f"{ops_stack.prometheus.url}/api/v1/rules")
    assert status == 200
    groups = json.loads(body)["data"]["groups"]
    loaded = [rule for group in groups for rule in group["rules"]]
    assert len(loaded) == sum(len(g["rules"]) for p in RULE_FILES for g in yaml.safe_load(p.read_text())["groups"])
    for rule in loaded:
        assert rule["health"] == "ok" and not rule.get("lastError"), rule
    status, body = http_get(f"{ops_stack.prometheus.url}/api/v1/alerts")
    active = json.loads(body)["data"]["alerts"]
    assert {alert["labels"]["alertname"] for alert in active} == EXPECTED_ALERTS, [
        a for a in active if a["labels"]["alertname"] not in EXPECTED_ALERTS
    ]
    stuck = {a["labels"]["pipeline"] for a in active if a["labels"]["alertname"] == "FlujoRunsStuck"}
    assert {"long_job", "doc_ingest"} <= stuck
    # The engine-neutral alerts: the 0.4.35 and 0.6 fixtures' idle runs; the old active runs of all three.
    by_instance = {ops_stack.instance(name): name for name in ops_stack.fixtures.values()}
    stuck = {
        (by_instance[a["labels"]["instance"]], a["labels"]["engine"], a["labels"]["reason"])
        for a in active
        if a["labels"]["alertname"] == "WorkflowRunsStuck"
    }
    assert stuck == {(SMALL, "flujo", "idle"), (SMALL06, "flujo", "idle")}
    idle = {by_instance[a["labels"]["instance"]] for a in active if a["labels"]["alertname"] == IDLE_ALERT}
    assert idle == set(ALL_FIXTURES)
