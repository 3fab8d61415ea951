"""Every example and edge case of the SQLiteBackend guide (seed 000), on real SQLite files."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from exporter.state import SQLiteBackend, register_custom_serializer, unregister_custom_serializer

MakeState = Callable[..., dict[str, Any]]

WORKFLOW_KEYS = {
    "run_id",
    "pipeline_id",
    "pipeline_name",
    "pipeline_version",
    "current_step_index",
    "status",
    "created_at",
    "updated_at",
    "total_steps",
    "error_message",
    "execution_time_ms",
    "memory_usage_mb",
}


async def test_core_operations_round_trip(backend: SQLiteBackend) -> None:
    now = datetime.utcnow().replace(microsecond=0)
    state = {
        "run_id": "run_123",
        "pipeline_id": "data_processing",
        "pipeline_name": "Data Processing Pipeline",
        "pipeline_version": "1.0.0",
        "current_step_index": 2,
        "pipeline_context": {"input_data": "sample.csv", "processed_rows": 1000},
        "last_step_output": {"status": "success", "rows_processed": 1000},
        "status": "running",
        "created_at": now,
        "updated_at": now,
        "total_steps": 5,
        "error_message": None,
        "execution_time_ms": 1500,
        "memory_usage_mb": 45.2,
    }
    await backend.save_state("run_123", state)
    loaded = await backend.load_state("run_123")
    assert loaded is not None
    assert loaded["pipeline_name"] == "Data Processing Pipeline"
    assert loaded["status"] == "running"
    assert (loaded["current_step_index"], loaded["total_steps"]) == (2, 5)
    assert loaded["pipeline_context"] == {"input_data": "sample.csv", "processed_rows": 1000}
    assert loaded["last_step_output"] == {"status": "success", "rows_processed": 1000}
    assert loaded["execution_time_ms"] == 1500
    assert loaded["memory_usage_mb"] == 45.2
    # naive input = UTC; returned as an aware UTC datetime
    assert loaded["created_at"] == now.replace(tzinfo=loaded["created_at"].tzinfo)
    assert loaded["created_at"].utcoffset() == timedelta(0)

    await backend.delete_state("run_123")
    assert await backend.load_state("run_123") is None
    assert await backend.load_state("never_saved") is None


async def test_our_writes_are_aware_utc_iso(backend: SQLiteBackend, make_state: MakeState) -> None:
    await backend.save_state("r1", make_state("r1", created_at=datetime(2026, 1, 2, 3, 4, 5)))
    [row] = await backend.list_workflows()
    assert row["created_at"] == "2026-01-02T03:04:05+00:00"
    assert row["updated_at"].endswith("+00:00")


async def test_created_at_kept_when_a_later_save_has_none(backend: SQLiteBackend, make_state: MakeState) -> None:
    first = make_state("r1", created_at=datetime(2026, 1, 2, 3, 4, 5))
    await backend.save_state("r1", first)
    second = dict(first, status="failed")
    del second["created_at"]
    await backend.save_state("r1", second)
    [row] = await backend.list_workflows()
    assert row["status"] == "failed"
    assert row["created_at"] == "2026-01-02T03:04:05+00:00"


async def test_listing_with_filters_and_pagination(backend: SQLiteBackend, make_state: MakeState) -> None:
    for i in range(10):
        await backend.save_state(
            f"r{i}",
            make_state(
                f"r{i}",
                status=["running", "failed", "completed"][i % 3],
                pipeline_id="data_processing" if i < 4 else "other",
                created_at=datetime(2026, 1, 1) + timedelta(minutes=i),
            ),
        )
    all_workflows = await backend.list_workflows()
    assert [w["run_id"] for w in all_workflows] == [f"r{i}" for i in reversed(range(10))]
    assert set(all_workflows[0]) >= WORKFLOW_KEYS
    assert [w["run_id"] for w in await backend.list_workflows(limit=3, offset=0)] == ["r9", "r8", "r7"]
    assert {w["status"] for w in await backend.list_workflows(status="failed")} == {"failed"}
    assert len(await backend.list_workflows(status="running")) == 4
    assert len(await backend.list_workflows(pipeline_id="data_processing")) == 4
    filtered = await backend.list_workflows(status="failed", pipeline_id="data_processing", limit=5)
    assert [w["run_id"] for w in filtered] == ["r1"]
    assert await backend.list_workflows(limit=0) == []
    assert [w["run_id"] for w in await backend.list_workflows(offset=8)] == ["r1", "r0"]
    states = await backend.list_states(status="failed")
    assert {s["run_id"] for s in states} == {"r1", "r4", "r7"}
    assert set(states[0]) == {"run_id", "status", "created_at", "updated_at"}


async def test_empty_database(backend: SQLiteBackend) -> None:
    assert await backend.list_workflows() == []
    stats = await backend.get_workflow_stats()
    assert stats["total_workflows"] == 0
    assert stats["status_counts"] == {}
    assert stats["recent_workflows_24h"] == 0
    assert stats["average_execution_time_ms"] == 0
    assert stats["background_status_counts"] == {}
    assert backend.get_workflow_stats_sync() == stats
    assert await backend.get_failed_workflows(hours_back=24) == []
    for hours in [1, 6, 12, 24, 48, 168]:
        assert await backend.get_failed_workflows(hours_back=hours) == []
    assert await backend.cleanup_old_workflows(days_old=1) == 0
    assert await backend.list_states() == []
    assert await backend.list_background_tasks() == []
    assert await backend.get_failed_background_tasks() == []
    assert await backend.cleanup_stale_background_tasks() == 0


async def test_nonexistent_filters_and_empty_pipeline_id(backend: SQLiteBackend, make_state: MakeState) -> None:
    for i in range(3):
        await backend.save_state(f"r{i}", make_state(f"r{i}"))
    assert await backend.list_workflows(status="nonexistent") == []
    assert await backend.list_workflows(pipeline_id="nonexistent_pipeline") == []
    all_with_empty_filter = await backend.list_workflows(pipeline_id="")
    assert len(all_with_empty_filter) == len(await backend.list_workflows()) == 3


async def test_statistics(backend: SQLiteBackend, make_state: MakeState) -> None:
    old = datetime.utcnow() - timedelta(days=3)
    await backend.save_state("a", make_state("a", status="completed", execution_time_ms=1000))
    await backend.save_state("b", make_state("b", status="completed", execution_time_ms=2000))
    await backend.save_state("c", make_state("c", status="failed", execution_time_ms=None))
    await backend.save_state("d", make_state("d", status="running", created_at=old, execution_time_ms=None))
    await backend.save_state(
        "d_bg", make_state("d_bg", status="running", is_background_task=True, parent_run_id="d", task_id="t1")
    )
    stats = await backend.get_workflow_stats()
    assert stats == {
        "total_workflows": 5,
        "status_counts": {"completed": 2, "failed": 1, "running": 2},
        "recent_workflows_24h": 4,
        "average_execution_time_ms": pytest.approx(4000 / 3),
        "background_status_counts": {"running": 1},
        "top_level_status_counts": {"completed": 2, "failed": 1, "running": 1},
    }
    assert backend.get_workflow_stats_sync() == stats


async def test_failed_workflows_window(backend: SQLiteBackend, make_state: MakeState) -> None:
    now = datetime.utcnow()
    for name, hours in [("f1", 0.5), ("f2", 5), ("f3", 30), ("f4", 200)]:
        at = now - timedelta(hours=hours)
        await backend.save_state(
            name,
            make_state(name, status="failed", error_message=f"boom {name}", created_at=at, updated_at=at),
        )
    await backend.save_state("ok", make_state("ok", status="completed"))
    assert [w["run_id"] for w in await backend.get_failed_workflows(hours_back=1)] == ["f1"]
    assert [w["run_id"] for w in await backend.get_failed_workflows(hours_back=24)] == ["f1", "f2"]
    week = await backend.get_failed_workflows(hours_back=168)
    assert [w["run_id"] for w in week] == ["f1", "f2", "f3"]
    assert week[0]["error_message"] == "boom f1"
    assert set(week[0]) >= WORKFLOW_KEYS
    assert len(await backend.get_failed_workflows(hours_back=1000)) == 4


async def test_cleanup_keeps_recent_workflows(backend: SQLiteBackend, make_state: MakeState) -> None:
    await backend.save_state("recent_run", make_state("recent_run"))
    assert await backend.cleanup_old_workflows(days_old=1) == 0
    all_workflows = await backend.list_workflows()
    assert len(all_workflows) == 1
    assert all_workflows[0]["run_id"] == "recent_run"


async def test_cleanup_deletes_old_workflows(backend: SQLiteBackend, make_state: MakeState) -> None:
    now = datetime.utcnow()
    for name, days in [("d40", 40), ("d10", 10), ("d2", 2), ("d0", 0)]:
        await backend.save_state(name, make_state(name, created_at=now - timedelta(days=days)))
    assert await backend.cleanup_old_workflows(days_old=30) == 1
    assert await backend.cleanup_old_workflows(days_old=7) == 1
    assert await backend.cleanup_old_workflows(days_old=1.5) == 1
    assert [w["run_id"] for w in await backend.list_workflows()] == ["d0"]


async def test_large_dataset_query_time_and_pagination(backend: SQLiteBackend, make_state: MakeState) -> None:
    num_workflows = 5000
    now = datetime.utcnow()
    states = [
        make_state(
            f"large_run_{i}",
            pipeline_id=f"pipeline_{i % 10}",
            pipeline_name=f"Pipeline {i % 10}",
            current_step_index=i % 5,
            pipeline_context={"index": i},
            last_step_output=f"output_{i}",
            status="completed" if i % 2 == 0 else "failed",
            created_at=now - timedelta(minutes=i),
            updated_at=now - timedelta(minutes=i),
            execution_time_ms=1000 * (i % 10),
            memory_usage_mb=10.0 * (i % 10),
        )
        for i in range(num_workflows)
    ]
    assert await backend.save_states(states) == num_workflows

    start = time.perf_counter()
    all_workflows = await backend.list_workflows()
    query_time = time.perf_counter() - start
    assert len(all_workflows) == num_workflows
    assert query_time < 2.0

    page_size = 25
    seen: list[str] = []
    for offset in range(0, num_workflows, page_size):
        page = await backend.list_workflows(limit=page_size, offset=offset)
        assert len(page) <= page_size
        seen += [w["run_id"] for w in page]
    assert len(seen) == len(set(seen)) == num_workflows


async def test_pagination_is_stable_with_identical_created_at(backend: SQLiteBackend, make_state: MakeState) -> None:
    at = datetime(2026, 5, 1, 12, 0, 0)
    await backend.save_states(make_state(f"tie_{i:04d}", created_at=at) for i in range(500))
    seen: list[str] = []
    for offset in range(0, 500, 7):
        seen += [w["run_id"] for w in await backend.list_workflows(limit=7, offset=offset)]
    assert len(seen) == len(set(seen)) == 500


async def test_concurrent_workers(backend: SQLiteBackend) -> None:
    async def concurrent_worker(worker_id: int) -> None:
        for i in range(10):
            run_id = f"worker_{worker_id}_run_{i}"
            state = {
                "run_id": run_id,
                "pipeline_id": f"pipeline_{worker_id}",
                "pipeline_name": f"Pipeline {worker_id}",
                "pipeline_version": "1.0",
                "current_step_index": i,
                "pipeline_context": {"worker": worker_id, "iteration": i},
                "last_step_output": f"output_{i}",
                "status": "completed",
                "created_at": datetime.utcnow(),
                "updated_at": datetime.utcnow(),
                "total_steps": 10,
                "error_message": None,
                "execution_time_ms": 1000 * i,
                "memory_usage_mb": 10.0 * i,
            }
            await backend.save_state(run_id, state)
            loaded = await backend.load_state(run_id)
            assert loaded is not None

    await asyncio.gather(*(concurrent_worker(i) for i in range(5)))
    assert len(await backend.list_workflows()) == 50


async def test_concurrent_first_use_initialises_once(db_path: Path, make_state: MakeState) -> None:
    fresh = SQLiteBackend(db_path, naive_timezone="UTC")
    try:
        await asyncio.gather(*(fresh.save_state(f"r{i}", make_state(f"r{i}")) for i in range(20)))
        assert len(await fresh.list_workflows()) == 20
    finally:
        await fresh.shutdown()


class CustomData(BaseModel):
    value: str
    metadata: dict[str, Any]


async def test_custom_type_serialization(backend: SQLiteBackend) -> None:
    calls: list[CustomData] = []

    def serialize_custom_data(obj: CustomData) -> dict[str, Any]:
        calls.append(obj)
        return {"value": obj.value, "metadata": obj.metadata}

    register_custom_serializer(CustomData, serialize_custom_data)
    try:
        state = {
            "run_id": "custom_run",
            "pipeline_id": "test_pipeline",
            "pipeline_name": "Test Pipeline",
            "pipeline_version": "1.0",
            "current_step_index": 0,
            "pipeline_context": {"custom": CustomData(value="test", metadata={"key": "value"})},
            "last_step_output": CustomData(value="output", metadata={"status": "success"}),
            "status": "completed",
            "created_at": datetime.utcnow(),
            "updated_at": datetime.utcnow(),
            "total_steps": 5,
            "error_message": None,
            "execution_time_ms": 1000,
            "memory_usage_mb": 10.0,
        }
        await backend.save_state("custom_run", state)
    finally:
        unregister_custom_serializer(CustomData)
    assert len(calls) == 2  # the registered serializer was used, not the pydantic fallback
    loaded = await backend.load_state("custom_run")
    assert loaded is not None
    assert loaded["pipeline_context"] == {"custom": {"value": "test", "metadata": {"key": "value"}}}
    assert loaded["last_step_output"] == {"value": "output", "metadata": {"status": "success"}}


async def test_pydantic_models_serialize_without_registration(backend: SQLiteBackend, make_state: MakeState) -> None:
    await backend.save_state("m", make_state("m", last_step_output=CustomData(value="v", metadata={"n": 1})))
    loaded = await backend.load_state("m")
    assert loaded is not None
    assert loaded["last_step_output"] == {"value": "v", "metadata": {"n": 1}}


async def test_unserializable_value_raises_type_error(backend: SQLiteBackend, make_state: MakeState) -> None:
    with pytest.raises(TypeError, match="register_custom_serializer"):
        await backend.save_state("x", make_state("x", pipeline_context={"obj": object()}))
    assert await backend.list_workflows() == []


async def test_shutdown_and_lazy_reopen(backend: SQLiteBackend, make_state: MakeState) -> None:
    await backend.save_state("a", make_state("a"))
    await backend.shutdown()
    await backend.shutdown()  # idempotent
    assert [w["run_id"] for w in await backend.list_workflows()] == ["a"]
    await backend.save_state("b", make_state("b"))
    assert len(await backend.list_workflows()) == 2
