"""One bad row never stops a job: it is skipped and counted, every other eligible row is processed."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from datetime import UTC, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from support import SMALL, SMALL06, computed_at, expected

from exporter.clock import ManualClock
from exporter.jobs import JobRunner, JobsConfig
from exporter.reader import StateReader

TOKYO = ZoneInfo("Asia/Tokyo")
NEW_YORK = ZoneInfo("America/New_York")

# Text that parses but has no UTC instant, in each convention and writer zone.
OVERFLOWING = [
    pytest.param("0001-01-01T00:00:00+05:00", UTC, id="aware-year-1-east"),
    pytest.param("9999-12-31T23:59:59-05:00", UTC, id="aware-year-9999-west"),
    pytest.param("0001-01-01T00:00:00", TOKYO, id="naive-year-1-eastern-writer"),
    pytest.param("9999-12-31T23:00:00", NEW_YORK, id="naive-year-9999-western-writer"),
]


async def no_sleep(_: float) -> None:
    await asyncio.sleep(0)


def runner(db: Path, tz: tzinfo, jobs: dict[str, Any]) -> JobRunner:
    config = JobsConfig.model_validate({"write_busy_timeout": "200ms", **jobs})
    clock = ManualClock(computed_at(SMALL06 if "stale_background_tasks" in jobs else SMALL))
    return JobRunner(config, db, tz, StateReader(db, naive_timezone=tz), clock, sleep=no_sleep)


def copy_rows(db: Path, template_run_id: str, rows: list[dict[str, Any]]) -> None:
    """Insert copies of an existing workflow_state row with some columns changed (as flujo writes them)."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.row_factory = sqlite3.Row
        template = dict(conn.execute("SELECT * FROM workflow_state WHERE run_id = ?", (template_run_id,)).fetchone())
        columns = list(template)
        marks = ", ".join("?" * len(columns))
        conn.executemany(
            f"INSERT INTO workflow_state ({', '.join(columns)}) VALUES ({marks})",
            [tuple({**template, **row}[c] for c in columns) for row in rows],
        )
        conn.commit()


def run_ids(db: Path, where: str = "1") -> set[str]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return {r[0] for r in conn.execute(f"SELECT run_id FROM workflow_state WHERE {where}")}


@pytest.mark.parametrize(("bad", "tz"), OVERFLOWING)
async def test_cleanup_deletes_every_eligible_row_around_an_overflowing_one(fixture_copy, bad: str, tz: tzinfo) -> None:
    db = fixture_copy(SMALL)
    template = next(iter(run_ids(db, "status = 'completed'")))
    old = [
        {"run_id": f"old_{n:04d}", "created_at": "2025-01-01T00:00:00", "updated_at": "2025-01-01T00:00:00"}
        for n in range(2000)
    ]
    copy_rows(db, template, [*old, {"run_id": "bad_row", "created_at": bad, "updated_at": bad}])
    jobs = runner(db, tz, {"cleanup": {"enabled": True, "days_old": 30, "jitter": 0, "pause_between_batches": 0}})
    stats = await jobs.run_job("cleanup")
    assert stats.success, stats.last_error
    left = run_ids(db)
    assert not any(run_id.startswith("old_") for run_id in left)  # all 2000 eligible rows deleted
    assert "bad_row" in left  # the bad row is skipped, not deleted on a guess
    assert jobs.cleanup is not None and jobs.cleanup.last_report is not None
    assert jobs.cleanup.last_report.rows["workflow_state"] >= 2000


@pytest.mark.parametrize(("bad", "tz"), OVERFLOWING)
async def test_stale_task_job_fails_the_stale_tasks_around_an_overflowing_one(
    fixture_copy, bad: str, tz: tzinfo
) -> None:
    db = fixture_copy(SMALL06)
    want = set(expected(SMALL06)["cleanup_stale_background_tasks_24h_on_copy"]["changed_run_ids"])
    template = sorted(want)[0]
    copy_rows(db, template, [{"run_id": "bad_task", "updated_at": bad, "created_at": bad}])
    jobs = runner(db, tz, {"stale_background_tasks": {"enabled": True, "stale_hours": 24, "jitter": 0}})
    stats = await jobs.run_job("stale_background_tasks")
    assert stats.success, stats.last_error
    assert jobs.stale is not None
    if tz is UTC:  # in another writer zone the fixture's own naive times move too: only the bad row matters
        assert set(jobs.stale.last_changed) == want
    assert "bad_task" not in jobs.stale.last_changed
    assert "bad_task" in run_ids(db, "status = 'running'")
