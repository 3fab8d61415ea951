"""A real Prometheus scrapes the real daemon serving a copy of a real Flujo fixture."""

from __future__ import annotations

from pathlib import Path

from processes import promql, running_daemon, running_prometheus, wait_for_series
from support import SMALL, SMALL06, expected, require_tool


def scrape_config(target: str) -> str:
    return f"""
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: flujo
    static_configs:
      - targets: ["{target}"]
"""


def value(result: list[dict[str, object]]) -> float:
    assert len(result) == 1, result
    sample = result[0]["value"]
    assert isinstance(sample, list)
    return float(sample[1])


def test_prometheus_scrapes_real_fixture(fixture_copy, tmp_path: Path) -> None:
    binary = require_tool("prometheus")
    db = fixture_copy(SMALL)
    exp = expected(SMALL)
    with (
        running_daemon(tmp_path, "--db", str(db), "--timezone", "UTC", wait_path="/readyz") as daemon,
        running_prometheus(binary, tmp_path, scrape_config(daemon.url.removeprefix("http://"))) as prometheus,
    ):
        wait_for_series(prometheus, 'up{job="flujo"} == 1')
        wait_for_series(prometheus, "flujo_workflows")
        for status, n in exp["get_workflow_stats"]["status_counts"].items():
            assert value(promql(prometheus, f'flujo_workflows{{status="{status}"}}')) == n
        assert value(promql(prometheus, "sum(flujo_workflows)")) == exp["get_workflow_stats"]["total_workflows"]
        assert value(promql(prometheus, "sum(flujo_runs)")) == exp["runs_total"]
        assert value(promql(prometheus, 'flujo_runs{status="running"}')) == exp["list_runs_status_counts"]["running"]
        assert value(promql(prometheus, "flujo_spans_stored")) == exp["spans_total_via_get_spans"]
        assert value(promql(prometheus, "flujo_spans_unfinished")) == exp["spans_unfinished_end_time_null"]
        assert value(promql(prometheus, 'flujo_db_layout_info{layout="0.4.35"}')) == 1
        wait_for_series(prometheus, "flujo_runs_finished_total")
        finished = promql(prometheus, "sum(flujo_runs_finished_total)")
        runs, paused = exp["list_runs_status_counts"], exp["get_workflow_stats"]["status_counts"]["paused"]
        assert value(finished) == runs["completed"] + runs["failed"] - paused  # paused runs have not ended
        by_pipeline = promql(prometheus, "sum by (pipeline) (flujo_runs_by_pipeline)")
        assert {r["metric"]["pipeline"]: float(r["value"][1]) for r in by_pipeline} == exp["runs_by_pipeline_name"]
        assert promql(prometheus, "flujo_background_tasks") == []  # absent on 0.4.35
        assert value(promql(prometheus, 'state_exporter_collector_success{collector="snapshot"}')) == 1


def test_prometheus_scrapes_06_fixture_with_background_tasks(fixture_copy, tmp_path: Path) -> None:
    binary = require_tool("prometheus")
    db = fixture_copy(SMALL06)
    exp = expected(SMALL06)
    with (
        running_daemon(tmp_path, "--db", str(db), "--timezone", "UTC", wait_path="/readyz") as daemon,
        running_prometheus(binary, tmp_path, scrape_config(daemon.url.removeprefix("http://"))) as prometheus,
    ):
        wait_for_series(prometheus, "flujo_background_tasks")
        for status, n in exp["get_workflow_stats"]["background_status_counts"].items():
            assert value(promql(prometheus, f'flujo_background_tasks{{status="{status}"}}')) == n
        for status, n in exp["list_workflows"]["by_status_non_background"].items():
            assert value(promql(prometheus, f'flujo_workflows{{status="{status}"}}')) == n
        assert value(promql(prometheus, 'flujo_db_layout_info{layout="0.6"}')) == 1
