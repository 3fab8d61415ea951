"""`state-exporter snapshot --now <computed_at_utc>` on each real fixture reports its expected values."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from support import LEGACY, SMALL, SMALL06, computed_at, expected, parse_exposition, require_tool, sample

GOLDEN = Path(__file__).parent.parent / "golden"
# Values that legitimately differ between runs: timings and the Python version.
VOLATILE = re.compile(r"^(state_exporter_collector_duration_seconds|state_exporter_build_info)\{.*$", re.M)


def snapshot(db: Path, now: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter", "snapshot", "--db", str(db), "--timezone", "UTC", "--now", now, *extra],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("STATE_EXPORTER_")},
    )


@pytest.mark.parametrize("name", [SMALL, SMALL06, LEGACY])
def test_golden_exposition(fixture_copy, name: str) -> None:
    now = computed_at(SMALL if name == LEGACY else name).isoformat()
    result = snapshot(fixture_copy(name), now)
    assert result.returncode == 0, result.stderr
    text = VOLATILE.sub("", result.stdout)
    golden = GOLDEN / f"{name}.prom"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.write_text(text)
    assert text == golden.read_text(), f"exposition changed; inspect and rerun with UPDATE_GOLDEN=1 ({golden})"


@pytest.mark.parametrize("name", [SMALL, SMALL06, LEGACY])
def test_promtool_accepts_the_exposition(name: str) -> None:
    promtool = require_tool("promtool")
    result = subprocess.run(
        [promtool, "check", "metrics"], input=(GOLDEN / f"{name}.prom").read_text(), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_small_values(fixture_copy) -> None:
    exp = expected(SMALL)
    result = snapshot(fixture_copy(SMALL), exp["computed_at_utc"])
    s = parse_exposition(result.stdout)
    for status, n in exp["get_workflow_stats"]["status_counts"].items():
        assert sample(s, "flujo_workflows", status=status) == n
    assert sample(s, "flujo_workflows_created_last_24h") == exp["correct_recent_created_24h"] == 26
    assert sample(s, "flujo_workflows_failed_last_24h") == exp["correct_failed_updated_24h"]
    for status, n in exp["list_runs_status_counts"].items():
        assert sample(s, "flujo_runs", status=status) == n
    assert sample(s, "flujo_spans_stored") == exp["spans_total_via_get_spans"]
    assert sample(s, "flujo_spans_unfinished") == exp["spans_unfinished_end_time_null"]
    stuck = exp["stuck_running_over_1h_at_compute_time"]
    assert sample(s, "flujo_workflows_stuck", pipeline="long_job", status="running") == len(stuck)
    oldest = min(computed_at(SMALL).fromisoformat(r["updated_at"] + "+00:00").timestamp() for r in stuck)
    assert sample(s, "flujo_workflows_oldest_update_timestamp_seconds", pipeline="long_job", status="running") == (
        pytest.approx(oldest)
    )
    assert ("flujo_background_tasks", frozenset({("status", "running")})) not in s  # absent, not zero
    assert sample(s, "flujo_db_capability", capability="background_tasks") == 0
    assert sample(s, "flujo_db_layout_info", layout="0.4.35") == 1
    finished = sum(v for (name, _), v in s.items() if name == "flujo_runs_finished_total")
    runs, states = exp["list_runs_status_counts"], exp["get_workflow_stats"]["status_counts"]
    # runs paused for approval are 'completed' in runs but have not ended; the cancelled one counts as such
    assert finished == runs["completed"] + runs["failed"] - states["paused"] == 49
    cancelled = sum(
        v
        for (name, labels), v in s.items()
        if name == "flujo_runs_finished_total" and ("status", "cancelled") in labels
    )
    assert cancelled == states["cancelled"]
    assert sample(s, "state_exporter_db_ready") == 1
    assert sample(s, "state_exporter_collector_success", collector="snapshot") == 1
    for name, _labels in s:  # the engine's own prefix, the overview's or the daemon's: nothing else
        assert name.startswith(("flujo_", "workflow_", "state_exporter_")), name


def test_small06_values(fixture_copy) -> None:
    exp = expected(SMALL06)
    s = parse_exposition(snapshot(fixture_copy(SMALL06), exp["computed_at_utc"]).stdout)
    for status, n in exp["list_workflows"]["by_status_non_background"].items():
        assert sample(s, "flujo_workflows", status=status) == n
    for status, n in exp["get_workflow_stats"]["background_status_counts"].items():
        assert sample(s, "flujo_background_tasks", status=status) == n
    assert sample(s, "flujo_background_tasks", status="cancelled") == 0  # every status present
    assert sample(s, "flujo_workflows_created_last_24h") + 13 == exp["correct_recent_created_24h_at_compute_time"]
    assert (
        sample(s, "flujo_workflows_failed_last_24h") + sample(s, "flujo_background_tasks_failed_last_24h")
        == exp["correct_failed_updated_24h_at_compute_time"]
    )
    for status, n in exp["runs_table_raw_status_counts"].items():
        assert sample(s, "flujo_runs", status=status) == n
    assert sample(s, "flujo_spans_stored") == exp["spans_total_via_get_spans"]
    assert sample(s, "flujo_spans_unfinished") == exp["spans_open_end_time_null"]
    stuck = exp["stuck_over_1h_at_compute_time"]
    for pipeline in ("long_job", "doc_ingest"):
        want = [r for r in stuck if not r["is_background_task"] and r["pipeline_name"] == pipeline]
        assert sample(s, "flujo_workflows_stuck", pipeline=pipeline, status="running") == len(want)
    assert sample(s, "flujo_db_layout_info", layout="0.6") == 1


def test_flujo_compat_switch(fixture_copy, tmp_path: Path) -> None:
    exp = expected(SMALL06)
    config = tmp_path / "compat.yaml"
    config.write_text("metrics:\n  flujo_compat: true\n")
    s = parse_exposition(snapshot(fixture_copy(SMALL06), exp["computed_at_utc"], "--config", str(config)).stdout)
    for key, value in exp["prometheus_http_scrape"]["samples"].items():
        name, _, labels = key.partition("{")
        label_map = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        assert sample(s, name, **label_map) == pytest.approx(value), key
    off = parse_exposition(snapshot(fixture_copy(SMALL06), exp["computed_at_utc"]).stdout)
    assert not any(name == "flujo_runs_total" for name, _ in off)
