"""grafana/marianne.json and prometheus/marianne.rules.yml against a real Prometheus scraping real daemons over the
Marianne fixtures (the marianne_stack fixture of conftest.py): a workspace DB and the conductor registry, each its
own target.  Every panel query is evaluated with the ``instance`` variable set to each target, the rest "All".  A
query that legitimately has no data for a target is listed in NO_DATA with its reason, and is checked to have none
(so the list cannot go stale).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
from ops.test_ops_dashboard import alerts, finite, operands, panels, substitute, targets, variables
from processes import http_get, promql

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "grafana" / "marianne.json"
RULES = REPO / "prometheus" / "marianne.rules.yml"
TARGETS = ("workspace", "registry")
LAYOUTS = {"workspace": "workspace-v4", "registry": "registry"}
# The rows that show one kind of file.  Each file is its own target, so a workspace panel has no data on the
# registry's target and the other way round; the table of targets and layouts shows both.
WORKSPACE_ROWS = ("Jobs", "Sheets", "Durations")
REGISTRY_ROWS = ("Conductor",)
REGISTRY_ONLY = {"Conductor orphans"}  # an Overview stat over the registry's families


def row_of_panels() -> dict[str, str]:
    """Panel title -> the title of the row above it."""
    found, current = {}, ""
    for panel in panels(DASHBOARD):
        if panel["type"] == "row":
            current = panel["title"]
        else:
            found[panel["title"]] = current
    return found


def no_data() -> dict[tuple[str, str], str]:
    rows = row_of_panels()
    found = {}
    for where, _ in targets(DASHBOARD):
        title = where.rsplit(" / ", 1)[0]
        if title == "Targets and layouts":
            continue
        if rows[title] in REGISTRY_ROWS or title in REGISTRY_ONLY:
            found[("workspace", where)] = "a registry family: the workspace target emits none"
        else:
            found[("registry", where)] = "a workspace family: the conductor registry target emits none"
    return found


NO_DATA = no_data()
CASES = [(target, where, expr) for target in TARGETS for where, expr in targets(DASHBOARD)]
# Alerts active (pending or firing) on the stack: the zombie on a dead pid, the registry's lost running job, the
# workspace the registry names that is not on this machine.
EXPECTED_ALERTS = {"MarianneJobZombie", "MarianneConductorOrphanedJobs", "MarianneWorkspacesUnreadable"}
# Which target each alert's families come from.
ALERT_TARGETS = {
    "MarianneJobZombie": "workspace",
    "MarianneJobStale": "workspace",
    "MarianneConductorOrphanedJobs": "registry",
    "MarianneSheetFailureRatioHigh": "workspace",
    "MarianneWorkspacesUnreadable": "registry",
}


def test_no_data_list_is_what_the_rows_say() -> None:
    rows = set(row_of_panels().values())
    assert rows == {"Overview", *WORKSPACE_ROWS, *REGISTRY_ROWS}
    wheres = {where for where, _ in targets(DASHBOARD)}
    assert {where for _, where in NO_DATA} <= wheres
    # Every panel but the table has data on exactly one target.
    assert len(NO_DATA) == len(wheres) - 1
    assert set(ALERT_TARGETS) == {rule["alert"] for rule in alerts(RULES)}


def test_variables() -> None:
    found = variables(DASHBOARD)
    assert list(found) == ["datasource", "job", "instance"]
    for name in ("job", "instance"):
        variable = found[name]
        assert variable["type"] == "query"
        assert variable["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert variable["includeAll"] is True and variable["multi"] is True and variable["allValue"] == ".*"
        assert variable["query"].startswith('label_values(state_exporter_engine_info{engine="marianne"')


@pytest.mark.parametrize(("where", "expr"), targets(DASHBOARD), ids=[where for where, _ in targets(DASHBOARD)])
def test_every_selector_follows_the_variables(where: str, expr: str) -> None:
    text = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)|\[[^\]]*\]", " ", expr)
    found = re.findall(r"\b((?:marianne|state_exporter)_[a-z0-9_]*)\s*(\{[^}]*\})?", text)
    assert found, where
    for name, matchers in found:
        assert 'job=~"$job"' in matchers and 'instance=~"$instance"' in matchers, f"{where}: {name}{matchers}"
        if name.startswith("state_exporter_"):
            assert name == "state_exporter_engine_info" and 'engine="marianne"' in matchers, where


def test_dashboard_covers_every_marianne_family() -> None:
    exprs = " ".join(expr for _, expr in targets(DASHBOARD))
    for needle in (
        "marianne_jobs{",
        "marianne_jobs_stuck{",
        "marianne_jobs_zombie{",
        "marianne_jobs_stale{",
        "marianne_jobs_running_without_pid{",
        "marianne_sheets{",
        "marianne_sheet_failures{",
        "marianne_sheet_attempts_bucket{",
        "marianne_execution_attempts_total{",
        "marianne_job_duration_seconds_bucket{",
        "marianne_sheet_duration_seconds_bucket{",
        "marianne_job_retries_total{",
        "marianne_conductor_jobs{",
        "marianne_conductor_orphaned_jobs{",
        "marianne_conductor_jobs_stuck{",
    ):
        assert needle in exprs, needle


# ---- evaluated against the real stack, per target ----


@pytest.mark.parametrize(("target", "where", "expr"), CASES, ids=[f"{t}: {w}" for t, w, _ in CASES])
def test_panel_returns_data_for_each_target(marianne_stack: Any, target: str, where: str, expr: str) -> None:
    query = substitute(expr, DASHBOARD, {"instance": marianne_stack.instance(target)})
    result = promql(marianne_stack.prometheus, query)
    reason = NO_DATA.get((target, where))
    if reason:
        assert not result, f"{target}: {where} is listed as without data ({reason}) but has: {result}"
    else:
        assert result, f"{target}: {where}: no data for {query!r}"
        assert finite(result), f"{target}: {where}: only NaN/Inf for {query!r}: {result}"


def panel_value(stack: Any, title: str, target: str) -> float:
    [(_, expr)] = [(w, e) for w, e in targets(DASHBOARD) if w == f"{title} / A"]
    [sample] = promql(stack.prometheus, substitute(expr, DASHBOARD, {"instance": stack.instance(target)}))
    return float(sample["value"][1])


def test_the_dashboard_shows_the_fixtures_as_they_are(marianne_stack: Any) -> None:
    """Beyond "returns data": the layouts, the zombie on the dead pid, the orphans, the live job's failed sheet."""
    for target in TARGETS:
        [info] = promql(
            marianne_stack.prometheus, f'state_exporter_engine_info{{instance="{marianne_stack.instance(target)}"}}'
        )
        assert (info["metric"]["engine"], info["metric"]["layout"]) == ("marianne", LAYOUTS[target])
    assert panel_value(marianne_stack, "Running jobs", "workspace") == 1
    assert panel_value(marianne_stack, "Zombie jobs", "workspace") == 1
    assert panel_value(marianne_stack, "Stale jobs", "workspace") == 1, "the zombie is also stale"
    assert panel_value(marianne_stack, "Conductor orphans", "registry") == 2
    # The live job's sheets: one completed, one failed; the fixture's own sheets ended before Prometheus looked.
    assert panel_value(marianne_stack, "Sheet failure ratio (1h)", "workspace") == pytest.approx(0.5)
    instance = marianne_stack.instance("workspace")
    stuck = promql(marianne_stack.prometheus, f'marianne_jobs_stuck{{instance="{instance}"}}')
    assert {s["metric"]["reason"]: float(s["value"][1]) for s in stuck} == {"pid_dead": 1.0, "idle": 0.0}
    instance = marianne_stack.instance("registry")
    stuck = promql(marianne_stack.prometheus, f'marianne_conductor_jobs_stuck{{instance="{instance}"}}')
    assert {s["metric"]["reason"]: float(s["value"][1]) for s in stuck} == {"pid_dead": 0.0, "idle": 1.0}


