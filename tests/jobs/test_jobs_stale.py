"""Stale background-task timeout on copies of the real fixtures."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from support import LEGACY, SMALL, SMALL06, computed_at, content_checksums, expected, parse_exposition, sample

from exporter.clock import ManualClock
from exporter.jobs import JobRunner, JobsConfig, writes_enabled
from exporter.reader import StateReader
from exporter.timeparse import parse_instant

FLUJO_TEXT = "Task timeout: process likely crashed"


async def no_sleep(_: float) -> None:
    await asyncio.sleep(0)


def make_runner(db: Path, clock: ManualClock, **stale: Any) -> JobRunner:
    config = JobsConfig.model_validate(
        {"write_busy_timeout": "200ms", "stale_background_tasks": {"enabled": True, "jitter": 0, **stale}}
    )
    assert writes_enabled(config)
    return JobRunner(config, db, UTC, StateReader(db, naive_timezone=UTC), clock, sleep=no_sleep)


def rows(db: Path) -> dict[str, tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return {r[0]: tuple(r[1:]) for r in conn.execute("SELECT run_id, * FROM workflow_state")}


def metrics(runner: JobRunner) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(runner.collector())
    return parse_exposition(generate_latest(registry).decode())


async def test_sample06_fails_exactly_what_flujo_failed(fixture_copy) -> None:
    db = fixture_copy(SMALL06)
    flujo = expected(SMALL06)["cleanup_stale_background_tasks_24h_on_copy"]
    want = set(flujo["changed_run_ids"])
    assert len(want) == 4
    before = rows(db)
    now = computed_at(SMALL06)
    runner = make_runner(db, ManualClock(now), stale_hours=24)
    stats = await runner.run_job("stale_background_tasks")
    assert stats.success, stats.last_error
    after = rows(db)
    changed = {run_id for run_id in before if before[run_id] != after[run_id]}
    assert changed == want
    assert runner.stale is not None and set(runner.stale.last_changed) == want
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.row_factory = sqlite3.Row
        marks = ", ".join("?" * len(want))
        for row in conn.execute(f"SELECT * FROM workflow_state WHERE run_id IN ({marks})", sorted(want)):
            assert row["status"] == "failed"
            assert row["background_error"] == FLUJO_TEXT
            assert parse_instant(row["updated_at"]) == now
            assert row["updated_at"].endswith("+00:00")  # aware UTC ISO
    for item in flujo["changed_rows_after"]:  # flujo's own result agrees on status and text
        assert (item["status"], item["background_error"]) == ("failed", FLUJO_TEXT)
    m = metrics(runner)
    assert sample(m, "state_exporter_stale_tasks_failed_total") == 4
    assert sample(m, "state_exporter_job_supported", job_name="stale_background_tasks") == 1
    # Idempotent: the next run changes nothing.
    assert (await runner.run_job("stale_background_tasks")).success
    assert rows(db) == after
    assert sample(metrics(runner), "state_exporter_stale_tasks_failed_total") == 4


async def test_threshold_is_an_instant(fixture_copy) -> None:
    db = fixture_copy(SMALL06)
    now = computed_at(SMALL06)
    ages = {t["run_id"]: t["age_hours"] for t in expected(SMALL06)["stale_background_over_24h_at_compute_time"]}
    youngest = min(ages, key=lambda run_id: ages[run_id])  # about 30 h
    runner = make_runner(db, ManualClock(now), stale_hours=ages[youngest] + 0.01, error_message="custom text")
    assert (await runner.run_job("stale_background_tasks")).success
    assert runner.stale is not None and set(runner.stale.last_changed) == set(ages) - {youngest}
    with contextlib.closing(sqlite3.connect(db)) as conn:
        errors = {
            r[0] for r in conn.execute("SELECT background_error FROM workflow_state WHERE run_id != ?", (youngest,))
        }
    assert "custom text" in errors


@pytest.mark.parametrize("name", [SMALL, LEGACY])
async def test_layout_without_background_tasks_reported_once(fixture_copy, caplog, name: str) -> None:
    db = fixture_copy(name)
    before = content_checksums(db)
    runner = make_runner(db, ManualClock(computed_at(SMALL)))
    with caplog.at_level(logging.INFO):
        for _ in range(3):
            stats = await runner.run_job("stale_background_tasks")
            assert stats.success and stats.errors == 0
    lines = [r for r in caplog.records if "not supported by this DB layout" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    m = metrics(runner)
    assert sample(m, "state_exporter_job_supported", job_name="stale_background_tasks") == 0
    assert sample(m, "state_exporter_job_success", job_name="stale_background_tasks") == 1
    assert content_checksums(db) == before  # never opened for writing


async def test_locked_db_fails_clearly(fixture_copy) -> None:
    db = fixture_copy(SMALL06)
    runner = make_runner(db, ManualClock(computed_at(SMALL06) + timedelta(hours=1)))
    holder = sqlite3.connect(db, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        stats = await runner.run_job("stale_background_tasks")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert not stats.success and stats.last_error is not None and "database is locked" in stats.last_error
    assert sample(metrics(runner), "state_exporter_stale_tasks_failed_total") == 0
    stats = await runner.run_job("stale_background_tasks")
    assert stats.success and sample(metrics(runner), "state_exporter_stale_tasks_failed_total") == 4


async def test_hybrid_layout_is_supported(fixture_copy) -> None:
    from support import make_hybrid

    db = fixture_copy(SMALL)
    make_hybrid(db)
    before = rows(db)
    runner = make_runner(db, ManualClock(computed_at(SMALL)))
    assert (await runner.run_job("stale_background_tasks")).success
    assert sample(metrics(runner), "state_exporter_job_supported", job_name="stale_background_tasks") == 1
    assert rows(db) == before  # no background tasks in it
