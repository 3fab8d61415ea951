"""The refresher: watermark counters never go down, failures keep the last good snapshot."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

from support import SMALL, SMALL06, computed_at

from exporter.clock import ManualClock
from exporter.config import MetricsConfig
from exporter.reader import Problem, StateReader
from exporter.refresh import AGGREGATES, SNAPSHOT, WATERMARKS, Refresher
from exporter.timeparse import UTC


def refresher(db: Path, clock: ManualClock, **settings: object) -> Refresher:
    metrics = MetricsConfig(**settings)  # type: ignore[arg-type]
    return Refresher(StateReader(db, naive_timezone=UTC), lambda: metrics, clock)


def finished(r: Refresher) -> dict[tuple[str, str], int]:
    return dict(r.state.finished.runs)


def test_finished_counters_survive_cleanup_and_count_new_finishes(fixture_copy) -> None:
    db = fixture_copy(SMALL)
    clock = ManualClock(computed_at(SMALL))
    r = refresher(db, clock)
    r.refresh()
    before = finished(r)
    # 28 completed + 1 cancelled (completed in runs) + 20 failed; the 6 runs paused for approval
    # (completed in runs, paused in workflow_state) have not ended
    assert sum(before.values()) == 49
    assert sum(n for (_, status), n in before.items() if status == "cancelled") == 1
    conn = sqlite3.connect(db)
    # cleanup deletes finished runs: the counters must not go down
    conn.execute("DELETE FROM runs WHERE status = 'completed' AND start_time < '2026-11-01'")
    # a crashed-looking running run finishes, and a brand-new run starts and finishes between refreshes
    conn.execute(
        "UPDATE runs SET status = 'failed', end_time = '2026-11-21T11:20:00' WHERE run_id = ?",
        ("run_19db3ad0ddd1dfb23b982ef8daf61a26",),
    )
    conn.execute(
        "INSERT INTO runs (run_id, pipeline_name, pipeline_version, status, start_time, end_time)"
        " VALUES ('run_new', 'etl_daily', '1', 'completed', '2026-11-21T11:15:00', '2026-11-21T11:15:30')"
    )
    conn.commit()
    conn.close()
    clock.advance(15)
    r.refresh()
    after = finished(r)
    assert all(after.get(k, 0) >= v for k, v in before.items())
    assert sum(after.values()) == sum(before.values()) + 2
    pipeline = "long_job"
    assert after[(pipeline, "failed")] == before.get((pipeline, "failed"), 0) + 1
    assert after[("etl_daily", "completed")] == before[("etl_daily", "completed")] + 1
    histogram = r.state.finished.run_durations["etl_daily"]
    assert histogram.total >= 30.0  # the new 30 s run was observed


def test_steps_counters_and_durations(fixture_copy) -> None:
    db = fixture_copy(SMALL)
    r = refresher(db, ManualClock(computed_at(SMALL)))
    r.refresh()
    steps = r.state.finished.steps
    assert sum(steps.values()) == 137
    assert sum(n for (_, status), n in steps.items() if status == "failed") == 20
    assert r.state.finished.step_durations  # 0.4.35 records duration_ms


def test_step_label_cap_folds_into_other(fixture_copy) -> None:
    r = refresher(fixture_copy(SMALL06), ManualClock(computed_at(SMALL06)), max_steps=3)
    r.refresh()
    names = {name for name, _ in r.state.finished.steps}
    assert len(names) == 4 and "other" in names


def test_failed_refresh_keeps_last_good_snapshot(fixture_copy) -> None:
    db = fixture_copy(SMALL)
    clock = ManualClock(computed_at(SMALL))
    r = refresher(db, clock)
    good = r.refresh()
    assert good.problem is None and good.phases[SNAPSHOT].success
    db.rename(db.with_suffix(".moved"))
    clock.advance(15)
    bad = r.refresh()
    assert bad.problem is not None and bad.problem.problem is Problem.MISSING
    assert bad.fast is good.fast  # still served, marked stale
    assert not bad.phases[SNAPSHOT].success
    assert bad.phases[SNAPSHOT].last_success == good.phases[SNAPSHOT].last_success
    assert bad.errors[Problem.MISSING] == 1
    db.with_suffix(".moved").rename(db)
    clock.advance(15)
    recovered = r.refresh()
    assert recovered.problem is None and recovered.phases[SNAPSHOT].success


def test_aggregates_follow_their_own_interval(fixture_copy) -> None:
    clock = ManualClock(computed_at(SMALL))
    r = refresher(fixture_copy(SMALL), clock, aggregate_interval=timedelta(minutes=5))
    first = r.refresh().aggregates
    clock.advance(60)
    assert r.refresh().aggregates is first
    clock.advance(300)
    assert r.refresh().aggregates is not first
    assert r.state.phases[AGGREGATES].success and r.state.phases[WATERMARKS].success


def test_unparseable_timestamp_is_counted_not_fatal(fixture_copy) -> None:
    db = fixture_copy(SMALL)
    conn = sqlite3.connect(db)
    conn.execute(
        "UPDATE workflow_state SET updated_at = 'garbage' WHERE status = 'running' AND rowid = "
        "(SELECT MIN(rowid) FROM workflow_state WHERE status = 'running')"
    )
    conn.commit()
    conn.close()
    r = refresher(db, ManualClock(computed_at(SMALL)))
    state = r.refresh()
    assert state.problem is None
    assert state.bad_values[("workflow_state", "updated_at")] == 1


def test_single_flight(fixture_copy) -> None:
    r = refresher(fixture_copy(SMALL), ManualClock(computed_at(SMALL)))
    with r._busy:  # a refresh in progress elsewhere
        assert r.refresh() is r.state
    assert r.state.fast is None
