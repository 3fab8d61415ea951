"""Runs, steps, traces, spans, system state and evaluations on a fresh (0.6 layout) DB."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from exporter.clock import ManualClock
from exporter.state import SQLiteBackend, StateBackendError

MakeState = Callable[..., dict[str, Any]]


def _tree(prefix: str = "s", base: float = 1_795_000_000.0) -> dict[str, Any]:
    return {
        "span_id": f"{prefix}-root",
        "name": "pipeline_root",
        "start_time": base,
        "end_time": base + 10,
        "status": "completed",
        "attributes": {"initial_input": "hello"},
        "children": [
            {
                "span_id": f"{prefix}-a",
                "name": "extract",
                "start_time": base + 1,
                "end_time": base + 3,
                "status": "completed",
                "attributes": {"success": True},
                "children": [{"span_id": f"{prefix}-a1", "name": "inner", "start_time": base + 1.5, "end_time": None}],
            },
            {
                "span_id": f"{prefix}-b",
                "name": "load",
                "start_time": base + 4,
                "end_time": base + 5,
                "status": "failed",
                "attributes": {"feedback": "boom"},
            },
        ],
    }


async def test_run_lifecycle(backend: SQLiteBackend, make_state: MakeState) -> None:
    await backend.save_run_start(
        {
            "run_id": "r1",
            "pipeline_name": "etl",
            "pipeline_version": "1.2",
            "created_at": datetime(2026, 1, 1, 10),
        }
    )
    await backend.save_run_start({"run_id": "r2", "pipeline_name": "other", "created_at": datetime(2026, 1, 1, 11)})
    for i, name in enumerate(["extract", "transform"]):
        await backend.save_step_result(
            {
                "run_id": "r1",
                "step_name": name,
                "step_index": i,
                "output": {"i": i},
                "cost_usd": 0.25,
                "token_counts": 10 * i,
                "execution_time_ms": 100 + i,
            }
        )
    await backend.save_run_end("r1", {"status": "completed", "total_cost": 0.5, "final_context": {"done": True}})

    details = await backend.get_run_details("r1")
    assert details is not None
    assert details["status"] == "completed"
    assert details["start_time"] == "2026-01-01T10:00:00+00:00"
    assert details["end_time"].endswith("+00:00")
    assert details["total_cost"] == 0.5
    assert details["final_context"] == {"done": True}
    assert details["pipeline_id"] == "etl"
    assert await backend.get_run_details("nope") is None

    runs = await backend.list_runs()
    assert [r["run_id"] for r in runs] == ["r2", "r1"]
    assert {
        "run_id",
        "pipeline_name",
        "pipeline_version",
        "status",
        "start_time",
        "end_time",
        "total_cost",
    } <= set(runs[0])
    assert [r["run_id"] for r in await backend.list_runs(status="completed")] == ["r1"]
    assert [r["run_id"] for r in await backend.list_runs(pipeline_name="other")] == ["r2"]
    assert [r["run_id"] for r in await backend.list_runs(limit=1, offset=1)] == ["r1"]

    steps = await backend.list_run_steps("r1")
    assert [
        (s["step_name"], s["step_index"], s["output"], s["cost"], s["tokens"], s["duration_ms"]) for s in steps
    ] == [
        ("extract", 0, {"i": 0}, 0.25, 0, 100),
        ("transform", 1, {"i": 1}, 0.25, 10, 101),
    ]
    assert set(steps[0]) >= {
        "step_name", "step_index", "status", "start_time", "end_time", "duration_ms", "cost", "tokens",
        "input", "output", "error",
    }  # fmt: skip


async def test_list_runs_metadata_filter(backend: SQLiteBackend, make_state: MakeState) -> None:
    metas = {
        "a": {"team": "data", "priority": 1, "flags": {"urgent": True}, "owner": None},
        "b": {"team": "data", "priority": 2, "flags": {"urgent": False}, "owner": "x"},
        "c": {"team": "web", "priority": 1.5},
    }
    for run_id, meta in metas.items():
        await backend.save_state(run_id, make_state(run_id, metadata=meta))
        await backend.save_run_start({"run_id": run_id, "pipeline_name": "p"})
    await backend.save_run_start({"run_id": "no_state", "pipeline_name": "p"})

    async def ids(flt: dict[str, Any]) -> list[str]:
        return sorted(r["run_id"] for r in await backend.list_runs(metadata_filter=flt))

    assert await ids({"team": "data"}) == ["a", "b"]
    assert await ids({"team": "data", "priority": 2}) == ["b"]
    assert await ids({"priority": 1.5}) == ["c"]
    assert await ids({"flags.urgent": True}) == ["a"]
    assert await ids({"flags.urgent": False}) == ["b"]
    assert await ids({"owner": None}) == ["a"]
    assert await ids({"team": "nobody"}) == []
    assert await ids({}) == ["a", "b", "c", "no_state"]
    workflow_status = {r["run_id"]: r["workflow_status"] for r in await backend.list_runs()}
    assert workflow_status == {"a": "completed", "b": "completed", "c": "completed", "no_state": None}


async def test_trace_round_trip_and_spans(backend: SQLiteBackend) -> None:
    await backend.save_run_start({"run_id": "r1", "pipeline_name": "etl"})
    await backend.save_trace("r1", _tree())
    trace = await backend.get_trace("r1")
    assert trace is not None
    assert trace["span_id"] == "s-root" and trace["parent_span_id"] is None
    assert trace["attributes"] == {"initial_input": "hello"}
    assert [c["span_id"] for c in trace["children"]] == ["s-a", "s-b"]
    assert trace["children"][0]["children"][0]["span_id"] == "s-a1"
    assert trace["children"][0]["children"][0]["status"] == "running"
    assert set(trace) == {
        "span_id",
        "parent_span_id",
        "name",
        "start_time",
        "end_time",
        "status",
        "attributes",
        "children",
    }

    spans = await backend.get_spans("r1")
    assert [s["span_id"] for s in spans] == ["s-root", "s-a", "s-a1", "s-b"]
    assert [s["parent_span_id"] for s in spans] == [None, "s-root", "s-a", "s-root"]
    assert [s["span_id"] for s in await backend.get_spans("r1", status="failed")] == ["s-b"]
    assert [s["span_id"] for s in await backend.get_spans("r1", name="extract")] == ["s-a"]

    # saving again replaces the spans
    await backend.save_trace("r1", _tree("t"))
    assert {s["span_id"] for s in await backend.get_spans("r1")} == {"t-root", "t-a", "t-a1", "t-b"}

    # save_spans: flat list, any order (foreign keys are checked at commit)
    flat = [
        {"span_id": "c", "parent_span_id": "p", "name": "child", "start_time": 2.0, "end_time": 3.0},
        {"span_id": "p", "parent_span_id": None, "name": "root", "start_time": 1.0, "end_time": 4.0},
    ]
    await backend.save_spans("r1", flat)
    rebuilt = await backend.get_trace("r1")
    assert rebuilt is not None and rebuilt["span_id"] == "p" and rebuilt["children"][0]["span_id"] == "c"


async def test_trace_depth_limit(backend: SQLiteBackend) -> None:
    await backend.save_run_start({"run_id": "deep", "pipeline_name": "p"})
    node: dict[str, Any] = {"span_id": "n150", "name": "n", "start_time": 150.0}
    for i in range(149, -1, -1):
        node = {"span_id": f"n{i}", "name": "n", "start_time": float(i), "children": [node]}
    await backend.save_trace("deep", node)
    assert len(await backend.get_spans("deep")) == 100


async def test_trace_for_unknown_run_raises(backend: SQLiteBackend, db_path: Path) -> None:
    with pytest.raises(StateBackendError, match="FOREIGN KEY"):
        await backend.save_trace("ghost", _tree())
    with pytest.raises(StateBackendError, match="FOREIGN KEY"):
        await backend.save_spans("ghost", [{"span_id": "x", "name": "x", "start_time": 1.0}])
    with pytest.raises(StateBackendError, match="FOREIGN KEY"):
        await backend.save_step_result({"run_id": "ghost", "step_name": "s", "step_index": 0})
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("SELECT COUNT(*) FROM spans").fetchone()[0] == 0
        assert conn.execute("SELECT COUNT(*) FROM traces").fetchone()[0] == 0
    finally:
        conn.close()
    assert await backend.get_trace("ghost") is None
    # the connection is usable after the failed transactions
    await backend.save_run_start({"run_id": "ok", "pipeline_name": "p"})
    await backend.save_trace("ok", _tree())


async def test_trace_validation(backend: SQLiteBackend) -> None:
    await backend.save_run_start({"run_id": "r", "pipeline_name": "p"})
    with pytest.raises(TypeError):
        await backend.save_trace("r", ["not", "a", "dict"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="start_time"):
        await backend.save_trace("r", {"span_id": "x", "name": "x"})
    with pytest.raises(TypeError):
        await backend.save_trace("r", {"span_id": "x", "name": "x", "start_time": "soon"})


async def test_span_statistics(backend: SQLiteBackend) -> None:
    await backend.save_run_start({"run_id": "r1", "pipeline_name": "etl"})
    await backend.save_run_start({"run_id": "r2", "pipeline_name": "other"})
    await backend.save_trace("r1", _tree("a", base=1000.0))
    await backend.save_trace("r2", _tree("b", base=5000.0))
    stats = await backend.get_span_statistics()
    assert stats["total_spans"] == 6  # the unfinished 'inner' spans are excluded
    assert stats["by_name"] == {"pipeline_root": 2, "extract": 2, "load": 2}
    assert stats["by_status"] == {"completed": 4, "failed": 2}
    assert stats["avg_duration_by_name"]["extract"] == {"total": 4.0, "count": 2, "average": 2.0}
    etl = await backend.get_span_statistics(pipeline_name="etl")
    assert etl["total_spans"] == 3
    windowed = await backend.get_span_statistics(time_range=(1000.0, 1001.0))
    assert windowed["by_name"] == {"pipeline_root": 1, "extract": 1}
    empty = await backend.get_span_statistics(pipeline_name="none")
    assert empty == {"total_spans": 0, "by_name": {}, "by_status": {}, "avg_duration_by_name": {}}
    with pytest.raises(ValueError):
        await backend.get_span_statistics(time_range=(2.0, 1.0))
    with pytest.raises(TypeError):
        await backend.get_span_statistics(time_range=("a", "b"))  # type: ignore[arg-type]


async def test_span_statistics_match_flujo_on_0435_fixture(
    fixture_copy: Callable[[str], Path], expected: Callable[[str], dict[str, Any]]
) -> None:
    exp = expected("sample-small.db")
    b = SQLiteBackend(fixture_copy("sample-small.db"), naive_timezone="UTC")
    try:
        stats = await b.get_span_statistics()
        assert stats["by_name"] == exp["get_span_statistics"]["by_name"]
        assert stats["by_status"] == exp["get_span_statistics"]["by_status"]
        assert stats["total_spans"] == exp["get_span_statistics"]["total_spans"]
        for name, agg in exp["get_span_statistics"]["avg_duration_by_name"].items():
            assert stats["avg_duration_by_name"][name] == pytest.approx(agg)
        total = 0
        for run in exp["per_run"]:
            total += len(await b.get_spans(run["run_id"]))
        assert total == exp["spans_total_via_get_spans"]
    finally:
        await b.shutdown()


async def test_delete_run_cascades(backend: SQLiteBackend, make_state: MakeState, db_path: Path) -> None:
    await backend.save_state("r1", make_state("r1"))
    for run_id in ("r1", "r2"):
        await backend.save_run_start({"run_id": run_id, "pipeline_name": "p"})
        await backend.save_step_result({"run_id": run_id, "step_name": "s", "step_index": 0})
        await backend.save_trace(run_id, _tree(run_id))
        await backend.persist_evaluation(run_id, 0.9, feedback="good", step_name="s", metadata={"judge": "j"})
    await backend.delete_run("r1")
    conn = sqlite3.connect(db_path)
    try:
        for table in ("runs", "steps", "spans", "traces", "evaluations"):
            ids = {r[0] for r in conn.execute(f"SELECT run_id FROM {table}")}
            assert ids == {"r2"}, table
    finally:
        conn.close()
    assert await backend.load_state("r1") is not None  # workflow_state is kept, like flujo


async def test_system_state(db_path: Path) -> None:
    clock = ManualClock(datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
    b = SQLiteBackend(db_path, clock=clock)
    try:
        assert await b.get_system_state("missing") is None
        await b.set_system_state("connector:x:watermark", {"last_key": "k1", "seen": 3})
        got = await b.get_system_state("connector:x:watermark")
        assert got == {
            "key": "connector:x:watermark",
            "value": {"last_key": "k1", "seen": 3},
            "updated_at": "2026-03-01T12:00:00+00:00",
        }
        clock.advance(60)
        await b.set_system_state("connector:x:watermark", {"last_key": "k2"})
        got = await b.get_system_state("connector:x:watermark")
        assert got is not None and got["value"] == {"last_key": "k2"}
        assert got["updated_at"] == "2026-03-01T12:01:00+00:00"
    finally:
        await b.shutdown()


async def test_evaluations(db_path: Path) -> None:
    clock = ManualClock(datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
    b = SQLiteBackend(db_path, clock=clock)
    try:
        for run_id in ("r1", "r2"):
            await b.save_run_start({"run_id": run_id, "pipeline_name": "p"})
        for i in range(25):
            clock.advance(1)
            await b.persist_evaluation("r1" if i % 2 else "r2", i / 25, feedback=f"f{i}", metadata={"i": i})
        evals = await b.list_evaluations()
        assert len(evals) == 20
        assert evals[0]["feedback"] == "f24" and evals[0]["metadata"] == {"i": 24}
        assert set(evals[0]) == {"run_id", "step_name", "score", "feedback", "metadata", "created_at"}
        assert {e["run_id"] for e in await b.list_evaluations(limit=100, run_id="r1")} == {"r1"}
        assert len(await b.list_evaluations(limit=100, run_id="r1")) == 12
        with pytest.raises(TypeError):
            await b.persist_evaluation("r1", "high")  # type: ignore[arg-type]
        with pytest.raises(StateBackendError):
            await b.persist_evaluation("ghost", 0.5)
    finally:
        await b.shutdown()


async def test_0_6_fixture_reads(
    fixture_copy: Callable[[str], Path], expected: Callable[[str], dict[str, Any]]
) -> None:
    exp = expected("sample06-small.db")
    b = SQLiteBackend(fixture_copy("sample06-small.db"), naive_timezone="UTC")
    try:
        assert len(await b.list_runs()) == exp["list_runs"]["count"]
        for key, item in exp["system_state"].items():
            got = await b.get_system_state(key)
            assert got is not None and got["value"] == item["value"] and got["updated_at"] == item["updated_at"]
        evals = await b.list_evaluations()
        assert [(e["run_id"], e["score"], e["metadata"]) for e in evals] == [
            (e["run_id"], e["score"], e["metadata"]) for e in exp["list_evaluations"]
        ]
        stats = await b.get_span_statistics()
        assert stats["by_name"] == exp["get_span_statistics"]["by_name"]
        assert stats["by_status"] == exp["get_span_statistics"]["by_status"]
        run_id = next(r for r, n in exp["spans_per_run"].items() if n == 5)
        trace = await b.get_trace(run_id)
        assert trace is not None and trace["name"] == "pipeline_run"
        assert len(await b.get_spans(run_id)) == 5
        steps = await b.list_run_steps(run_id)
        assert steps and all(s["start_time"] for s in steps)
    finally:
        await b.shutdown()