@pytest.mark.parametrize("name", ["job", "instance"])
def test_variable_query_returns_values(marianne_stack: Any, name: str) -> None:
    match = re.fullmatch(r"label_values\((.*),\s*(\w+)\s*\)", variables(DASHBOARD)[name]["query"], re.S)
    assert match
    selector, label = substitute(match.group(1), DASHBOARD), match.group(2)
    result = promql(marianne_stack.prometheus, f"count by ({label}) ({selector})")
    values = {series["metric"].get(label) for series in result}
    expected = {
        "job": {"marianne-state-exporter"},
        "instance": {marianne_stack.instance(target) for target in TARGETS},
    }
    assert values == expected[name]


# ---- the rules on the real stack ----


@pytest.mark.parametrize("rule", alerts(RULES), ids=lambda rule: rule["alert"])
def test_alert_expression_evaluates_and_its_operands_return_data(marianne_stack: Any, rule: dict[str, Any]) -> None:
    """The full expression is valid; each side (without its threshold) has data on the target whose file it is
    about, so the alert would fire on a threshold crossing rather than stay silent for lack of series."""
    expr = str(rule["expr"])
    full = promql(marianne_stack.prometheus, expr)
    assert bool(full) == (rule["alert"] in EXPECTED_ALERTS), f"{rule['alert']}: {full}"
    for operand in operands(expr):
        result = promql(marianne_stack.prometheus, operand)
        instances = {s["metric"]["instance"] for s in result}
        assert instances == {marianne_stack.instance(ALERT_TARGETS[rule["alert"]])}, operand
        assert all(math.isfinite(float(s["value"][1])) for s in result), operand


def test_rules_are_healthy_and_only_the_expected_alerts_are_active(marianne_stack: Any) -> None:
    status, body = http_get(f"{marianne_stack.prometheus.url}/api/v1/rules")
    assert status == 200
    loaded = [rule for group in json.loads(body)["data"]["groups"] for rule in group["rules"]]
    assert len(loaded) == len(alerts(RULES))
    for rule in loaded:
        assert rule["health"] == "ok" and not rule.get("lastError"), rule
    status, body = http_get(f"{marianne_stack.prometheus.url}/api/v1/alerts")
    active = json.loads(body)["data"]["alerts"]
    found = {(a["labels"]["alertname"], a["labels"]["instance"], a["value"]) for a in active}
    assert {(name, instance) for name, instance, _ in found} == {
        (name, marianne_stack.instance(ALERT_TARGETS[name])) for name in EXPECTED_ALERTS
    }
    values = {name: float(value) for name, _, value in found}
    assert values == {
        "MarianneJobZombie": 1.0,
        "MarianneConductorOrphanedJobs": 2.0,
        "MarianneWorkspacesUnreadable": 1.0,
    }
    for alert in active:
        assert set(alert["labels"]) <= {"alertname", "severity", "job", "instance", "reason"}
