"""Opening files: fresh layout, corrupt and foreign files, migration of old layouts, WAL sharing."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import aiosqlite
import pytest

from exporter.engines.flujo.layout import Layout, Schema
from exporter.reader import StateReader
from exporter.state import SQLiteBackend, StateBackendError
from exporter.timeparse import UTC

MakeState = Callable[..., dict[str, Any]]

# Column lists of flujo 0.6.11 (schemas/v0.6.11-github-fresh.sql).
FRESH_06 = {
    "workflow_state": [
        "run_id", "pipeline_id", "pipeline_name", "pipeline_version", "current_step_index",
        "pipeline_context", "last_step_output", "step_history", "status", "created_at", "updated_at",
        "total_steps", "error_message", "execution_time_ms", "memory_usage_mb", "metadata",
        "is_background_task", "parent_run_id", "task_id", "background_error",
    ],
    "runs": [
        "run_id", "pipeline_id", "pipeline_name", "pipeline_version", "status", "created_at",
        "updated_at", "execution_time_ms", "memory_usage_mb", "total_steps", "error_message",
        "end_time", "total_cost", "final_context_blob",
    ],
    "system_state": ["key", "value", "updated_at"],
    "steps": [
        "id", "run_id", "step_name", "step_index", "status", "output", "raw_response", "cost_usd",
        "token_counts", "execution_time_ms", "created_at",
    ],
    "traces": ["run_id", "trace_data", "created_at"],
    "spans": [
        "id", "run_id", "span_id", "parent_span_id", "name", "start_time", "end_time", "status",
        "attributes", "created_at",
    ],
    "evaluations": ["id", "run_id", "step_name", "score", "feedback", "metadata", "created_at"],
}  # fmt: skip
FLUJO_06_INDEXES = {
    "idx_steps_run_id", "idx_steps_step_index", "idx_spans_run_id", "idx_spans_parent_span",
    "idx_evaluations_run_id", "idx_evaluations_created_at", "idx_workflow_state_status",
    "idx_workflow_state_pipeline_id", "idx_workflow_state_parent_run_id",
    "idx_workflow_state_created_at", "idx_runs_status", "idx_runs_pipeline_id", "idx_runs_created_at",
    "idx_runs_pipeline_name",
}  # fmt: skip
# schemas/v0.6.11-github-upgraded-from-v0.4.35.sql: what flujo 0.6.11 makes of a 0.4.35 file.
UPGRADED_FROM_0435 = {
    **FRESH_06,
    "runs": [
        "run_id", "pipeline_name", "pipeline_version", "status", "start_time", "end_time",
        "total_cost", "final_context_blob", "pipeline_id", "created_at", "updated_at",
        "execution_time_ms", "memory_usage_mb", "total_steps", "error_message",
    ],
    "steps": [
        "step_run_id", "run_id", "step_name", "step_index", "status", "start_time", "end_time",
        "duration_ms", "cost", "tokens", "input_blob", "output_blob", "error_blob", "raw_response",
    ],
    "spans": [
        "span_id", "run_id", "parent_span_id", "name", "start_time", "end_time", "status",
        "attributes", "created_at",
    ],
    "workflow_state": [
        "run_id", "pipeline_id", "pipeline_name", "pipeline_version", "current_step_index",
        "pipeline_context", "last_step_output", "step_history", "status", "created_at", "updated_at",
        "total_steps", "error_message", "execution_time_ms", "memory_usage_mb", "metadata",
        "is_background_task", "parent_run_id", "task_id", "background_error",
    ],
}  # fmt: skip


def _layout(path: Path) -> tuple[dict[str, list[str]], set[str]]:
    conn = sqlite3.connect(path)
    try:
        tables = [
            r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")
        ]
        columns = {t: [c[1] for c in conn.execute(f"PRAGMA table_info({t})")] for t in tables}
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index' AND sql IS NOT NULL")}
        return columns, indexes
    finally:
        conn.close()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _pragma(path: Path, name: str) -> Any:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]
    finally:
        conn.close()


async def test_fresh_db_has_the_06_layout(backend: SQLiteBackend, db_path: Path) -> None:
    assert await backend.list_workflows() == []
    columns, indexes = _layout(db_path)
    assert columns == FRESH_06
    assert indexes >= FLUJO_06_INDEXES
    assert _pragma(db_path, "user_version") == 1
    assert _pragma(db_path, "journal_mode") == "wal"
    assert backend.layout is not None and backend.layout.kind == "fresh"


async def test_connection_pragmas(backend: SQLiteBackend) -> None:
    async with backend.session("test") as (conn, _):
        values = {}
        for name in ("journal_mode", "busy_timeout", "synchronous", "foreign_keys"):
            rows = list(await conn.execute_fetchall(f"PRAGMA {name}"))
            values[name] = rows[0][0]
    assert values == {"journal_mode": "wal", "busy_timeout": 5000, "synchronous": 1, "foreign_keys": 1}


async def test_empty_file_is_a_valid_empty_db(db_path: Path, make_state: MakeState) -> None:
    db_path.write_bytes(b"")
    b = SQLiteBackend(db_path)
    try:
        await b.save_state("r", make_state("r"))
        assert await b.load_state("r") is not None
    finally:
        await b.shutdown()


async def test_missing_parent_directory_is_created(tmp_path: Path) -> None:
    b = SQLiteBackend(tmp_path / "a" / "b" / "state.db")
    try:
        assert await b.list_workflows() == []
    finally:
        await b.shutdown()


@pytest.mark.parametrize(
    "content",
    [
        b"This is not a valid SQLite database",
        b"SQLite format 3\x00" + b"\xff" * 84,  # right magic, garbage header
        b"\x00" * 4096,
    ],
)
async def test_corrupt_file_raises_and_is_left_untouched(tmp_path: Path, make_state: MakeState, content: bytes) -> None:
    corrupted_db_path = tmp_path / "corrupted.db"
    corrupted_db_path.write_bytes(content)
    before = _digest(corrupted_db_path)
    corrupted_backend = SQLiteBackend(corrupted_db_path)
    try:
        with pytest.raises(StateBackendError) as info:
            await corrupted_backend.save_state("test_run", {"test": "data"})
        message = str(info.value)
        assert str(corrupted_db_path) in message
        assert "not a SQLite database" in message
        assert info.value.path == corrupted_db_path
        with pytest.raises(StateBackendError):
            await corrupted_backend.load_state("test_run")
        with pytest.raises(StateBackendError, match="not a SQLite database"):
            corrupted_backend.get_workflow_stats_sync()
    finally:
        await corrupted_backend.shutdown()
    assert _digest(corrupted_db_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrupted.db"]  # no .corrupt, -wal, -shm


async def test_seed_text_file_corruption_example(tmp_path: Path) -> None:
    corrupted_db_path = tmp_path / "corrupted.db"
    with open(corrupted_db_path, "w") as f:
        f.write("This is not a valid SQLite database")
    corrupted_backend = SQLiteBackend(corrupted_db_path)
    try:
        await corrupted_backend.save_state("test_run", {"test": "data"})
        pytest.fail("expected an error")
    except Exception as e:
        assert "database" in str(e).lower() or "sqlite" in str(e).lower()
    finally:
        await corrupted_backend.shutdown()
    assert corrupted_db_path.read_text() == "This is not a valid SQLite database"


async def test_foreign_sqlite_db_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE users (id INTEGER); CREATE TABLE orders (id INTEGER); INSERT INTO users VALUES (1);"
    )
    conn.close()
    before = _digest(path)
    b = SQLiteBackend(path)
    try:
        with pytest.raises(StateBackendError) as info:
            await b.list_workflows()
    finally:
        await b.shutdown()
    assert str(path) in str(info.value)
    assert "orders" in str(info.value) and "users" in str(info.value)
    assert _digest(path) == before


async def test_seed_migration_of_old_schema(tmp_path: Path) -> None:
    old_db_path = tmp_path / "old_schema.db"
    async with aiosqlite.connect(old_db_path) as conn:
        await conn.execute(
            """
            CREATE TABLE workflow_state (
                run_id TEXT PRIMARY KEY,
                pipeline_id TEXT,
                pipeline_version TEXT,
                current_step_index INTEGER,
                pipeline_context TEXT,
                last_step_output TEXT,
                status TEXT,
                created_at TEXT,
                updated_at TEXT
            )
            """
        )
        await conn.commit()
    async with aiosqlite.connect(old_db_path) as conn:
        await conn.execute(
            "INSERT INTO workflow_state VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                "old_run",
                "old_pipeline",
                "0.1",
                1,
                "{}",
                "old_output",
                "completed",
                "2023-01-01T00:00:00",
                "2023-01-01T00:00:00",
            ),
        )
        await conn.execute("INSERT INTO workflow_state (run_id, pipeline_id) VALUES ('null_run', NULL)")
        await conn.commit()

    migrated_backend = SQLiteBackend(old_db_path, naive_timezone="UTC")
    try:
        loaded = await migrated_backend.load_state("old_run")
        assert loaded is not None
        assert loaded["pipeline_id"] == "old_pipeline"
        assert loaded["pipeline_name"] == "old_pipeline"  # filled from pipeline_id
        assert loaded["last_step_output"] == "old_output"  # not JSON: returned as stored
        assert loaded["created_at"] == datetime.fromisoformat("2023-01-01T00:00:00+00:00")
        assert loaded["total_steps"] == 0
        nulls = await migrated_backend.load_state("null_run")
        assert nulls is not None
        assert (nulls["status"], nulls["current_step_index"], nulls["pipeline_context"]) == ("running", 0, {})

        new_state = {
            "run_id": "new_run",
            "pipeline_id": "new_pipeline",
            "pipeline_name": "New Pipeline",
            "pipeline_version": "1.0",
            "current_step_index": 0,
            "pipeline_context": {"new": "data"},
            "last_step_output": "new_output",
            "status": "running",
            "created_at": datetime.utcnow(),
            "updated_at": datetime.utcnow(),
            "total_steps": 5,
            "error_message": None,
            "execution_time_ms": 1000,
            "memory_usage_mb": 10.0,
        }
        await migrated_backend.save_state("new_run", new_state)
        new_loaded = await migrated_backend.load_state("new_run")
        assert new_loaded is not None
        assert new_loaded["pipeline_name"] == "New Pipeline"
        assert len(await migrated_backend.list_workflows()) == 3
        assert migrated_backend.layout is not None
        assert migrated_backend.layout.kind == "legacy-workflow-state-only"
    finally:
        await migrated_backend.shutdown()
    columns, _ = _layout(old_db_path)
    assert set(columns["workflow_state"]) == set(FRESH_06["workflow_state"])
    assert columns["runs"] == FRESH_06["runs"]
    assert columns["spans"] == FRESH_06["spans"]


async def test_migration_of_legacy_0432_fixture(fixture_copy: Callable[[str], Path], make_state: MakeState) -> None:
    path = fixture_copy("sample-v0.4.32-legacy.db")
    conn = sqlite3.connect(path)
    before = conn.execute("SELECT * FROM workflow_state ORDER BY run_id").fetchall()
    conn.close()
    assert len(before) == 6

    b = SQLiteBackend(path, naive_timezone="UTC")
    try:
        workflows = await b.list_workflows()
        assert sorted(w["run_id"] for w in workflows) == [f"run_legacy_{i:04d}" for i in range(6)]
        loaded = await b.load_state("run_legacy_0001")
        assert loaded is not None and loaded["pipeline_name"] == "legacy_etl"
        assert loaded["step_history"] == []
        await b.save_state("new", make_state("new"))
        await b.save_run_start({"run_id": "new", "pipeline_name": "p"})
        await b.save_step_result({"run_id": "new", "step_name": "s", "step_index": 0, "output": {"x": 1}})
        assert [s["output"] for s in await b.list_run_steps("new")] == [{"x": 1}]
        assert (await b.get_workflow_stats())["total_workflows"] == 7
    finally:
        await b.shutdown()
    conn = sqlite3.connect(path)
    cols = [c[1] for c in conn.execute("PRAGMA table_info(workflow_state)")]
    after = conn.execute(
        "SELECT " + ", ".join(cols[:14]) + " FROM workflow_state WHERE run_id != 'new' ORDER BY run_id"
    ).fetchall()
    conn.close()
    assert after == before  # every legacy row kept, values unchanged
    assert cols[:14] == [
        "run_id", "pipeline_id", "pipeline_name", "pipeline_version", "current_step_index",
        "pipeline_context", "last_step_output", "status", "created_at", "updated_at", "total_steps",
        "error_message", "execution_time_ms", "memory_usage_mb",
    ]  # fmt: skip


async def test_upgrade_of_0435_fixture(fixture_copy: Callable[[str], Path], make_state: MakeState) -> None:
    path = fixture_copy("sample-small.db")
    conn = sqlite3.connect(path)
    counts_before = {
        t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("workflow_state", "runs", "steps", "spans")
    }
    conn.close()

    b = SQLiteBackend(path, naive_timezone="UTC")
    try:
        runs = await b.list_runs()
        assert len(runs) == counts_before["runs"] == 60
        assert all(r["start_time"] for r in runs)  # old rows: created_at '' -> start_time
        assert runs == sorted(runs, key=lambda r: (r["start_time"], r["run_id"]), reverse=True)
        assert b.layout is not None and b.layout.kind == "v0.4-upgraded" and b.layout.steps_v04
        details = await b.get_run_details("run_bdd640fb06671ad11c80317fa3b1799d")
        assert details is not None
        assert details["start_time"] == "2026-11-21T10:14:40.275029"
        assert details["final_context"]["run_id"] == "run_bdd640fb06671ad11c80317fa3b1799d"
        steps = await b.list_run_steps("run_bdd640fb06671ad11c80317fa3b1799d")
        assert [s["step_name"] for s in steps] == ["extract", "transform", "load"]
        assert steps[0]["duration_ms"] == 4512
        assert steps[0]["output"] == {"step": "extract", "records": 618}
        spans = await b.get_spans("run_4737819096da1dac72ff5d2a386ecbe0")
        assert spans[0]["name"] == "pipeline_root"
        trace = await b.get_trace("run_4737819096da1dac72ff5d2a386ecbe0")
        assert trace is not None and trace["name"] == "pipeline_root" and trace["children"]

        # a new run, steps and spans written into the old-style tables
        await b.save_state("run_new", make_state("run_new"))
        await b.save_run_start({"run_id": "run_new", "pipeline_name": "etl_daily", "pipeline_version": "2"})
        await b.save_step_result(
            {"run_id": "run_new", "step_name": "extract", "step_index": 0, "output": {"n": 1},
             "cost_usd": 0.5, "token_counts": 7, "execution_time_ms": 12}
        )  # fmt: skip
        await b.save_step_result(
            {"run_id": "run_new", "step_name": "load", "step_index": 1, "success": False, "feedback": "boom"}
        )
        await b.save_run_end("run_new", {"status": "failed", "total_cost": 0.5})
        tree = {
            "span_id": "new-root", "name": "pipeline_root", "start_time": 100.0, "end_time": 110.0,
            "status": "completed", "attributes": {"initial_input": "x"},
            "children": [
                {"span_id": "new-c1", "name": "extract", "start_time": 101.0, "end_time": 102.0,
                 "status": "completed"}
            ],
        }  # fmt: skip
        await b.save_trace("run_new", tree)
        new_steps = await b.list_run_steps("run_new")
        assert [(s["step_name"], s["status"], s["cost"], s["tokens"], s["duration_ms"]) for s in new_steps] == [
            ("extract", "completed", 0.5, 7, 12),
            ("load", "failed", None, None, None),
        ]
        assert new_steps[1]["error"] == "boom"
        new_run = (await b.list_runs(pipeline_name="etl_daily", limit=1))[0]
        assert new_run["run_id"] == "run_new"  # newest start first
        assert new_run["status"] == "failed" and new_run["total_cost"] == 0.5
        got = await b.get_trace("run_new")
        assert got is not None and [c["span_id"] for c in got["children"]] == ["new-c1"]
        await b.delete_run("run_new")
        assert await b.get_run_details("run_new") is None
        assert await b.get_spans("run_new") == []
        assert await b.list_run_steps("run_new") == []
    finally:
        await b.shutdown()

    columns, indexes = _layout(path)
    assert columns == UPGRADED_FROM_0435
    assert indexes >= FLUJO_06_INDEXES
    conn = sqlite3.connect(path)
    try:
        counts_after = {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in counts_before}
        hybrid = conn.execute("SELECT created_at, start_time FROM runs WHERE run_id = 'run_new'").fetchall()
        step_rows = conn.execute("SELECT step_run_id, start_time FROM steps WHERE run_id = 'run_new'").fetchall()
    finally:
        conn.close()
    assert counts_after == {**counts_before, "workflow_state": counts_before["workflow_state"] + 1}
    assert hybrid == [] and step_rows == []  # deleted by delete_run


async def test_hybrid_runs_row_fills_created_at_and_start_time(fixture_copy: Callable[[str], Path]) -> None:
    path = fixture_copy("sample-small.db")
    b = SQLiteBackend(path, naive_timezone="UTC")
    try:
        await b.save_run_start({"run_id": "h1", "pipeline_name": "p", "start_time": datetime(2026, 11, 22, 1, 2, 3)})
        await b.save_step_result({"run_id": "h1", "step_name": "s", "step_index": 3})
    finally:
        await b.shutdown()
    conn = sqlite3.connect(path)
    try:
        row = conn.execute("SELECT created_at, start_time, updated_at FROM runs WHERE run_id = 'h1'").fetchone()
        step = conn.execute("SELECT step_run_id, start_time FROM steps WHERE run_id = 'h1'").fetchone()
    finally:
        conn.close()
    assert row == ("2026-11-22T01:02:03+00:00",) * 3
    assert step[0] == "h1:3" and step[1].endswith("+00:00")


async def test_06_fixture_opens_without_schema_changes(fixture_copy: Callable[[str], Path]) -> None:
    path = fixture_copy("sample06-small.db")
    columns_before, _ = _layout(path)
    b = SQLiteBackend(path, naive_timezone="UTC")
    try:
        assert len(await b.list_workflows()) == 83
        assert b.layout is not None and b.layout.kind == "v0.6"
    finally:
        await b.shutdown()
    columns_after, _ = _layout(path)
    assert columns_after == columns_before == FRESH_06


async def test_two_instances_share_a_file(db_path: Path, make_state: MakeState) -> None:
    a = SQLiteBackend(db_path)
    b = SQLiteBackend(db_path)
    try:

        async def writer(backend: SQLiteBackend, prefix: str) -> None:
            for i in range(30):
                await backend.save_state(f"{prefix}{i}", make_state(f"{prefix}{i}"))
                assert await backend.load_state(f"{prefix}{i}") is not None

        await asyncio.gather(writer(a, "a"), writer(b, "b"))
        assert len(await a.list_workflows()) == len(await b.list_workflows()) == 60
    finally:
        await a.shutdown()
        await b.shutdown()


async def test_two_processes_write_concurrently(db_path: Path, make_state: MakeState) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio
        from exporter.state import SQLiteBackend

        async def main():
            b = SQLiteBackend({str(db_path)!r})
            try:
                for i in range(100):
                    await b.save_state(f"child{{i}}", {{"pipeline_id": "p", "status": "completed"}})
            finally:
                await b.shutdown()

        asyncio.run(main())
        """
    )
    parent = SQLiteBackend(db_path)
    try:
        await parent.list_workflows()  # create the file first
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script, stderr=subprocess.PIPE)
        for i in range(100):
            await parent.save_state(f"parent{i}", make_state(f"parent{i}"))
        _, stderr = await proc.communicate()
        assert proc.returncode == 0, stderr.decode()
        assert len(await parent.list_workflows()) == 200
    finally:
        await parent.shutdown()


