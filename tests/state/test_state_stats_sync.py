"""get_workflow_stats_sync: index-only query plans, use from a thread while a loop runs, errors."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from exporter.state import SQLiteBackend, StateBackendError
from exporter.state.workflows import STATS_QUERIES

MakeState = Callable[..., dict[str, Any]]


async def _fill(backend: SQLiteBackend, make_state: MakeState, n: int) -> None:
    rng = random.Random(7)
    now = datetime.utcnow()
    states = []
    for i in range(n):
        at = now - timedelta(hours=rng.uniform(0, 24 * 60))
        states.append(
            make_state(
                f"run_{i:06d}",
                pipeline_id=f"p{i % 7}",
                status=rng.choice(["completed", "completed", "failed", "running", "paused", "cancelled"]),
                created_at=at,
                updated_at=at,
                execution_time_ms=rng.randint(1, 10_000) if i % 10 == 0 else None,
                is_background_task=i % 30 == 0,
            )
        )
    await backend.save_states(states)


@pytest.mark.parametrize("analyze", [False, True])
async def test_stats_queries_use_indexes_only(
    backend: SQLiteBackend, make_state: MakeState, db_path: Path, analyze: bool
) -> None:
    await _fill(backend, make_state, 3000)
    conn = sqlite3.connect(db_path)
    try:
        if analyze:  # the plans must survive planner statistics too
            conn.execute("ANALYZE")
        for sql in STATS_QUERIES:
            params = ("2026-01-01",) if "?" in sql else ()
            details = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params)]
            touching = [d for d in details if "workflow_state" in d]
            assert touching, (sql, details)
            for detail in touching:
                assert "COVERING INDEX" in detail, (sql, details)  # never the table itself
    finally:
        conn.close()


async def test_sync_and_async_stats_agree(backend: SQLiteBackend, make_state: MakeState) -> None:
    await _fill(backend, make_state, 2000)
    stats = await backend.get_workflow_stats()
    assert backend.get_workflow_stats_sync() == stats
    assert stats["total_workflows"] == 2000
    assert sum(stats["background_status_counts"].values()) == 67
    assert 0 < stats["recent_workflows_24h"] < 2000


async def test_sync_stats_from_a_thread_while_the_loop_writes(backend: SQLiteBackend, make_state: MakeState) -> None:
    await backend.save_state("seed", make_state("seed"))
    results: list[dict[str, Any]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def collector() -> None:  # what a Prometheus collector thread does on every scrape
        try:
            while not stop.is_set():
                results.append(backend.get_workflow_stats_sync())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=collector)
    thread.start()
    try:
        for i in range(200):
            await backend.save_state(f"r{i}", make_state(f"r{i}"))
            if i % 50 == 0:
                await asyncio.sleep(0.01)
    finally:
        stop.set()
        await asyncio.to_thread(thread.join)
    assert not errors
    assert results
    totals = [r["total_workflows"] for r in results]
    assert totals == sorted(totals) and totals[0] >= 1 and totals[-1] <= 201
    assert (await asyncio.to_thread(backend.get_workflow_stats_sync))["total_workflows"] == 201


def test_sync_stats_without_any_event_loop(db_path: Path) -> None:
    b = SQLiteBackend(db_path)
    assert b.get_workflow_stats_sync()["total_workflows"] == 0  # initialises the file itself
    assert db_path.exists()


def test_sync_stats_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.db"
    path.write_text("nope, not sqlite")
    with pytest.raises(StateBackendError) as info:
        SQLiteBackend(path).get_workflow_stats_sync()
    assert str(path) in str(info.value)


async def test_sync_stats_timeout_raises(backend: SQLiteBackend, make_state: MakeState) -> None:
    await _fill(backend, make_state, 2000)
    with pytest.raises(StateBackendError, match="interrupted"):
        backend.get_workflow_stats_sync(timeout=-1)
