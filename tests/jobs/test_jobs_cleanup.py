"""Cleanup job on copies of the real fixtures of all three Flujo layouts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import subprocess
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from support import (
    LEGACY,
    SMALL,
    SMALL06,
    computed_at,
    content_checksums,
    expected,
    make_hybrid,
    parse_exposition,
    sample,
)

from exporter.clock import ManualClock
from exporter.jobs import JobRunner, JobsConfig, writes_enabled
from exporter.reader import StateReader
from exporter.timeparse import parse_instant

RUN_TABLES = ("runs", "steps", "spans", "traces", "evaluations")


async def no_sleep(_: float) -> None:
    await asyncio.sleep(0)


def make_runner(
    db: Path,
    clock: ManualClock,
    *,
    tz: tzinfo = UTC,
    exported: Any = None,
    busy: str = "200ms",
    **cleanup: Any,
) -> JobRunner:
    settings = {"enabled": True, "pause_between_batches": 0, "jitter": 0, **cleanup}
    config = JobsConfig.model_validate({"write_busy_timeout": busy, "cleanup": settings})
    return JobRunner(config, db, tz, StateReader(db, naive_timezone=tz), clock, exported, sleep=no_sleep)


def ids(db: Path, sql: str, params: Iterable[Any] = ()) -> set[str]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return {row[0] for row in conn.execute(sql, tuple(params))}


def count(db: Path, table: str, run_ids: Iterable[str] | None = None) -> int:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone():
            return 0
        if run_ids is None:
            return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
        wanted = list(run_ids)
        marks = ", ".join("?" * len(wanted))
        return int(conn.execute(f"SELECT COUNT(*) FROM {table} WHERE run_id IN ({marks})", wanted).fetchone()[0])


def metrics(runner: JobRunner) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(runner.collector())
    return parse_exposition(generate_latest(registry).decode())


def expected_runs_deleted(db: Path, cutoff: datetime, workflows_left: set[str]) -> set[str]:
    """Runs without a workflow_state row whose start instant is before the cutoff (computed here)."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        cols = {row[1] for row in conn.execute("PRAGMA table_info(runs)")}
        start = "start_time" if "start_time" in cols else "created_at"
        rows = conn.execute(f"SELECT run_id, {start} FROM runs").fetchall()
    found = set()
    for run_id, raw in rows:
        instant = parse_instant(raw, UTC)
        if run_id not in workflows_left and instant is not None and instant < cutoff:
            found.add(run_id)
    return found


# -- the seed's semantics, time-correct ------------------------------------------------------------


async def test_sample_small_30_days_deletes_exactly_the_expected_runs(fixture_copy) -> None:
    db = fixture_copy(SMALL)
    want = set(expected(SMALL)["cleanup_old_workflows_30d"]["deleted_run_ids"])
    assert len(want) == 12
    before = ids(db, "SELECT run_id FROM workflow_state")
    run_rows = {t: count(db, t) for t in RUN_TABLES}
    runner = make_runner(db, ManualClock(computed_at(SMALL)), days_old=30, batch_size=5)
    stats = await runner.run_job("cleanup")
    assert stats.success, stats.last_error
    assert before - ids(db, "SELECT run_id FROM workflow_state") == want
    assert runner.cleanup is not None and runner.cleanup.last_report is not None
    report = runner.cleanup.last_report
    assert set(report.workflow_run_ids) == want and report.transactions >= 3  # small transactions
    assert {t: count(db, t) for t in RUN_TABLES} == run_rows  # delete_runs is off
    m = metrics(runner)
    assert sample(m, "state_exporter_cleanup_deleted_rows_total", table="workflow_state") == 12
    assert sample(m, "state_exporter_cleanup_deleted_rows_total", table="runs") == 0
    assert sample(m, "state_exporter_job_success", job_name="cleanup") == 1
    assert sample(m, "state_exporter_job_errors_total", job_name="cleanup") == 0
    # A second run finds nothing more.
    assert (await runner.run_job("cleanup")).success
    assert sample(metrics(runner), "state_exporter_cleanup_deleted_rows_total", table="workflow_state") == 12


