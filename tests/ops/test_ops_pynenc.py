"""grafana/pynenc.json and prometheus/pynenc.rules.yml against a real Prometheus scraping real daemons over EACH
pynenc fixture (the pynenc_stack fixture of conftest.py): the ``instance`` variable is set to the daemon serving
that fixture, the rest to "All".  A query that legitimately has no data for a fixture is listed in NO_DATA with its
reason, and is checked to have none (so the list cannot go stale).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
from engines.cases import PYNENC_FIXTURES
from ops.test_ops_dashboard import alerts, finite, operands, panels, selectors, substitute, targets, variables
from processes import http_get, promql

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "grafana" / "pynenc.json"
RULES = REPO / "prometheus" / "pynenc.rules.yml"
FIXTURES = list(PYNENC_FIXTURES)
LAYOUTS = {fixture: layout for fixture, (layout, _) in PYNENC_FIXTURES.items()}
# Every panel has data for every fixture: each has a running invocation on a dead runner (the runners' heartbeats
# are from the day the samples were written), two messages left in the default queue, failures, retries, and the
# live finishes of the stack.  A panel that cannot have data for a fixture goes here, (fixture, where) -> reason.
NO_DATA: dict[tuple[str, str], str] = {}
CASES = [(fixture, where, expr) for fixture in FIXTURES for where, expr in targets(DASHBOARD)]
# The families with a task label (pynenc_invocations_stuck has none: it is per app and reason).
TASK_FAMILIES = {
    "pynenc_invocations",
    "pynenc_invocations_finished_total",
    "pynenc_invocation_failures_total",
    "pynenc_invocation_retries_total",
    "pynenc_invocation_run_duration_seconds_bucket",
    "pynenc_invocation_queue_wait_seconds_bucket",
}
# Alerts active (pending or firing) on the stack: the fixtures' dead-runner invocation and old broker messages.
EXPECTED_ALERTS = {"PynencRunnerDeadWithWork", "PynencBrokerBacklogOld"}


def test_no_data_list_names_real_panels() -> None:
    wheres = {where for where, _ in targets(DASHBOARD)}
    assert {where for _, where in NO_DATA} <= wheres
    assert {fixture for fixture, _ in NO_DATA} <= set(FIXTURES)


def test_variables() -> None:
    found = variables(DASHBOARD)
    assert list(found) == ["datasource", "job", "instance", "app", "task", "queue"]
    for name in ("job", "instance", "app", "task", "queue"):
        variable = found[name]
        assert variable["type"] == "query"
        assert variable["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert variable["includeAll"] is True and variable["multi"] is True and variable["allValue"] == ".*"
        assert variable["query"].startswith("label_values(pynenc_")


@pytest.mark.parametrize(("where", "expr"), targets(DASHBOARD), ids=[where for where, _ in targets(DASHBOARD)])
def test_every_selector_follows_the_variables(where: str, expr: str) -> None:
    """Every selector is filtered by job, instance and app; by task and queue where the family has them."""
    found = selectors(expr)
    assert found, where
    for name, matchers in found:
        assert name.startswith("pynenc_"), f"{where}: {name}"
        for variable in ("job", "instance", "app"):
            assert f'{variable}=~"${variable}"' in matchers, f"{where}: {name}{matchers}"
        if name in TASK_FAMILIES:
            assert 'task=~"$task"' in matchers, f"{where}: {name}{matchers}"
        if name.startswith("pynenc_broker_"):
            assert 'queue=~"$queue"' in matchers, f"{where}: {name}{matchers}"


def test_dashboard_covers_the_issue_areas() -> None:
    exprs = " ".join(expr for _, expr in targets(DASHBOARD))
    assert {name for _, expr in targets(DASHBOARD) for name, _ in selectors(expr)} >= TASK_FAMILIES
    for needle in (
        "pynenc_invocations{",
        "pynenc_runs{",
        "pynenc_invocations_finished_total{",
        "pynenc_invocation_failures_total{",
        "pynenc_invocation_retries_total{",
        "pynenc_invocation_run_duration_seconds_bucket{",
        "pynenc_invocation_queue_wait_seconds_bucket{",
        "pynenc_run_duration_seconds_bucket{",
        "pynenc_invocations_stuck{",
        "pynenc_runners{",
        "pynenc_runner_last_heartbeat_timestamp_seconds{",
        "pynenc_broker_queue_depth{",
        "pynenc_broker_oldest_message_timestamp_seconds{",
        "pynenc_app_info{",
    ):
        assert needle in exprs, needle
    rows = [panel["title"] for panel in panels(DASHBOARD) if panel["type"] == "row"]
    assert rows == ["Overview", "Invocations", "Failures", "Durations", "Runners and queues"]


# ---- evaluated against the real stack, per fixture ----


@pytest.mark.parametrize(
    ("fixture", "where", "expr"), CASES, ids=[f"{Path(fixture).stem}: {where}" for fixture, where, _ in CASES]
)
def test_panel_returns_data_for_each_fixture(pynenc_stack: Any, fixture: str, where: str, expr: str) -> None:
    query = substitute(expr, DASHBOARD, {"instance": pynenc_stack.instance(fixture)})
    result = promql(pynenc_stack.prometheus, query)
    reason = NO_DATA.get((fixture, where))
    if reason:
        assert not finite(result), f"{fixture}: {where} is listed as without data ({reason}) but has: {result}"
    else:
        assert result, f"{fixture}: {where}: no data for {query!r}"
        assert finite(result), f"{fixture}: {where}: only NaN/Inf for {query!r}: {result}"


@pytest.mark.parametrize("fixture", FIXTURES)
def test_the_dashboard_shows_each_fixture_as_it_is(pynenc_stack: Any, fixture: str) -> None:
    """Beyond "returns data": the app, its layout, the live finishes (add succeeded, divide failed)."""
    instance = pynenc_stack.instance(fixture)
    [info] = promql(pynenc_stack.prometheus, f'pynenc_app_info{{instance="{instance}"}}')
    assert (info["metric"]["app"], info["metric"]["layout"]) == ("seed_app", LAYOUTS[fixture])
    [(_, expr)] = [(w, e) for w, e in targets(DASHBOARD) if w == "Failure ratio by task (30m) / A"]
    result = promql(pynenc_stack.prometheus, substitute(expr, DASHBOARD, {"instance": instance}))
    ratios = {s["metric"]["task"]: float(s["value"][1]) for s in result}
    # Only the tasks that finished something in 30 minutes have a ratio: the live ones (the fixture's history was
    # seeded, not seen finishing).  Tasks with a failed series but no finish in the window are 0/0.
    assert {task: r for task, r in ratios.items() if math.isfinite(r)} == {
        "seed_tasks.add": 0.0,
        "seed_tasks.divide": 1.0,
    }


@pytest.mark.parametrize("name", ["job", "instance", "app", "task", "queue"])
def test_variable_query_returns_values(pynenc_stack: Any, name: str) -> None:
    match = re.fullmatch(r"label_values\((.*),\s*(\w+)\s*\)", variables(DASHBOARD)[name]["query"], re.S)
    assert match
    selector, label = substitute(match.group(1), DASHBOARD), match.group(2)
    result = promql(pynenc_stack.prometheus, f"count by ({label}) ({selector})")
    values = {series["metric"].get(label) for series in result}
    expected = {
        "job": {"pynenc-state-exporter"},
        "instance": {pynenc_stack.instance(fixture) for fixture in FIXTURES},
        "app": {"seed_app"},
        "queue": {"default"},
    }
    if name == "task":
        assert {"seed_tasks.add", "seed_tasks.divide", "seed_tasks.sleepy"} <= values
    else:
        assert values == expected[name]


# ---- the rules on the real stack ----


@pytest.mark.parametrize("rule", alerts(RULES), ids=lambda rule: rule["alert"])
def test_alert_expression_evaluates_and_its_operands_return_data(pynenc_stack: Any, rule: dict[str, Any]) -> None:
    """The full expression is valid; each side (without its threshold) has data for every fixture, so the alert
    would fire on a threshold crossing rather than stay silent for lack of series."""
    expr = str(rule["expr"])
    full = promql(pynenc_stack.prometheus, expr)
    assert bool(full) == (rule["alert"] in EXPECTED_ALERTS), f"{rule['alert']}: {full}"
    for operand in operands(expr):
        result = promql(pynenc_stack.prometheus, operand)
        assert {s["metric"]["instance"] for s in result} == set(map(pynenc_stack.instance, FIXTURES)), operand


def test_rules_are_healthy_and_only_the_expected_alerts_are_active(pynenc_stack: Any) -> None:
    status, body = http_get(f"{pynenc_stack.prometheus.url}/api/v1/rules")
    assert status == 200
    loaded = [rule for group in json.loads(body)["data"]["groups"] for rule in group["rules"]]
    assert len(loaded) == len(alerts(RULES))
    for rule in loaded:
        assert rule["health"] == "ok" and not rule.get("lastError"), rule
    status, body = http_get(f"{pynenc_stack.prometheus.url}/api/v1/alerts")
    active = json.loads(body)["data"]["alerts"]
    assert {alert["labels"]["alertname"] for alert in active} == EXPECTED_ALERTS
    by_instance = {pynenc_stack.instance(fixture): fixture for fixture in FIXTURES}
    found = {(by_instance[a["labels"]["instance"]], a["labels"]["alertname"], a["labels"]["app"]) for a in active}
    assert found == {(f, name, "seed_app") for f in FIXTURES for name in EXPECTED_ALERTS}
    for alert in active:
        assert set(alert["labels"]) <= {"alertname", "severity", "job", "instance", "app", "reason", "queue", "task"}
