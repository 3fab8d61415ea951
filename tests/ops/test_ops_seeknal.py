"""grafana/seeknal.json and prometheus/seeknal.rules.yml against a real Prometheus scraping a real daemon over the
seeknal fixture (the seeknal_stack fixture of conftest.py: re-dated to the stack's start, with live runs written the
way seeknal's DatabaseStateBackend writes them), every variable "All".  A query that legitimately has no data is
listed in NO_DATA with its reason, and is checked to have none (so the list cannot go stale).
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from engines.cases import SEEKNAL_FIXTURE, pynenc_expected
from ops.test_ops_dashboard import alerts, finite, operands, panels, selectors, substitute, targets, variables
from processes import http_get, promql

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "grafana" / "seeknal.json"
RULES = REPO / "prometheus" / "seeknal.rules.yml"
# Every panel has data: the fixture has a stuck running node, a held lock, successes of every node, intervals, and
# the stack's live runs give the rates and quantiles.  A panel that cannot have data goes here, where -> reason.
NO_DATA: dict[str, str] = {}
# The families with a node label (seeknal_nodes, seeknal_runs and the lock and stuck gauges have none).
NODE_FAMILIES = {
    "seeknal_node_running_since_timestamp_seconds",
    "seeknal_node_last_success_timestamp_seconds",
    "seeknal_node_executions_total",
    "seeknal_node_duration_seconds_bucket",
    "seeknal_node_rows_processed",
    "seeknal_node_completed_intervals",
    "seeknal_node_restatement_intervals_pending",
}
# Alerts active (pending or firing) on the stack: the fixture's crashed node (stuck for 2 h 10 min) and the live
# runs' failing broken_report.  Its lock is 10 minutes old and every node succeeded 10 minutes ago: not stale.
EXPECTED_ALERTS = {"SeeknalNodesStuck", "SeeknalRunFailed"}


def test_no_data_list_names_real_panels() -> None:
    assert set(NO_DATA) <= {where for where, _ in targets(DASHBOARD)}


def test_variables() -> None:
    found = variables(DASHBOARD)
    assert list(found) == ["datasource", "job", "instance", "node"]
    for name in ("job", "instance", "node"):
        variable = found[name]
        assert variable["type"] == "query"
        assert variable["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert variable["includeAll"] is True and variable["multi"] is True and variable["allValue"] == ".*"
        assert variable["query"].startswith("label_values(seeknal_")


@pytest.mark.parametrize(("where", "expr"), targets(DASHBOARD), ids=[where for where, _ in targets(DASHBOARD)])
def test_every_selector_follows_the_variables(where: str, expr: str) -> None:
    """Every selector is filtered by job and instance; by node where the family has it."""
    found = selectors(expr)
    assert found, where
    for name, matchers in found:
        assert name.startswith("seeknal_"), f"{where}: {name}"
        for variable in ("job", "instance"):
            assert f'{variable}=~"${variable}"' in matchers, f"{where}: {name}{matchers}"
        assert ('node=~"$node"' in matchers) == (name in NODE_FAMILIES), f"{where}: {name}{matchers}"


def test_dashboard_covers_every_seeknal_family() -> None:
    """The README's seeknal table, every family of it, is shown."""
    readme = (REPO / "README.md").read_text().split("### seeknal metrics", 1)[1].split("\n### ", 1)[0]
    families = set(re.findall(r"^\| `(seeknal_\w+)` \|", readme, re.M))
    assert len(families) == 12
    shown = {name for _, expr in targets(DASHBOARD) for name, _ in selectors(expr)}
    shown = {re.sub(r"_bucket$", "", name) for name in shown}
    assert shown == families
    rows = [panel["title"] for panel in panels(DASHBOARD) if panel["type"] == "row"]
    assert rows == ["Overview", "Runs and nodes", "Executions", "Durations and data"]


# ---- evaluated against the real stack ----


@pytest.mark.parametrize(("where", "expr"), targets(DASHBOARD), ids=[where for where, _ in targets(DASHBOARD)])
def test_panel_returns_data(seeknal_stack: Any, where: str, expr: str) -> None:
    query = substitute(expr, DASHBOARD)
    result = promql(seeknal_stack.prometheus, query)
    reason = NO_DATA.get(where)
    if reason:
        assert not finite(result), f"{where} is listed as without data ({reason}) but has: {result}"
    else:
        assert result, f"{where}: no data for {query!r}"
        assert finite(result), f"{where}: only NaN/Inf for {query!r}: {result}"