async def test_delete_runs_cascades_to_steps_and_spans(fixture_copy) -> None:
    db = fixture_copy(SMALL)
    now = computed_at(SMALL)
    want = set(expected(SMALL)["cleanup_old_workflows_30d"]["deleted_run_ids"])
    left = ids(db, "SELECT run_id FROM workflow_state") - want
    runs_gone = expected_runs_deleted(db, now - timedelta(days=30), left)
    assert want & runs_gone and runs_gone - want  # some of the 12, plus older runs already without a row
    child_rows = {t: count(db, t, runs_gone) for t in ("steps", "spans")}
    other_rows = {t: count(db, t) - child_rows.get(t, len(runs_gone) if t == "runs" else 0) for t in RUN_TABLES}
    runner = make_runner(db, ManualClock(now), days_old=30, delete_runs=True, batch_size=4)
    stats = await runner.run_job("cleanup")
    assert stats.success, stats.last_error
    assert not ids(db, "SELECT run_id FROM workflow_state") & want
    assert ids(db, "SELECT run_id FROM runs") & runs_gone == set()
    for table in ("steps", "spans"):
        assert count(db, table, runs_gone) == 0
    assert {t: count(db, t) for t in RUN_TABLES} == other_rows  # nothing else touched
    m = metrics(runner)
    assert sample(m, "state_exporter_cleanup_deleted_rows_total", table="runs") == len(runs_gone)
    assert sample(m, "state_exporter_cleanup_deleted_rows_total", table="spans") == child_rows["spans"]
    assert sample(m, "state_exporter_cleanup_deleted_rows_total", table="steps") == child_rows["steps"]
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []


async def test_runs_retention_keeps_runs_longer(fixture_copy) -> None:
    db = fixture_copy(SMALL)
    now = computed_at(SMALL)
    runs_before = count(db, "runs")
    runner = make_runner(db, ManualClock(now), days_old=30, delete_runs=True, runs_retention_days=400)
    assert (await runner.run_job("cleanup")).success
    assert count(db, "runs") == runs_before
    assert count(db, "workflow_state") == 57 - 12


async def test_layout_06_workflows_runs_evaluations(fixture_copy) -> None:
    db = fixture_copy(SMALL06)
    now = computed_at(SMALL06)
    cutoff = now - timedelta(days=20)
    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT run_id, created_at FROM workflow_state").fetchall()
    old = {r for r, raw in rows if (i := parse_instant(raw, UTC)) is not None and i < cutoff}
    assert 0 < len(old) < len(rows)
    left = {r for r, _ in rows} - old
    runs_gone = expected_runs_deleted(db, cutoff, left)
    assert runs_gone
    children = {t: count(db, t, runs_gone) for t in ("steps", "spans", "evaluations")}
    runner = make_runner(db, ManualClock(now), days_old=20, delete_runs=True, batch_size=3)
    stats = await runner.run_job("cleanup")
    assert stats.success, stats.last_error
    assert ids(db, "SELECT run_id FROM workflow_state") == left
    assert not ids(db, "SELECT run_id FROM runs") & runs_gone
    m = metrics(runner)
    for table, n in children.items():
        assert count(db, table, runs_gone) == 0
        assert sample(m, "state_exporter_cleanup_deleted_rows_total", table=table) == n


async def test_legacy_layout_only_workflow_state(fixture_copy) -> None:
    db = fixture_copy(LEGACY)
    assert count(db, "workflow_state") == 6
    # All six rows were created 2026-11-21T11:10:27-28 (naive, writer in UTC).
    early = make_runner(db, ManualClock(datetime(2026, 11, 21, 11, 20, tzinfo=UTC)), days_old=0.01, delete_runs=True)
    assert (await early.run_job("cleanup")).success
    assert count(db, "workflow_state") == 6
    late = make_runner(db, ManualClock(datetime(2026, 11, 21, 11, 30, tzinfo=UTC)), days_old=0.01, delete_runs=True)
    stats = await late.run_job("cleanup")
    assert stats.success, stats.last_error
    assert count(db, "workflow_state") == 0
    m = metrics(late)
    assert sample(m, "state_exporter_cleanup_deleted_rows_total", table="workflow_state") == 6
    assert sample(m, "state_exporter_cleanup_deleted_rows_total", table="runs") == 0


async def test_time_correct_instants_not_strings(fixture_copy) -> None:
    """Naive created_at is the writer's local time; rows on the threshold day are compared exactly."""
    db = fixture_copy(LEGACY)
    now = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
    cutoff = now - timedelta(days=1)
    la = ZoneInfo("America/Los_Angeles")

    def local(instant: datetime) -> str:
        return instant.astimezone(la).replace(tzinfo=None).isoformat()

    with contextlib.closing(sqlite3.connect(db)) as conn:
        run_ids = [r[0] for r in conn.execute("SELECT run_id FROM workflow_state ORDER BY run_id")]
        values = {
            run_ids[0]: local(cutoff - timedelta(minutes=1)),  # older: deleted (flujo keeps: same day)
            run_ids[1]: local(cutoff + timedelta(minutes=1)),  # newer: kept (read as UTC it would look older)
            run_ids[2]: (cutoff - timedelta(seconds=1)).isoformat(),  # aware text
            run_ids[3]: "2025-13-45T99:00:00",  # in the index range but not a timestamp: skipped
        }
        for run_id, value in values.items():
            conn.execute("UPDATE workflow_state SET created_at = ? WHERE run_id = ?", (value, run_id))
        conn.execute("UPDATE workflow_state SET created_at = ? WHERE run_id IN (?, ?)", (local(now), *run_ids[4:]))
        conn.commit()
    runner = make_runner(db, ManualClock(now), tz=la, days_old=1)
    assert (await runner.run_job("cleanup")).success
    assert ids(db, "SELECT run_id FROM workflow_state") == set(run_ids) - {run_ids[0], run_ids[2]}
    assert runner.cleanup is not None and runner.cleanup.last_report is not None
    assert runner.cleanup.last_report.bad_values == 1