def test_forgotten_shutdown_does_not_hang_interpreter_exit(db_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio
        from exporter.state import SQLiteBackend

        backend = SQLiteBackend({str(db_path)!r})

        async def main():
            await backend.save_state("r", {{"pipeline_id": "p", "status": "completed"}})

        asyncio.run(main())
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=30)
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("SELECT run_id FROM workflow_state").fetchall() == [("r",)]
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("name", "layout", "kind"),
    [
        ("sample-small.db", Layout.HYBRID, "v0.4-upgraded"),
        ("sample06-small.db", Layout.V06, "v0.6"),
        ("sample-v0.4.32-legacy.db", Layout.V06, "legacy-workflow-state-only"),
    ],
)
async def test_backend_and_reader_share_one_layout_model(
    fixture_copy: Callable[[str], Path], name: str, layout: Layout, kind: str
) -> None:
    """The backend's idea of a file (after its migration) is the reader's: same layout, same columns."""
    path = fixture_copy(name)
    b = SQLiteBackend(path, naive_timezone="UTC")
    try:
        await b.list_workflows()
        assert b.layout is not None
        backend_layout = b.layout
    finally:
        await b.shutdown()
    schema = StateReader(path, naive_timezone=UTC).schema()
    assert isinstance(schema, Schema) and isinstance(backend_layout, Schema)
    assert (backend_layout.layout, backend_layout.kind) == (layout, kind)
    assert schema.layout is backend_layout.layout
    assert schema.columns == backend_layout.columns
    assert schema.run_start_sql("r") == backend_layout.run_start_sql("r")
