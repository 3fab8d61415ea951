"""Time windows compare real instants (never strings), with a pinned clock on copies of the fixtures."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from exporter.clock import ManualClock
from exporter.state import SQLiteBackend
from exporter.state.workflows import STALE_TASK_ERROR

Expected = Callable[[str], dict[str, Any]]
Copy = Callable[[str], Path]


def _at(text: str) -> ManualClock:
    return ManualClock(datetime.fromisoformat(text))


@pytest.fixture
async def small(fixture_copy: Copy, expected: Expected) -> AsyncIterator[tuple[SQLiteBackend, dict[str, Any]]]:
    exp = expected("sample-small.db")
    b = SQLiteBackend(fixture_copy("sample-small.db"), clock=_at(exp["computed_at_utc"]), naive_timezone="UTC")
    try:
        yield b, exp
    finally:
        await b.shutdown()


@pytest.fixture
async def small06(
    fixture_copy: Copy, expected: Expected
) -> AsyncIterator[tuple[SQLiteBackend, ManualClock, dict[str, Any]]]:
    exp = expected("sample06-small.db")
    clock = _at(exp["computed_at_utc"])
    b = SQLiteBackend(fixture_copy("sample06-small.db"), clock=clock, naive_timezone="UTC")
    try:
        yield b, clock, exp
    finally:
        await b.shutdown()


async def test_0435_recent_workflows_are_counted_by_instant(
    small: tuple[SQLiteBackend, dict[str, Any]],
) -> None:
    b, exp = small
    stats = await b.get_workflow_stats()
    assert stats["recent_workflows_24h"] == exp["correct_recent_created_24h"] == 26
    assert exp["get_workflow_stats"]["recent_workflows_24h"] == 30  # flujo's string-compare answer
    for key in ("total_workflows", "status_counts", "average_execution_time_ms"):
        assert stats[key] == exp["get_workflow_stats"][key]
    assert stats["background_status_counts"] == {}
    assert b.get_workflow_stats_sync() == stats


async def test_0435_failed_workflows_24h(small: tuple[SQLiteBackend, dict[str, Any]]) -> None:
    b, exp = small
    failed = await b.get_failed_workflows(24)
    assert len(failed) == exp["correct_failed_updated_24h"] == 10
    assert {w["run_id"] for w in failed} < set(exp["get_failed_workflows_24h"]["run_ids"])
    assert [w["updated_at"] for w in failed] == sorted((w["updated_at"] for w in failed), reverse=True)


async def test_0435_cleanup_old_workflows_30d(small: tuple[SQLiteBackend, dict[str, Any]]) -> None:
    b, exp = small
    before = {w["run_id"] for w in await b.list_workflows()}
    deleted = await b.cleanup_old_workflows(30)
    after = {w["run_id"] for w in await b.list_workflows()}
    expected_ids = set(exp["cleanup_old_workflows_30d"]["deleted_run_ids"])
    assert deleted == exp["correct_older_than_30d_created"] == len(expected_ids) == 12
    assert before - after == expected_ids
    assert len(await b.list_runs()) == exp["runs_total"]  # cleanup leaves runs alone


async def test_06_stats_match_flujo(small06: tuple[SQLiteBackend, ManualClock, dict[str, Any]]) -> None:
    b, _, exp = small06
    stats = await b.get_workflow_stats()
    for key in ("total_workflows", "status_counts", "background_status_counts", "average_execution_time_ms"):
        assert stats[key] == exp["get_workflow_stats"][key]
    assert stats["recent_workflows_24h"] == exp["correct_recent_created_24h_at_compute_time"]
    assert stats["top_level_status_counts"] == exp["list_workflows"]["by_status_non_background"]
    assert b.get_workflow_stats_sync() == stats


async def test_06_failed_workflows(small06: tuple[SQLiteBackend, ManualClock, dict[str, Any]]) -> None:
    b, _, exp = small06
    assert len(await b.get_failed_workflows(24)) == exp["correct_failed_updated_24h_at_compute_time"]


async def test_06_background_tasks(small06: tuple[SQLiteBackend, ManualClock, dict[str, Any]]) -> None:
    b, clock, exp = small06
    tasks = await b.list_background_tasks()
    assert len(tasks) == exp["list_background_tasks"]["count"] == 26
    by_status: dict[str, int] = {}
    for task in tasks:
        by_status[task["status"]] = by_status.get(task["status"], 0) + 1
    assert by_status == exp["list_background_tasks"]["by_status"]
    assert set(tasks[0]) == {
        "run_id", "status", "created_at", "updated_at", "metadata", "parent_run_id", "task_id",
        "background_error",
    }  # fmt: skip
    assert isinstance(tasks[0]["metadata"], dict)
    first = exp["list_background_tasks"]["tasks"][0]
    children = await b.list_background_tasks(parent_run_id=first["parent_run_id"])
    assert first["run_id"] in {t["run_id"] for t in children}
    assert len(await b.list_background_tasks(status="failed", limit=3)) == 3

    clock.set(datetime.fromisoformat(exp["anchor_utc"]))
    failed = await b.get_failed_background_tasks(hours_back=24)
    assert sorted(t["run_id"] for t in failed) == exp["get_failed_background_tasks_24h"]["run_ids"]
    one = failed[0]
    assert await b.get_failed_background_tasks(parent_run_id=one["parent_run_id"]) == [one]


async def test_06_cleanup_stale_background_tasks(
    small06: tuple[SQLiteBackend, ManualClock, dict[str, Any]],
) -> None:
    b, clock, exp = small06
    expected_ids = exp["cleanup_stale_background_tasks_24h_on_copy"]["changed_run_ids"]
    assert await b.cleanup_stale_background_tasks(24) == len(expected_ids) == 4
    now_iso = clock().isoformat()
    changed = [t for t in await b.list_background_tasks() if t["updated_at"] == now_iso]
    assert sorted(t["run_id"] for t in changed) == expected_ids
    assert {(t["status"], t["background_error"]) for t in changed} == {("failed", STALE_TASK_ERROR)}
    stats = await b.get_workflow_stats()
    assert (
        stats["background_status_counts"]
        == exp["cleanup_stale_background_tasks_24h_on_copy"]["background_status_counts_after"]
    )
    assert await b.cleanup_stale_background_tasks(24) == 0


LA = ZoneInfo("America/Los_Angeles")
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)  # 04:00 in Los Angeles (UTC-8)


def _la_naive(hours_ago: float) -> str:
    """What flujo 0.4 writes in Los Angeles: local naive isoformat()."""
    return (NOW - timedelta(hours=hours_ago)).astimezone(LA).replace(tzinfo=None).isoformat()


async def _la_db(path: Path) -> None:
    """A DB written by a flujo 0.4 process running with TZ=America/Los_Angeles."""
    b = SQLiteBackend(path)
    await b.list_workflows()
    await b.shutdown()
    rows = [
        # run_id, status, created (hours ago), updated (hours ago)
        ("in_23h", "completed", 23, 23),
        ("out_25h", "failed", 25, 25),
        ("failed_2h", "failed", 30, 2),
        ("failed_20h", "failed", 30, 20),
        ("failed_26h", "failed", 30, 26),
        ("old_29d_23h", "completed", 29 * 24 + 23, 1),
        ("old_30d_1h", "completed", 30 * 24 + 1, 1),
        ("bg_stale_25h", "running", 25, 25),
        ("bg_fresh_23h", "running", 23, 23),
    ]
    conn = sqlite3.connect(path)
    conn.executemany(
        "INSERT INTO workflow_state (run_id, pipeline_id, pipeline_name, pipeline_version, "
        "current_step_index, pipeline_context, status, created_at, updated_at, is_background_task) "
        "VALUES (?, 'p', 'p', '1', 0, '{}', ?, ?, ?, ?)",
        [(r, s, _la_naive(c), _la_naive(u), int(r.startswith("bg_"))) for r, s, c, u in rows],
    )
    conn.commit()
    conn.close()


async def test_los_angeles_writer_uses_real_instants(tmp_path: Path) -> None:
    path = tmp_path / "la.db"
    await _la_db(path)
    b = SQLiteBackend(path, clock=ManualClock(NOW), naive_timezone="America/Los_Angeles")
    try:
        stats = await b.get_workflow_stats()
        assert stats["recent_workflows_24h"] == 2  # in_23h, bg_fresh_23h
        failed = [w["run_id"] for w in await b.get_failed_workflows(24)]
        assert failed == ["failed_2h", "failed_20h"]
        assert await b.cleanup_stale_background_tasks(24) == 1
        assert [t["run_id"] for t in await b.list_background_tasks(status="failed")] == ["bg_stale_25h"]
        assert await b.cleanup_old_workflows(30) == 1
        assert "old_30d_1h" not in {w["run_id"] for w in await b.list_workflows()}
        assert "old_29d_23h" in {w["run_id"] for w in await b.list_workflows()}
        loaded = await b.load_state("in_23h")
        assert loaded is not None and loaded["created_at"] == NOW - timedelta(hours=23)
    finally:
        await b.shutdown()


async def test_same_rows_read_as_utc_give_other_answers(tmp_path: Path) -> None:
    """The zone matters: reading LA wall times as UTC shifts every row by 8 h."""
    path = tmp_path / "la.db"
    await _la_db(path)
    b = SQLiteBackend(path, clock=ManualClock(NOW), naive_timezone="UTC")
    try:
        assert (await b.get_workflow_stats())["recent_workflows_24h"] == 0  # every row looks 8 h older
        assert [w["run_id"] for w in await b.get_failed_workflows(24)] == ["failed_2h"]
        # flujo's string compare against datetime('now','-24 hours') = '2026-11-20 12:00:00' would also count
        # every row of 2026-11-20 ('T' > ' '), e.g. failed_26h:
        assert _la_naive(26) > "2026-11-20 12:00:00"
    finally:
        await b.shutdown()


async def test_unparsable_timestamps_are_skipped_with_a_warning(
    backend: SQLiteBackend,
    db_path: Path,
    caplog: pytest.LogCaptureFixture,
    make_state: Callable[..., dict[str, Any]],
) -> None:
    await backend.save_state("good", make_state("good", status="failed"))
    conn = sqlite3.connect(db_path)
    conn.execute(
        "INSERT INTO workflow_state (run_id, pipeline_id, pipeline_name, pipeline_version, "
        "current_step_index, status, created_at, updated_at) "
        "VALUES ('bad_ts', 'p', 'p', '1', 0, 'failed', 'yesterday-ish', 'garbage')"
    )
    conn.commit()
    conn.close()
    with caplog.at_level(logging.WARNING, logger="exporter.state"):
        stats = await backend.get_workflow_stats()
        sync_stats = backend.get_workflow_stats_sync()
        failed = await backend.get_failed_workflows(24)
        deleted = await backend.cleanup_old_workflows(0)
    assert stats["total_workflows"] == 2 and stats["recent_workflows_24h"] == 1
    assert sync_stats == stats
    assert [w["run_id"] for w in failed] == ["good"]
    assert deleted == 1  # 'good' is older than "now"; 'bad_ts' is never deleted by age
    messages = [r.getMessage() for r in caplog.records]
    assert any("workflow_state.created_at" in m and "bad_ts" in m for m in messages)
    assert any("workflow_state.updated_at" in m and "bad_ts" in m for m in messages)
    loaded = await backend.load_state("bad_ts")
    assert loaded is not None and loaded["created_at"] == "yesterday-ish"


async def test_cleanup_and_stale_page_through_more_than_one_batch(tmp_path: Path) -> None:
    """The backend's cleanup and stale timeout run on the jobs' core: keyset pages and one short write
    transaction per batch.  Many rows sharing one created_at (ties across page borders) are all found."""
    from exporter.state.workflows import WRITE_BATCH

    path = tmp_path / "many.db"
    b = SQLiteBackend(path, clock=_at("2026-11-21T12:00:00+00:00"), naive_timezone="UTC")
    try:
        await b.list_workflows()  # creates the file
        old, fresh = "2026-10-01T00:00:00+00:00", "2026-11-21T11:00:00+00:00"
        count = 2 * WRITE_BATCH + 7
        rows = [(f"old{i}", "running", old, old, 1) for i in range(count)]
        rows += [(f"new{i}", "running", fresh, fresh, 1) for i in range(3)]
        conn = sqlite3.connect(path)
        conn.executemany(
            "INSERT INTO workflow_state (run_id, pipeline_id, pipeline_name, pipeline_version, "
            "current_step_index, pipeline_context, status, created_at, updated_at, is_background_task) "
            "VALUES (?, 'p', 'p', '1', 0, '{}', ?, ?, ?, ?)",
            rows,
        )
        conn.commit()
        conn.close()
        assert await b.cleanup_stale_background_tasks(24) == count
        failed = await b.list_background_tasks(status="failed")
        assert len(failed) == count and {t["updated_at"] for t in failed} == {"2026-11-21T12:00:00+00:00"}
        assert await b.cleanup_stale_background_tasks(24) == 0
        assert await b.cleanup_old_workflows(30) == count
        assert sorted(w["run_id"] for w in await b.list_workflows()) == ["new0", "new1", "new2"]
    finally:
        await b.shutdown()