async def test_row_resaved_between_read_and_delete_is_kept(fixture_copy) -> None:
    db = fixture_copy(SMALL)
    want = sorted(expected(SMALL)["cleanup_old_workflows_30d"]["deleted_run_ids"])
    runner = make_runner(db, ManualClock(computed_at(SMALL)), days_old=30)
    assert runner.cleanup is not None
    job = runner.cleanup
    original = job._delete_workflows

    def resave_then_delete(*args: Any) -> Any:
        with contextlib.closing(sqlite3.connect(db)) as conn:  # the application saves the run again
            conn.execute("UPDATE workflow_state SET created_at = ? WHERE run_id = ?", ("2026-11-21T11:00:00", want[0]))
            conn.commit()
        return original(*args)

    job._delete_workflows = resave_then_delete  # type: ignore[method-assign]
    assert (await runner.run_job("cleanup")).success
    assert ids(db, "SELECT run_id FROM workflow_state WHERE run_id IN (?, ?)", want[:2]) == {want[0]}


# -- dry run, span export coordination ---------------------------------------------------------------


@pytest.mark.parametrize("delete_runs", [False, True])
async def test_dry_run_lists_the_same_and_changes_nothing(fixture_copy, tmp_path: Path, caplog, delete_runs) -> None:
    db = fixture_copy(SMALL)
    before = content_checksums(db)
    now = ManualClock(computed_at(SMALL))
    dry = make_runner(db, now, days_old=30, dry_run=True, delete_runs=delete_runs, batch_size=7)
    assert not writes_enabled(dry.config)
    with caplog.at_level(logging.INFO, logger="exporter.engines.flujo.jobs.cleanup"):
        assert (await dry.run_job("cleanup")).success
    assert content_checksums(db) == before  # opened read-only
    assert dry.cleanup is not None and dry.cleanup.last_report is not None
    dry_report = dry.cleanup.last_report
    listed = " ".join(r.getMessage() for r in caplog.records if "would delete" in r.getMessage())
    want = expected(SMALL)["cleanup_old_workflows_30d"]["deleted_run_ids"]
    assert set(dry_report.workflow_run_ids) == set(want)
    assert all(run_id in listed for run_id in want)
    # The real run on another copy deletes exactly what the dry run listed.
    real_db = tmp_path / "real" / SMALL
    real_db.parent.mkdir()
    real_db.write_bytes(db.read_bytes())
    real = make_runner(real_db, now, days_old=30, delete_runs=delete_runs, batch_size=7)
    assert (await real.run_job("cleanup")).success
    assert real.cleanup is not None and real.cleanup.last_report is not None
    assert set(real.cleanup.last_report.workflow_run_ids) == set(dry_report.workflow_run_ids)
    assert set(real.cleanup.last_report.run_ids) == set(dry_report.run_ids)
    assert real.cleanup.last_report.rows == dry_report.rows
    m = metrics(dry)
    assert sample(m, "state_exporter_cleanup_would_delete_rows", table="workflow_state") == 12
    assert sample(m, "state_exporter_cleanup_deleted_rows_total", table="workflow_state") == 0


async def test_unexported_runs_are_never_deleted(fixture_copy) -> None:
    db = fixture_copy(SMALL)
    now = computed_at(SMALL)
    want = set(expected(SMALL)["cleanup_old_workflows_30d"]["deleted_run_ids"])
    with_spans = ids(db, "SELECT DISTINCT run_id FROM spans")
    old_runs_with_spans = expected_runs_deleted(db, now - timedelta(days=30), set()) & with_spans
    asked: list[str] = []
    exported_ok = set(sorted(old_runs_with_spans)[::2])

    def exported(run_ids: Iterable[str]) -> set[str]:
        wanted = list(run_ids)
        asked.extend(wanted)
        return {r for r in wanted if r in exported_ok}

    spans_before = {r: count(db, "spans", [r]) for r in old_runs_with_spans}
    runner = make_runner(db, ManualClock(now), exported=exported, days_old=30, delete_runs=True)
    assert (await runner.run_job("cleanup")).success
    assert set(asked) <= with_spans  # runs without spans need no answer
    kept = old_runs_with_spans - exported_ok
    assert kept
    assert kept <= ids(db, "SELECT run_id FROM runs")
    for run_id in kept:
        assert count(db, "spans", [run_id]) == spans_before[run_id]
    assert kept & want <= ids(db, "SELECT run_id FROM workflow_state")  # not even their workflow rows
    assert not (exported_ok & ids(db, "SELECT run_id FROM runs"))
    assert (want - kept).isdisjoint(ids(db, "SELECT run_id FROM workflow_state"))
    m = metrics(runner)
    assert sample(m, "state_exporter_cleanup_kept_unexported_runs") == len(kept)
    # Once exported, the next run deletes them.
    exported_ok |= kept
    assert (await runner.run_job("cleanup")).success
    assert not (kept & ids(db, "SELECT run_id FROM runs"))
    assert sample(metrics(runner), "state_exporter_cleanup_kept_unexported_runs") == 0


