"""``runs``/``steps`` (structured history), ``system_state`` and ``evaluations``.

``runs`` and ``steps`` exist in two shapes: flujo 0.6 (``runs.created_at``, ``steps.id``/``output``/
``cost_usd``/``token_counts``/``execution_time_ms``/``created_at``) and flujo 0.4.35, kept as is when a
0.4.35 file is upgraded (``runs.start_time``, ``steps.step_run_id``/``start_time``/``duration_ms``/
``cost``/``tokens``/``*_blob``).  INSERT and SELECT column lists are built from the columns the table
actually has; in the hybrid ``runs`` table both ``created_at`` and ``start_time`` are filled.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from exporter.engines.flujo.jobs.core import RUN_CHILD_TABLES
from exporter.engines.flujo.layout import run_start_value
from exporter.state.core import BackendCore, Row, execute, fetchall, fetchone, row_dict
from exporter.state.serialization import dumps, dumps_or_none, loads_or_raw
from exporter.state.validation import (
    limit_clause,
    metadata_conditions,
    non_negative_int,
    optional_limit,
    optional_str,
    required_str,
    where_clause,
)
from exporter.state.windows import caller_timestamp

_RUN_UPDATABLE = (
    "total_steps",
    "execution_time_ms",
    "memory_usage_mb",
    "error_message",
    "total_cost",
)


def _first(data: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        value = data.get(key)
        if value is not None:
            return value
    return None


def _insert_sql(table: str, columns: list[str], *, conflict: str = "") -> str:
    cols = ", ".join(columns)
    marks = ", ".join("?" for _ in columns)
    return f"INSERT INTO {table} ({cols}) VALUES ({marks}){conflict}"


def _run_extras(data: Mapping[str, Any]) -> dict[str, Any]:
    """The optional columns a run's start or end may set: the final context and the _RUN_UPDATABLE ones."""
    extras = {key: data[key] for key in _RUN_UPDATABLE if data.get(key) is not None}
    if "final_context" in data:
        extras["final_context_blob"] = dumps_or_none(data["final_context"])
    return extras


def _run_dict(row: Row) -> dict[str, Any]:
    item = row_dict(row)
    start = run_start_value(item)
    return {
        "run_id": item["run_id"],
        "pipeline_id": item.get("pipeline_id"),
        "pipeline_name": item.get("pipeline_name"),
        "pipeline_version": item.get("pipeline_version"),
        "status": item.get("status"),
        "start_time": start,
        "end_time": item.get("end_time"),
        "total_cost": item.get("total_cost"),
        "created_at": start,
        "updated_at": item.get("updated_at") or None,
    }


def _step_dict(row: Row) -> dict[str, Any]:
    item = row_dict(row)
    return {
        "step_name": item.get("step_name"),
        "step_index": item.get("step_index"),
        "status": item.get("status"),
        "start_time": item.get("start_time") or item.get("created_at"),
        "end_time": item.get("end_time"),
        "duration_ms": _first(item, "duration_ms", "execution_time_ms"),
        "cost": _first(item, "cost", "cost_usd"),
        "tokens": _first(item, "tokens", "token_counts"),
        "input": loads_or_raw(item.get("input_blob")),
        "output": loads_or_raw(_first(item, "output_blob", "output")),
        "error": loads_or_raw(item.get("error_blob")),
        "raw_response": loads_or_raw(item.get("raw_response")),
    }


