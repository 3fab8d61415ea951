"""grafana/workflow-overview.json, the engine-neutral dashboard: its variables, its selectors, and every panel query
evaluated by a real Prometheus scraping the real daemons (the ops_stack fixture of conftest.py) over EACH Flujo
fixture: the ``instance`` variable is set to the daemon serving that fixture, ``engine`` to ``flujo``, the rest to
"All".  A query that legitimately has no data for a fixture is listed in NO_DATA with its reason, and is checked to
have none (so the list cannot go stale).
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from ops.test_ops_dashboard import OVERVIEW, finite, panels, selectors, substitute, targets, variables
from processes import promql
from support import ALL_FIXTURES, LEGACY, SMALL, SMALL06

ENGINE = "flujo"
LAYOUTS = {SMALL: "0.4.35", SMALL06: "0.6", LEGACY: "0.4.32-legacy"}
# Flujo 0.4.32 has no `runs` table: no run is ever seen finishing, so there is no failure ratio (no finished run
# in the window) and no duration (the histogram has no observation, its quantiles are NaN).
NO_FINISHED_RUNS = "0.4.32 legacy layout: no runs table, so no run is seen finishing"
NO_DATA = {
    (LEGACY, "Failure ratio (30m) / A"): NO_FINISHED_RUNS,
    (LEGACY, "Failure ratio by engine (30m) / A"): NO_FINISHED_RUNS,
    (LEGACY, "Run duration p50, p90 and p99 (1h) / A"): NO_FINISHED_RUNS,
    (LEGACY, "Run duration p50, p90 and p99 (1h) / B"): NO_FINISHED_RUNS,
    (LEGACY, "Run duration p50, p90 and p99 (1h) / C"): NO_FINISHED_RUNS,
    (LEGACY, "Mean run duration (1h) / A"): NO_FINISHED_RUNS,
    (LEGACY, "Runs finished per second by phase / A"): NO_FINISHED_RUNS,
    (LEGACY, "Runs finished in 30 minutes by phase / A"): NO_FINISHED_RUNS,
    (LEGACY, "Failed runs per second by engine / A"): NO_FINISHED_RUNS,
}
CASES = [(fixture, where, expr) for fixture in ALL_FIXTURES for where, expr in targets(OVERVIEW)]


def test_no_data_list_names_real_panels() -> None:
    wheres = {where for where, _ in targets(OVERVIEW)}
    assert {where for _, where in NO_DATA} <= wheres
    assert {fixture for fixture, _ in NO_DATA} <= set(ALL_FIXTURES)


def test_variables() -> None:
    found = variables(OVERVIEW)
    assert list(found) == ["datasource", "job", "instance", "engine"]
    for name in ("job", "instance", "engine"):
        variable = found[name]
        assert variable["type"] == "query"
        assert variable["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert variable["includeAll"] is True and variable["multi"] is True and variable["allValue"] == ".*"
        assert variable["query"].startswith("label_values(")
    assert found["engine"]["query"].startswith("label_values(state_exporter_engine_info{")


def test_selectors() -> None:
    assert selectors('sum by (engine, le) (rate(a_bucket{x="1"}[$__rate_interval])) / time() - b') == [
        ("a_bucket", '{x="1"}'),
        ("b", ""),
    ]


@pytest.mark.parametrize(("where", "expr"), targets(OVERVIEW), ids=[where for where, _ in targets(OVERVIEW)])
def test_every_selector_follows_the_variables(where: str, expr: str) -> None:
    """Every selector is filtered by job and instance, and every workflow_* one (and the engine info) by engine:
    choosing an engine or an exporter narrows every panel."""
    found = selectors(expr)
    assert found, where
    for name, matchers in found:
        assert 'job=~"$job"' in matchers and 'instance=~"$instance"' in matchers, f"{where}: {name}{matchers}"
        if name.startswith("workflow_") or name == "state_exporter_engine_info":
            assert 'engine=~"$engine"' in matchers, f"{where}: {name}{matchers}"


def test_dashboard_covers_the_issue_areas() -> None:
    titles = {where.split(" / ")[0]: expr for where, expr in targets(OVERVIEW)}
    exprs = " ".join(titles.values())
    for needle in (
        "sum by (engine, phase) (workflow_runs{",  # runs by phase
        "sum by (engine, reason) (workflow_runs_stuck{",  # stuck runs by reason
        "rate(workflow_runs_finished_total{",  # finish rate by phase
        'phase="failed"}[30m]))\n/\n',  # failure ratio
        "histogram_quantile(0.99, sum by (engine, le) (rate(workflow_run_duration_seconds_bucket{",  # quantiles
        "time() - workflow_oldest_active_update_timestamp_seconds{",  # oldest active run age
        "state_exporter_collector_success{",  # exporter health
        "state_exporter_engine_info{",
    ):
        assert needle in exprs, needle
    rows = [panel["title"] for panel in panels(OVERVIEW) if panel["type"] == "row"]
    assert rows == ["Overview", "Runs", "Failures", "Durations", "Stuck and active runs", "Exporter health"]


# ---- evaluated against the real stack, per fixture ----


@pytest.mark.parametrize(
    ("fixture", "where", "expr"), CASES, ids=[f"{fixture}: {where}" for fixture, where, _ in CASES]
)
def test_panel_returns_data_for_each_fixture(ops_stack: Any, fixture: str, where: str, expr: str) -> None:
    # A single value, as Grafana substitutes it (its dots match themselves too).
    values = {"instance": ops_stack.instance(fixture), "engine": ENGINE}
    query = substitute(expr, OVERVIEW, values)
    result = promql(ops_stack.prometheus, query)
    reason = NO_DATA.get((fixture, where))
    if reason:
        assert not finite(result), f"{fixture}: {where} is listed as without data ({reason}) but has: {result}"
    else:
        assert result, f"{fixture}: {where}: no data for {query!r}"
        assert finite(result), f"{fixture}: {where}: only NaN/Inf for {query!r}: {result}"


@pytest.mark.parametrize("fixture", ALL_FIXTURES)
def test_the_overview_shows_each_fixture_as_it_is(ops_stack: Any, fixture: str) -> None:
    """Beyond "returns data": the runs by phase and the engine info are the fixture's, all phases present."""
    instance = ops_stack.instance(fixture)
    result = promql(ops_stack.prometheus, f'workflow_runs{{instance=~"{instance}"}}')
    assert {s["metric"]["phase"] for s in result} == {
        "queued",
        "running",
        "paused",
        "succeeded",
        "failed",
        "cancelled",
        "skipped",
    }
    assert {s["metric"]["engine"] for s in result} == {ENGINE}
    [info] = promql(ops_stack.prometheus, f'state_exporter_engine_info{{instance=~"{instance}"}}')
    assert info["metric"]["layout"] == LAYOUTS[fixture]


