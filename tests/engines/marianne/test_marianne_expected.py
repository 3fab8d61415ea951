"""Every value of the oracle's ``marianne-state-sample.db.expected.json`` (cross-checked against
Marianne's own API) that the ``marianne_*`` families carry, for the workspace DB and the conductor
registry, through the real refresh and exposition with the clock pinned at ``computed_at_utc``
and pid liveness taken from the manifest."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

import pytest
from engines.marianne.helpers import (
    PID_CHECK,
    REGISTRY,
    WORKSPACE,
    Samples,
    by,
    computed_at,
    expected,
    expose,
    family,
    liveness_from_manifest,
    single,
)

from exporter import engines
from exporter.config import MetricsConfig
from exporter.engines.marianne.statuses import JOB_STATUSES, PHASES, REGISTRY_STATUSES, SHEET_STATUSES
from exporter.engines.marianne.tracking import OUTCOMES
from exporter.model import Phase, StuckReason
from exporter.reader import StateReader

SUM_TOLERANCE = 1e-5  # the oracle rounds each duration to the microsecond


def workspace() -> dict[str, Any]:
    data: dict[str, Any] = expected()["workspace"]
    return data


def registry() -> dict[str, Any]:
    data: dict[str, Any] = expected()["registry"]
    return data


@pytest.fixture
def exposed(fixture_copy) -> Samples:
    with liveness_from_manifest():
        return expose(fixture_copy(WORKSPACE), PID_CHECK)


@pytest.fixture
def exposed_registry(fixture_copy) -> Samples:
    with liveness_from_manifest():
        return expose(fixture_copy(REGISTRY), PID_CHECK)


def test_layout_and_no_bad_values(exposed: Samples, exposed_registry: Samples) -> None:
    assert workspace()["schema_version"] == 4 and workspace()["sheets_has_success_without_retry"]
    assert family(exposed, "state_exporter_engine_info") == {
        frozenset({("engine", "marianne"), ("layout", "workspace-v4")}): 1
    }
    assert family(exposed_registry, "state_exporter_engine_info") == {
        frozenset({("engine", "marianne"), ("layout", "registry")}): 1
    }
    assert family(exposed, "state_exporter_bad_values_total") == {}
    assert family(exposed_registry, "state_exporter_bad_values_total") == {}


def test_jobs_by_status(exposed: Samples) -> None:
    found = by(exposed, "marianne_jobs", "status")
    assert found == {status: float(workspace()["jobs_by_status"].get(status, 0)) for status in JOB_STATUSES}
    assert sum(found.values()) == workspace()["jobs_total"] == len(workspace()["jobs"])
    # What Marianne's own status query says, not what its load()/list_jobs() rewrite.
    assert (
        dict(workspace()["jobs_by_status"])
        == expected()["engine_api_crosscheck"]["workspace"]["api"]["query_jobs_status_counts"]
    )


def test_sheets_by_status(exposed: Samples) -> None:
    found = by(exposed, "marianne_sheets", "status")
    assert found == {status: float(workspace()["sheets_by_status"].get(status, 0)) for status in SHEET_STATUSES}
    assert sum(found.values()) == workspace()["sheets_total"]
    per_job: Counter[str] = Counter()
    for job in workspace()["jobs"]:
        per_job.update(job["sheets_by_status"])
    assert per_job == workspace()["sheets_by_status"]


def test_zombies_with_the_same_host_check(fixture_copy) -> None:
    db = fixture_copy(WORKSPACE)
    with liveness_from_manifest() as asked:
        samples = expose(db, PID_CHECK)
        with StateReader(db, naive_timezone=UTC).session() as session:
            runs = engines.engine("marianne").stuck_runs(session, computed_at(), PID_CHECK)
    zombies = workspace()["zombies"]
    assert single(samples, "marianne_jobs_zombie") == len(zombies) == workspace()["alerts"]["zombies"]
    assert set(asked) == {z["pid"] for z in workspace()["zombie_candidates"]}  # running jobs with a pid only
    assert by(samples, "marianne_jobs_stuck", "reason") == {"pid_dead": len(zombies), "idle": 0}
    assert by(samples, "workflow_runs_stuck", "reason", engine="marianne") == {"pid_dead": len(zombies), "idle": 0}
    assert [(run.run_id, run.reason) for run in runs] == [(z["job_id"], StuckReason.PID_DEAD) for z in zombies]
    for run, zombie in zip(runs, zombies, strict=True):
        age = (computed_at() - run.updated_at).total_seconds()
        assert age == pytest.approx(zombie["update_age_seconds"], abs=SUM_TOLERANCE)
    # The zombie load() recovered is paused now: the DB's status decides, not its pid or message.
    recovered = {job["job_id"]: job for job in workspace()["jobs"]}[workspace()["recovered_zombies_paused"][0]]
    assert recovered["status"] == "paused" and recovered["job_id"] not in {run.run_id for run in runs}


def test_without_the_check_no_pid_is_asked_and_the_zombie_is_only_stale(fixture_copy) -> None:
    with liveness_from_manifest() as asked:
        samples = expose(fixture_copy(WORKSPACE))
    assert asked == []
    assert family(samples, "marianne_jobs_zombie") == {}  # unknown, not 0
    assert by(samples, "marianne_jobs_stuck", "reason") == {"pid_dead": 0, "idle": len(workspace()["stale_running"])}


def test_running_without_pid(exposed: Samples) -> None:
    assert single(exposed, "marianne_jobs_running_without_pid") == len(workspace()["running_without_pid"])
    assert workspace()["alerts"]["running_without_pid"] == len(workspace()["running_without_pid"])


def test_stale_running_jobs(fixture_copy, exposed: Samples) -> None:
    stale = workspace()["stale_running"]
    assert MetricsConfig().stuck.running_after == timedelta(minutes=expected()["stale_minutes"])
    assert single(exposed, "marianne_jobs_stale") == len(stale) == workspace()["alerts"]["stale_running"]
    with StateReader(fixture_copy(WORKSPACE), naive_timezone=UTC).session() as session:
        runs = engines.engine("marianne").stuck_runs(session, computed_at(), MetricsConfig())
    assert [(run.run_id, run.reason) for run in runs] == [(s["job_id"], StuckReason.IDLE) for s in stale]
    for run, job in zip(runs, stale, strict=True):
        age = (computed_at() - run.updated_at).total_seconds()
        assert age == pytest.approx(job["update_age_seconds"], abs=SUM_TOLERANCE)
        assert run.stuck_since < computed_at()


def test_sheet_failures_of_failed_sheets_only(exposed: Samples) -> None:
    assert by(exposed, "marianne_sheet_failures", "error_category") == workspace()["failed_sheets_by_error_category"]
    assert by(exposed, "marianne_sheet_failures", "exit_reason") == workspace()["failed_sheets_by_exit_reason"]
    # etl-report#2 keeps the category of the attempt it retried: not a failure.
    assert workspace()["non_failed_sheets_with_stale_error_category"] == ["etl-report#2"]
    assert "transient" not in by(exposed, "marianne_sheet_failures", "error_category")


def test_sheet_attempts(exposed: Samples) -> None:
    assert family(exposed, "marianne_sheet_attempts_sum") == {frozenset(): workspace()["sheet_attempt_count_sum"]}
    assert family(exposed, "marianne_sheet_attempts_count") == {frozenset(): workspace()["sheets_total"]}
    once = family(exposed, "marianne_sheet_attempts_bucket", le="1.0")[frozenset()]
    assert workspace()["sheets_total"] - once == len(workspace()["sheets_retried"])


def test_execution_attempts_by_outcome(exposed: Samples) -> None:
    found = by(exposed, "marianne_execution_attempts_total", "outcome")
    truth = workspace()["execution_attempts_by_outcome"]
    assert found == {outcome: float(truth.get(outcome, 0)) for outcome in OUTCOMES}
    assert sum(found.values()) == workspace()["execution_history_rows"]
    assert single(exposed, "marianne_execution_attempts_undecided") == 0  # every attempt's sheet has ended
    assert Counter(a["outcome"] for a in workspace()["attempts"]) == truth
    # An exit code of 0 does not make an attempt a success (flaky-import#2's validation failure).
    assert any(a["exit_code"] == 0 and a["outcome"] == "failed" for a in workspace()["attempts"])


def test_job_durations(exposed: Samples) -> None:
    durations = [job["duration_seconds"] for job in workspace()["jobs"] if job["duration_seconds"] is not None]
    assert family(exposed, "marianne_job_duration_seconds_count") == {frozenset(): len(durations)}
    [total] = family(exposed, "marianne_job_duration_seconds_sum").values()
    assert total == pytest.approx(sum(durations), abs=SUM_TOLERANCE * len(durations))


def test_sheet_durations(exposed: Samples) -> None:
    truth = workspace()["sheet_execution_duration_seconds"]
    assert family(exposed, "marianne_sheet_duration_seconds_count") == {frozenset(): truth["count"]}
    [total] = family(exposed, "marianne_sheet_duration_seconds_sum").values()
    assert total == pytest.approx(truth["sum"], abs=SUM_TOLERANCE)
    buckets = family(exposed, "marianne_sheet_duration_seconds_bucket")
    smallest_holding_all = min(float(dict(k)["le"]) for k, v in buckets.items() if v == truth["count"])
    assert smallest_holding_all >= truth["max"]


def test_job_retries(exposed: Samples) -> None:
    assert single(exposed, "marianne_job_retries_total") == workspace()["job_retry_count_sum"]
    assert workspace()["job_retry_count_sum"] == sum(job["total_retry_count"] for job in workspace()["jobs"])


def test_overview_of_the_workspace(exposed: Samples) -> None:
    want = PHASES.fold(workspace()["jobs_by_status"].items())
    assert by(exposed, "workflow_runs", "phase", engine="marianne") == {p.value: float(want[p]) for p in Phase}


def test_conductor_jobs_and_orphans(exposed_registry: Samples) -> None:
    found = by(exposed_registry, "marianne_conductor_jobs", "status")
    assert found == {status: float(registry()["jobs_by_status"].get(status, 0)) for status in REGISTRY_STATUSES}
    assert sum(found.values()) == registry()["jobs_total"]
    orphans = single(exposed_registry, "marianne_conductor_orphaned_jobs")
    assert orphans == len(registry()["orphans"]) == registry()["alerts"]["orphans"]
    assert registry()["orphans"] == expected()["engine_api_crosscheck"]["registry"]["api"]["orphaned_jobs"]
    want = PHASES.fold(registry()["jobs_by_status"].items())
    assert by(exposed_registry, "workflow_runs", "phase", engine="marianne") == {p.value: float(want[p]) for p in Phase}


def test_conductor_running_with_dead_pid(fixture_copy, exposed_registry: Samples) -> None:
    dead = registry()["running_with_dead_pid"]
    assert by(exposed_registry, "marianne_conductor_jobs_stuck", "reason") == {"pid_dead": len(dead), "idle": 0}
    with liveness_from_manifest(), StateReader(fixture_copy(REGISTRY), naive_timezone=UTC).session() as session:
        runs = engines.engine("marianne").stuck_runs(session, computed_at(), PID_CHECK)
    assert [run.run_id for run in runs] == dead
    # Without the check the same job is idle: no event for longer than running_after.
    by_id = {job["job_id"]: job for job in registry()["jobs"]}
    assert all(by_id[job_id]["last_event_age_seconds"] > 3600 for job_id in dead)
    with liveness_from_manifest() as asked:
        samples = expose(fixture_copy(REGISTRY))
    assert asked == [] and by(samples, "marianne_conductor_jobs_stuck", "reason") == {"pid_dead": 0, "idle": len(dead)}


# Marianne's migrations, undone: what a workspace DB of each older schema version has.
DOWNGRADES = {
    3: ("ALTER TABLE sheets RENAME COLUMN success_without_retry TO first_attempt_success",),
    2: tuple(
        f"ALTER TABLE sheets DROP COLUMN {c}" for c in ("execution_duration_seconds", "exit_signal", "exit_reason")
    ),
    1: ("ALTER TABLE jobs DROP COLUMN config_path",),
}


def downgrade(db: Path, version: int) -> None:
    from engines.marianne.helpers import execute

    statements = [s for v in (3, 2, 1) if v >= version for s in DOWNGRADES[v]]
    execute(db, *statements, f"DELETE FROM schema_version WHERE version > {version}")


@pytest.mark.parametrize("version", [3, 2, 1])
def test_an_older_schema_is_read(fixture_copy, version: int) -> None:
    db = fixture_copy(WORKSPACE)
    downgrade(db, version)
    with liveness_from_manifest():
        samples = expose(db, PID_CHECK)
    assert family(samples, "state_exporter_engine_info") == {
        frozenset({("engine", "marianne"), ("layout", f"workspace-v{version}")}): 1
    }
    assert family(samples, "state_exporter_bad_values_total") == {}
    assert by(samples, "marianne_jobs", "status") == {
        s: float(workspace()["jobs_by_status"].get(s, 0)) for s in JOB_STATUSES
    }
    assert sum(by(samples, "marianne_sheets", "status").values()) == workspace()["sheets_total"]
    assert single(samples, "marianne_jobs_zombie") == len(workspace()["zombies"])
    assert by(samples, "marianne_execution_attempts_total", "outcome")["failed_then_retried"] == 3
    assert by(samples, "marianne_sheet_failures", "error_category") == workspace()["failed_sheets_by_error_category"]
    if version >= 3:
        assert by(samples, "marianne_sheet_failures", "exit_reason") == workspace()["failed_sheets_by_exit_reason"]
        assert single(samples, "marianne_sheet_duration_seconds_count") == 10
    else:  # no exit_reason nor durations before v3: "none", and the histogram absent rather than empty
        assert by(samples, "marianne_sheet_failures", "exit_reason") == {"none": 2}
        assert family(samples, "marianne_sheet_duration_seconds_count") == {}