class RunsMixin(BackendCore):
    """Runs, steps, system state and evaluations."""

    # -- runs ---------------------------------------------------------------------------------------

    async def save_run_start(self, run_data: Mapping[str, Any]) -> None:
        """Insert (or update) a run: ``run_id``, ``pipeline_name``, ``pipeline_version``, ``status``
        (default ``running``), ``pipeline_id``, ``created_at``/``start_time`` (default now)."""
        if not isinstance(run_data, Mapping):
            raise TypeError(f"run_data must be a dict, got {type(run_data).__name__}")
        run_id = required_str("run_id", run_data.get("run_id"))
        start = caller_timestamp(_first(run_data, "created_at", "start_time"), "created_at") or self.now_iso()
        pipeline_name = run_data.get("pipeline_name") or "unknown"
        values: dict[str, Any] = {
            "run_id": run_id,
            "pipeline_id": run_data.get("pipeline_id") or pipeline_name,
            "pipeline_name": pipeline_name,
            "pipeline_version": run_data.get("pipeline_version") or "latest",
            "status": run_data.get("status") or "running",
            "created_at": start,
            "start_time": start,
            "updated_at": caller_timestamp(run_data.get("updated_at"), "updated_at") or start,
        }
        if run_data.get("end_time") is not None:
            values["end_time"] = caller_timestamp(run_data["end_time"], "end_time")
        values.update(_run_extras(run_data))
        async with self.transaction("save_run_start") as (conn, layout):
            columns = [c for c in values if layout.has("runs", c)]
            updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c != "run_id")
            sql = _insert_sql("runs", columns, conflict=f" ON CONFLICT(run_id) DO UPDATE SET {updates}")
            await execute(conn, sql, [values[c] for c in columns])

    async def save_run_end(self, run_id: str, end_data: Mapping[str, Any]) -> None:
        """Finish a run: ``status`` (default ``completed``), ``end_time`` (default now),
        ``total_cost``, ``final_context``, ``execution_time_ms``, ...  Unknown run_id: no-op."""
        rid = required_str("run_id", run_id)
        if not isinstance(end_data, Mapping):
            raise TypeError(f"end_data must be a dict, got {type(end_data).__name__}")
        end = caller_timestamp(end_data.get("end_time"), "end_time") or self.now_iso()
        values: dict[str, Any] = {
            "status": end_data.get("status") or "completed",
            "end_time": end,
            "updated_at": caller_timestamp(end_data.get("updated_at"), "updated_at") or end,
        }
        values.update(_run_extras(end_data))
        async with self.transaction("save_run_end") as (conn, layout):
            columns = [c for c in values if layout.has("runs", c)]
            sets = ", ".join(f"{c} = ?" for c in columns)
            await execute(conn, f"UPDATE runs SET {sets} WHERE run_id = ?", [values[c] for c in columns] + [rid])

    async def get_run_details(self, run_id: str) -> dict[str, Any] | None:
        """``{run_id, pipeline_id, pipeline_name, pipeline_version, status, start_time, end_time,
        total_cost, final_context, created_at, updated_at}`` or None."""
        rid = required_str("run_id", run_id)
        async with self.session("get_run_details") as (conn, _):
            row = await fetchone(conn, "SELECT * FROM runs WHERE run_id = ?", (rid,))
        if row is None:
            return None
        item = _run_dict(row)
        item["final_context"] = loads_or_raw(row["final_context_blob"])
        return item

    async def list_runs(
        self,
        status: str | None = None,
        pipeline_name: str | None = None,
        limit: int | None = None,
        offset: int = 0,
        metadata_filter: Mapping[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Runs, newest start first (``run_id`` breaks ties).  ``status`` filters ``runs.status``;
        ``metadata_filter`` matches JSON scalars in the run's ``workflow_state.metadata``.  Each item
        also carries ``workflow_status`` (the workflow_state row's status, or None)."""
        status = optional_str("status", status)
        pipeline_name = optional_str("pipeline_name", pipeline_name)
        lim = optional_limit(limit)
        off = non_negative_int("offset", offset)
        conds, values = metadata_conditions("ws.metadata", metadata_filter)
        where, params = where_clause({"r.status": status, "r.pipeline_name": pipeline_name}, fixed=conds, params=values)
        clause, extra = limit_clause(lim, off)
        async with self.session("list_runs") as (conn, layout):
            start = layout.run_start_sql("r")
            sql = (
                f"SELECT r.*, {start} AS start_key, ws.status AS workflow_status "
                f"FROM runs r LEFT JOIN workflow_state ws ON ws.run_id = r.run_id{where}"
            )
            sql += " ORDER BY start_key DESC, r.run_id DESC" + clause
            rows = await fetchall(conn, sql, params + extra)
        result = []
        for row in rows:
            item = _run_dict(row)
            item["start_time"] = item["created_at"] = row["start_key"]
            item["workflow_status"] = row["workflow_status"]
            result.append(item)
        return result

    async def delete_run(self, run_id: str) -> None:
        """Delete a run and (explicitly, whatever the FK settings were) its steps, spans, trace and
        evaluations.  The workflow_state row is kept, like flujo."""
        rid = required_str("run_id", run_id)
        async with self.transaction("delete_run") as (conn, _):
            for table in (*RUN_CHILD_TABLES, "runs"):
                await execute(conn, f"DELETE FROM {table} WHERE run_id = ?", (rid,))

    # -- steps --------------------------------------------------------------------------------------

    async def save_step_result(self, step_data: Mapping[str, Any]) -> None:
        """Record one executed step.  Accepts flujo 0.6 keys (``output``, ``cost_usd``,
        ``token_counts``, ``execution_time_ms``, ``created_at``) and 0.4 ones (``step_run_id``,
        ``cost``, ``tokens``, ``duration_ms``, ``start_time``, ``end_time``, ``input``, ``error``).
        The run must exist (foreign key)."""
        if not isinstance(step_data, Mapping):
            raise TypeError(f"step_data must be a dict, got {type(step_data).__name__}")
        run_id = required_str("run_id", step_data.get("run_id"))
        step_index = step_data.get("step_index", 0)
        if isinstance(step_index, bool) or not isinstance(step_index, int):
            raise TypeError(f"step_index must be an int, got {step_index!r}")
        success = step_data.get("success", True)
        created = caller_timestamp(_first(step_data, "created_at", "start_time"), "created_at") or self.now_iso()
        duration = _first(step_data, "execution_time_ms", "duration_ms")
        cost = _first(step_data, "cost_usd", "cost")
        tokens = _first(step_data, "token_counts", "tokens")
        output = dumps(step_data.get("output"))
        error = _first(step_data, "error", "error_blob")
        if error is None and not success:
            error = step_data.get("feedback")
        values: dict[str, Any] = {
            "step_run_id": step_data.get("step_run_id") or f"{run_id}:{step_index}",
            "run_id": run_id,
            "step_name": step_data.get("step_name") or "unknown",
            "step_index": step_index,
            "status": step_data.get("status") or ("completed" if success else "failed"),
            "start_time": created,
            "created_at": created,
            "end_time": caller_timestamp(step_data.get("end_time"), "end_time") or created,
            "duration_ms": duration,
            "execution_time_ms": duration,
            "cost": cost,
            "cost_usd": cost,
            "tokens": tokens,
            "token_counts": tokens,
            "input_blob": dumps(step_data.get("input")),
            "output_blob": output,
            "output": output,
            "error_blob": dumps_or_none(error),
            "raw_response": dumps_or_none(step_data.get("raw_response")),
        }
        async with self.transaction("save_step_result") as (conn, layout):
            columns = [c for c in values if layout.has("steps", c)]
            verb = "INSERT OR REPLACE" if layout.steps_v04 else "INSERT"
            sql = _insert_sql("steps", columns).replace("INSERT", verb, 1)
            await execute(conn, sql, [values[c] for c in columns])

    async def list_run_steps(self, run_id: str) -> list[dict[str, Any]]:
        """``[{step_name, step_index, status, start_time, end_time, duration_ms, cost, tokens, input,
        output, error, raw_response}]`` ordered by step index."""
        rid = required_str("run_id", run_id)
        async with self.session("list_run_steps") as (conn, _):
            rows = await fetchall(conn, "SELECT * FROM steps WHERE run_id = ? ORDER BY step_index, rowid", (rid,))
        return [_step_dict(r) for r in rows]

    # -- system state -------------------------------------------------------------------------------

    async def set_system_state(self, key: str, value: Any) -> None:
        """Upsert a global key/value (value JSON-encoded), e.g. connector watermarks."""
        k = required_str("key", key)
        encoded = dumps(value)
        async with self.transaction("set_system_state") as (conn, _):
            await execute(
                conn,
                "INSERT INTO system_state (key, value, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                (k, encoded, self.now_iso()),
            )

    async def get_system_state(self, key: str) -> dict[str, Any] | None:
        """``{"key", "value", "updated_at"}`` (value decoded, updated_at as stored) or None."""
        k = required_str("key", key)
        async with self.session("get_system_state") as (conn, _):
            row = await fetchone(conn, "SELECT key, value, updated_at FROM system_state WHERE key = ?", (k,))
        if row is None:
            return None
        return {"key": row["key"], "value": loads_or_raw(row["value"]), "updated_at": row["updated_at"]}

    # -- evaluations --------------------------------------------------------------------------------

    async def persist_evaluation(
        self,
        run_id: str,
        score: float,
        feedback: str | None = None,
        step_name: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Store a shadow evaluation of a run (the run must exist: foreign key)."""
        rid = required_str("run_id", run_id)
        if isinstance(score, bool) or not isinstance(score, int | float):
            raise TypeError(f"score must be a number, got {type(score).__name__}")
        if not math.isfinite(score):
            raise ValueError(f"score must be finite, got {score!r}")
        feedback = optional_str("feedback", feedback)
        step_name = optional_str("step_name", step_name)
        async with self.transaction("persist_evaluation") as (conn, _):
            await execute(
                conn,
                "INSERT INTO evaluations (run_id, step_name, score, feedback, metadata, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (rid, step_name, float(score), feedback, dumps_or_none(metadata), self.now_iso()),
            )

    async def list_evaluations(self, limit: int = 20, run_id: str | None = None) -> list[dict[str, Any]]:
        """Newest evaluations first: ``{run_id, step_name, score, feedback, metadata, created_at}``."""
        lim = non_negative_int("limit", limit)
        rid = optional_str("run_id", run_id)
        where, params = where_clause({"run_id": rid})
        sql = f"SELECT run_id, step_name, score, feedback, metadata, created_at FROM evaluations{where}"
        # replace(): flujo writes 'YYYY-MM-DD HH:MM:SS', we write ISO 'T'; both UTC.
        sql += " ORDER BY replace(created_at, ' ', 'T') DESC, id DESC LIMIT ?"
        params.append(lim)
        async with self.session("list_evaluations") as (conn, _):
            rows = await fetchall(conn, sql, params)
        result = []
        for row in rows:
            item = row_dict(row)
            item["metadata"] = loads_or_raw(item.get("metadata"))
            result.append(item)
        return result