# -- read-only and locked DBs -------------------------------------------------------------------------


@contextlib.contextmanager
def read_only(db: Path) -> Iterator[None]:
    """Make ``db`` read-only even for root (immutable flag), or skip when that is impossible."""
    db.chmod(0o444)
    immutable = False
    try:
        if os.geteuid() == 0:
            result = subprocess.run(["chattr", "+i", str(db)], capture_output=True, check=False)
            if result.returncode != 0:
                pytest.skip(f"running as root and cannot set the immutable flag: {result.stderr.decode().strip()}")
            immutable = True
        yield
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(db)], check=True)
        db.chmod(0o644)


async def test_read_only_db_fails_clearly_and_is_retried_next_interval(fixture_copy) -> None:
    db = fixture_copy(SMALL)
    clock = ManualClock(computed_at(SMALL))
    runner = make_runner(db, clock, days_old=30, interval="1h")
    scheduler = runner.scheduler
    with read_only(db):
        await scheduler.tick()
        await scheduler.idle()
        stats = runner.stats("cleanup")
        assert stats is not None and not stats.success and stats.errors == 1
        assert stats.last_error is not None and str(db) in stats.last_error and "read-only" in stats.last_error
        m = metrics(runner)  # metrics are still served
        assert sample(m, "state_exporter_job_errors_total", job_name="cleanup") == 1
        assert sample(m, "state_exporter_job_success", job_name="cleanup") == 0
    assert count(db, "workflow_state") == 57
    clock.advance(1800)
    await scheduler.tick()  # not due yet
    await scheduler.idle()
    assert runner.stats("cleanup").runs == 1  # type: ignore[union-attr]
    clock.advance(1800)
    await scheduler.tick()
    await scheduler.idle()
    stats = runner.stats("cleanup")
    assert stats is not None and stats.success and stats.runs == 2 and stats.errors == 1
    assert count(db, "workflow_state") == 45


async def test_locked_db_fails_clearly_then_succeeds(fixture_copy) -> None:
    db = fixture_copy(SMALL)
    runner = make_runner(db, ManualClock(computed_at(SMALL)), days_old=30, busy="100ms")
    holder = sqlite3.connect(db, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # the application holds the write lock
        stats = await runner.run_job("cleanup")
        assert not stats.success
        assert stats.last_error is not None and "database is locked" in stats.last_error
        assert "write_busy_timeout (0.1s)" in stats.last_error
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert count(db, "workflow_state") == 57
    stats = await runner.run_job("cleanup")
    assert stats.success and stats.errors == 1
    assert count(db, "workflow_state") == 45


async def test_missing_db_is_a_clear_error(tmp_path: Path) -> None:
    db = tmp_path / "nope.db"
    runner = make_runner(db, ManualClock(computed_at(SMALL)))
    stats = await runner.run_job("cleanup")
    assert not stats.success and stats.last_error is not None and "does not exist" in stats.last_error
    assert not db.exists()


async def test_hybrid_layout_same_result_as_0435(fixture_copy, tmp_path: Path) -> None:
    """A 0.4.35 file opened by flujo 0.6 (runs.created_at = '' next to start_time) cleans up the same."""
    plain = fixture_copy(SMALL)
    hybrid = tmp_path / "hybrid" / SMALL
    hybrid.parent.mkdir()
    hybrid.write_bytes(plain.read_bytes())
    make_hybrid(hybrid)
    now = ManualClock(computed_at(SMALL))
    results = []
    for db in (plain, hybrid):
        runner = make_runner(db, now, days_old=30, delete_runs=True)
        assert (await runner.run_job("cleanup")).success
        results.append((ids(db, "SELECT run_id FROM workflow_state"), ids(db, "SELECT run_id FROM runs")))
    assert results[0] == results[1]
    assert count(hybrid, "workflow_state") == 45