@pytest.mark.parametrize("name", ["job", "instance", "engine"])
def test_variable_query_returns_values(ops_stack: Any, name: str) -> None:
    match = re.fullmatch(r"label_values\((.*),\s*(\w+)\s*\)", variables(OVERVIEW)[name]["query"], re.S)
    assert match
    selector, label = substitute(match.group(1), OVERVIEW), match.group(2)
    result = promql(ops_stack.prometheus, f"count by ({label}) ({selector})")
    values = {series["metric"].get(label) for series in result}
    if name == "job":
        assert values == {"flujo-state-exporter"}
    elif name == "instance":
        assert values == {ops_stack.instance(fixture) for fixture in ALL_FIXTURES}
    else:
        assert values == {ENGINE}


def test_legacy_layout_has_no_finished_run_families(ops_stack: Any) -> None:
    """A layout without finished runs has no finished-run families: a 0 would claim that nothing finishes (and let
    WorkflowNoRunsFinishing fire) where nothing can be seen finishing."""
    instance = ops_stack.instance(LEGACY)
    assert promql(ops_stack.prometheus, f'flujo_runs_finished_total{{instance="{instance}"}}') == []
    for name in ("workflow_runs_finished_total", "workflow_run_duration_seconds_count"):
        assert promql(ops_stack.prometheus, f'{name}{{instance="{instance}"}}') == [], name