def test_the_dashboard_shows_the_fixture_as_it_is(seeknal_stack: Any) -> None:
    """Beyond "returns data": the fixture's stuck node, its age and its lock, its freshness, the live failures."""
    expected = pynenc_expected(SEEKNAL_FIXTURE)["database_backend"]

    def query(title: str) -> list[dict[str, Any]]:
        [(_, expr)] = [(w, e) for w, e in targets(DASHBOARD) if w == f"{title} / A"]
        return promql(seeknal_stack.prometheus, substitute(expr, DASHBOARD))

    def value(result: list[dict[str, Any]]) -> float:
        [series] = result
        return float(series["value"][1])

    elapsed = (datetime.now(seeknal_stack.start.tzinfo) - seeknal_stack.start).total_seconds()
    assert value(query("Stuck nodes")) == len(expected["stuck_running_nodes"]) == 1
    assert value(query("Locks held")) == expected["alerts"]["locks_held"] == 1
    lock_age = value(query("Oldest lock age")) - elapsed
    assert abs(lock_age - expected["alerts"]["oldest_lock_age_seconds"]) < 5, "the re-dated fixture's age"
    [running] = query("Running nodes: time since start")
    [stuck] = expected["stuck_running_nodes"]
    assert running["metric"]["node"] == stuck["node_id"]
    assert abs(float(running["value"][1]) - elapsed - stuck["age_seconds"]) < 5
    fresh = {s["metric"]["node"]: float(s["value"][1]) for s in query("Time since the last success by node")}
    assert set(fresh) == set(expected["last_success_utc_by_node"])
    # The live runs keep orders and daily_orders fresh; the other two are as the fixture left them.
    for node in ("transform.broken_report", "transform.customer_totals"):
        assert abs(fresh[node] - elapsed - expected["freshness_age_seconds_by_node"][node]) < 5, node
    assert fresh["transform.daily_orders"] < 10
    failed = {s["metric"]["node"]: float(s["value"][1]) for s in query("Failed executions by node (1h)")}
    assert failed["transform.broken_report"] > 0 and failed["transform.daily_orders"] == 0
    statuses = {s["metric"]["status"]: float(s["value"][1]) for s in query("Runs by status")}
    assert statuses["running"] == 1 and statuses["failed"] > expected["runs_by_derived_status"]["failed"]
    assert all(math.isfinite(v) for v in statuses.values())


@pytest.mark.parametrize("name", ["job", "instance", "node"])
def test_variable_query_returns_values(seeknal_stack: Any, name: str) -> None:
    match = re.fullmatch(r"label_values\((.*),\s*(\w+)\s*\)", variables(DASHBOARD)[name]["query"], re.S)
    assert match
    selector, label = substitute(match.group(1), DASHBOARD), match.group(2)
    result = promql(seeknal_stack.prometheus, f"count by ({label}) ({selector})")
    values = {series["metric"].get(label) for series in result}
    expected = {
        "job": {"seeknal-state-exporter"},
        "instance": {seeknal_stack.instance},
        "node": set(pynenc_expected(SEEKNAL_FIXTURE)["database_backend"]["last_success_utc_by_node"]),
    }
    assert values == expected[name]


# ---- the rules on the real stack ----


@pytest.mark.parametrize("rule", alerts(RULES), ids=lambda rule: rule["alert"])
def test_alert_expression_evaluates_and_its_operands_return_data(seeknal_stack: Any, rule: dict[str, Any]) -> None:
    """The full expression is valid; each side (without its threshold) has data, so the alert would fire on a
    threshold crossing rather than stay silent for lack of series."""
    expr = str(rule["expr"])
    full = promql(seeknal_stack.prometheus, expr)
    assert bool(full) == (rule["alert"] in EXPECTED_ALERTS), f"{rule['alert']}: {full}"
    for operand in operands(expr):
        result = promql(seeknal_stack.prometheus, operand)
        assert result and {s["metric"]["instance"] for s in result} == {seeknal_stack.instance}, operand
        assert finite(result), operand


def test_rules_are_healthy_and_only_the_expected_alerts_are_active(seeknal_stack: Any) -> None:
    status, body = http_get(f"{seeknal_stack.prometheus.url}/api/v1/rules")
    assert status == 200
    loaded = [rule for group in json.loads(body)["data"]["groups"] for rule in group["rules"]]
    assert len(loaded) == len(alerts(RULES))
    for rule in loaded:
        assert rule["health"] == "ok" and not rule.get("lastError"), rule
    status, body = http_get(f"{seeknal_stack.prometheus.url}/api/v1/alerts")
    active = json.loads(body)["data"]["alerts"]
    found = {(a["labels"]["alertname"], a["labels"].get("node")) for a in active}
    assert found == {("SeeknalNodesStuck", None), ("SeeknalRunFailed", "transform.broken_report")}
    assert {name for name, _ in found} == EXPECTED_ALERTS
    for alert in active:
        assert alert["labels"]["instance"] == seeknal_stack.instance
        assert set(alert["labels"]) <= {"alertname", "severity", "job", "instance", "node"}
