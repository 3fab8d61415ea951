"""Every value of the oracle's ``<db>.expected.json`` (checked against pynenc's own API), per app,
through the real refresh and exposition, with the clock pinned at ``computed_at_utc``."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import pytest
from engines.pynenc.helpers import FIXTURES, ORACLE_LAYOUTS, Samples, by, computed_at, expected, expose, family

from exporter.config import MetricsConfig
from exporter.engines.pynenc.layout import Layout
from exporter.engines.pynenc.statuses import FINAL_STATUSES, PHASES
from exporter.model import Phase

every_fixture = pytest.mark.parametrize("fixture", FIXTURES)
SUM_TOLERANCE = 1e-5  # the oracle rounds each duration to the microsecond


def apps(fixture: str) -> list[tuple[str, dict[str, Any]]]:
    return [(app["app_ids"][0], app) for app in expected(fixture)["apps"]]


@pytest.fixture
def exposed(fixture_copy, fixture: str) -> Samples:
    return expose(fixture_copy(fixture), computed_at(fixture))


@every_fixture
def test_layout_and_app(exposed: Samples, fixture: str) -> None:
    for app, truth in apps(fixture):
        layout = ORACLE_LAYOUTS[truth["layout"]]
        assert family(exposed, "pynenc_app_info", app=app) == {frozenset({("layout", layout)}): 1}
        assert truth["orchestrator_tables_present"]
        assert truth["config"]["overrides_in_app_info"] == {}
    assert family(exposed, "state_exporter_bad_values_total") == {}


@every_fixture
def test_invocations_by_task_and_status(exposed: Samples, fixture: str) -> None:
    for app, truth in apps(fixture):
        statuses = Layout(ORACLE_LAYOUTS[truth["layout"]]).statuses
        found = family(exposed, "pynenc_invocations", app=app)
        want = {
            frozenset({("task", task), ("status", status)}): float(counts.get(status, 0))
            for task, counts in truth["status_counts_by_task"].items()
            for status in statuses
        }
        assert found == want  # every status of the layout, 0 when none, for every task
        assert by(exposed, "pynenc_invocations", "status", app=app) == Counter(truth["status_counts_all"]) + Counter()
        assert sum(found.values()) == truth["invocations_total"]
        assert truth["orchestrator_vs_history_last_status_mismatches"] == []


@every_fixture
def test_top_level_runs_and_overview(exposed: Samples, fixture: str) -> None:
    for app, truth in apps(fixture):
        statuses = Layout(ORACLE_LAYOUTS[truth["layout"]]).statuses
        runs = by(exposed, "pynenc_runs", "status", app=app)
        assert dict(runs) == {s: float(truth["status_counts_top_level"].get(s, 0)) for s in statuses}
    [(_, truth)] = apps(fixture)
    phases = by(exposed, "workflow_runs", "phase", engine="pynenc")
    want = PHASES.fold(truth["status_counts_top_level"].items())
    assert phases == {phase.value: float(want[phase]) for phase in Phase}
    stuck = by(exposed, "workflow_runs_stuck", "reason", engine="pynenc")
    assert stuck == {
        "runner_dead": truth["alerts"]["running_on_dead_runner"],
        "pending_timeout": truth["alerts"]["pending_timeout"],
    }


@every_fixture
def test_stuck_as_pynenc_recovery_decides(exposed: Samples, fixture: str) -> None:
    for app, truth in apps(fixture):
        stuck = truth["stuck"]
        found = by(exposed, "pynenc_invocations_stuck", "reason", app=app)
        assert found == {
            "runner_dead": len(stuck["running_owned_by_dead_runner"]),
            "pending_timeout": len(stuck["pending_timeout"]),
        }
        crosscheck = {a["app_id"]: a["api"] for a in expected(fixture)["engine_api_crosscheck"]["apps"]}[app]
        assert found["runner_dead"] == len(crosscheck["running_invocations_for_recovery"])
        assert found["pending_timeout"] == len(crosscheck["pending_invocations_for_recovery"])


@every_fixture
def test_runners_and_heartbeats(exposed: Samples, fixture: str) -> None:
    now = computed_at(fixture)
    for app, truth in apps(fixture):
        runners = truth["runners"]
        alive = sum(1 for r in runners if r["alive"])
        assert by(exposed, "pynenc_runners", "state", app=app) == {"alive": alive, "dead": len(runners) - alive}
        assert alive == truth["stuck"]["alive_runners"]
        latest: dict[str, float] = {}
        for runner in runners:
            heartbeat = (now - timedelta(seconds=runner["heartbeat_age_seconds"])).timestamp()
            assert heartbeat == pytest.approx(datetime.fromisoformat(runner["last_heartbeat_utc"]).timestamp())
            latest[runner["runner_cls"]] = max(latest.get(runner["runner_cls"], heartbeat), heartbeat)
        found = by(exposed, "pynenc_runner_last_heartbeat_timestamp_seconds", "runner_cls", app=app)
        assert found.keys() == latest.keys()
        for cls, heartbeat in latest.items():
            assert found[cls] == pytest.approx(heartbeat, abs=1e-3)


@every_fixture
def test_broker_queue(exposed: Samples, fixture: str) -> None:
    now = computed_at(fixture).timestamp()
    for app, truth in apps(fixture):
        queues = truth["stuck"]["broker_queue"]["by_queue"]
        assert by(exposed, "pynenc_broker_queue_depth", "queue", app=app) == {q: v["depth"] for q, v in queues.items()}
        assert sum(queues[q]["depth"] for q in queues) == truth["stuck"]["broker_queue"]["depth"]
        oldest = by(exposed, "pynenc_broker_oldest_message_timestamp_seconds", "queue", app=app)
        assert oldest.keys() == queues.keys()
        for queue, values in queues.items():
            # julianday has ~10 us resolution at today's dates; the oracle rounds ages to the ms
            assert now - oldest[queue] == pytest.approx(values["oldest_age_seconds"], abs=2e-3)


@every_fixture
def test_finished_counters(exposed: Samples, fixture: str) -> None:
    for app, truth in apps(fixture):
        finished = Counter((f["task"], f["status"]) for f in truth["finished"])
        found = family(exposed, "pynenc_invocations_finished_total", app=app)
        assert found == {frozenset({("task", t), ("status", s)}): float(n) for (t, s), n in finished.items()}
        for (task, status), n in finished.items():
            assert truth["status_counts_by_task"][task][status] == n  # every final invocation counted once
        top_level = {s: float(truth["status_counts_top_level"].get(s, 0)) for s in FINAL_STATUSES}
        assert dict(by(exposed, "pynenc_runs_finished_total", "status", app=app)) == top_level


@every_fixture
def test_retries_and_failures(exposed: Samples, fixture: str) -> None:
    for app, truth in apps(fixture):
        retries = truth["retries"]
        found = by(exposed, "pynenc_invocation_retries_total", "task", app=app)
        assert found == retries["retry_count_sum_by_task"]
        assert sum(found.values()) == retries["retry_history_rows_total"]
        assert {i["task"]: i["retry_count"] for i in retries["invocations_with_retries"]} == found
        failures = family(exposed, "pynenc_invocation_failures_total", app=app)
        assert by(exposed, "pynenc_invocation_failures_total", "error", app=app) == truth["exceptions_by_error_name"]
        assert sum(failures.values()) == truth["failures"]["total_failed"]
        failed_tasks = Counter(f["task"] for f in truth["finished"] if f["status"] == "failed")
        assert by(exposed, "pynenc_invocation_failures_total", "task", app=app) == failed_tasks
        recent = truth["failures"]["failed_last_24h_by_error"]
        older = truth["failures"]["failed_older_than_24h_ids"]
        assert sum(recent.values()) + len(older) == truth["failures"]["total_failed"]


def _histogram(samples: Samples, name: str, app: str) -> dict[str, tuple[float, float]]:
    counts = by(samples, f"{name}_count", "task", app=app)
    sums = by(samples, f"{name}_sum", "task", app=app)
    return {task: (counts[task], sums[task]) for task in counts}


def _want(finished: list[dict[str, Any]], key: str) -> dict[str, tuple[float, float]]:
    want: dict[str, tuple[float, float]] = {}
    for f in finished:
        count, total = want.get(f["task"], (0.0, 0.0))
        want[f["task"]] = (count + 1, total + f[key])
    return want


def _assert_histograms(found: dict[str, tuple[float, float]], want: dict[str, tuple[float, float]]) -> None:
    assert found.keys() == want.keys()
    for task, (count, total) in want.items():
        assert found[task][0] == count
        assert found[task][1] == pytest.approx(total, abs=SUM_TOLERANCE)


@every_fixture
def test_duration_histograms_within_the_window(exposed: Samples, fixture: str) -> None:
    """Seeded from the invocations that finished within metrics.run_duration_window (24 h)."""
    window_start = computed_at(fixture) - MetricsConfig().run_duration_window
    for app, truth in apps(fixture):
        recent = [f for f in truth["finished"] if datetime.fromisoformat(f["finished_at_utc"]) >= window_start]
        assert 0 < len(recent) < len(truth["finished"])  # the back-dated phase is outside
        _assert_histograms(
            _histogram(exposed, "pynenc_invocation_run_duration_seconds", app), _want(recent, "run_seconds")
        )
        _assert_histograms(
            _histogram(exposed, "pynenc_invocation_queue_wait_seconds", app), _want(recent, "queue_wait_seconds")
        )


@every_fixture
def test_duration_histograms_of_every_finished_invocation(fixture_copy, fixture: str) -> None:
    samples = expose(fixture_copy(fixture), computed_at(fixture), MetricsConfig(run_duration_window="72h"))
    for app, truth in apps(fixture):
        runs = _histogram(samples, "pynenc_invocation_run_duration_seconds", app)
        _assert_histograms(runs, _want(truth["finished"], "run_seconds"))
        by_task: dict[str, tuple[float, float]] = {}
        for key, stats in truth["run_seconds_by_task_status"].items():
            task = key.split("|")[0]
            count, total = by_task.get(task, (0.0, 0.0))
            by_task[task] = (count + stats["count"], total + stats["sum"])
        _assert_histograms(runs, by_task)
        _assert_histograms(
            _histogram(samples, "pynenc_invocation_queue_wait_seconds", app),
            _want(truth["finished"], "queue_wait_seconds"),
        )
        for f in truth["finished"]:
            assert f["total_seconds"] == pytest.approx(f["queue_wait_seconds"] + f["run_seconds"], abs=2e-6)
            assert f["attempts"] == f["retry_count"] + 1 == f["retry_rows"] + 1
