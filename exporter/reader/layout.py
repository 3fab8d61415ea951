"""Recognise which Flujo version wrote a DB from the columns present (never from user_version).

| layout        | how to recognise it                                                    |
|---------------|------------------------------------------------------------------------|
| 0.4.32-legacy | ``workflow_state`` only, no ``runs`` table                             |
| 0.4.35        | ``runs.start_time``; no background-task columns                        |
| 0.6           | ``runs.created_at`` without ``runs.start_time``; background columns     |
| 0.4.35+0.6    | a 0.4.35 file opened by 0.6.x: both ``runs.start_time`` and the 0.6    |
|               | columns, old-style ``steps``/``spans`` tables kept                     |

The SQL fragments below are built only from fixed column names chosen here, never from config.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from exporter.reader.connection import classify_error
from exporter.reader.errors import DatabaseUnavailable, Problem

REQUIRED_WORKFLOW_COLUMNS = ("run_id", "status", "created_at", "updated_at")


class Layout(StrEnum):
    LEGACY_0432 = "0.4.32-legacy"
    V0435 = "0.4.35"
    V06 = "0.6"
    HYBRID = "0.4.35+0.6"


class Capability(StrEnum):
    RUNS = "runs"
    STEPS = "steps"
    SPANS = "spans"
    BACKGROUND_TASKS = "background_tasks"
    TRACES = "traces"
    EVALUATIONS = "evaluations"
    SYSTEM_STATE = "system_state"


@dataclass(frozen=True)
class Schema:
    layout: Layout
    columns: dict[str, frozenset[str]]

    def has(self, table: str, column: str | None = None) -> bool:
        cols = self.columns.get(table)
        return cols is not None and (column is None or column in cols)

    @property
    def capabilities(self) -> frozenset[Capability]:
        caps = {
            Capability.RUNS: self.has("runs"),
            Capability.STEPS: self.has("steps", "step_name") and self.has("steps", "status"),
            Capability.SPANS: self.has("spans", "span_id") and self.has("spans", "start_time"),
            Capability.BACKGROUND_TASKS: self.has("workflow_state", "is_background_task"),
            Capability.TRACES: self.has("traces"),
            Capability.EVALUATIONS: self.has("evaluations"),
            Capability.SYSTEM_STATE: self.has("system_state"),
        }
        return frozenset(cap for cap, present in caps.items() if present)

    def supports(self, capability: Capability) -> bool:
        return capability in self.capabilities

    # --- SQL fragments that differ between layouts -------------------------------------------
    @property
    def pipeline_column(self) -> str:
        return "pipeline_name" if self.has("workflow_state", "pipeline_name") else "pipeline_id"

    @property
    def run_start_expr(self) -> str:
        if self.has("runs", "start_time") and self.has("runs", "created_at"):
            return "COALESCE(NULLIF(start_time, ''), NULLIF(created_at, ''))"
        return "start_time" if self.has("runs", "start_time") else "created_at"

    @property
    def run_end_expr(self) -> str:
        """When a run finished: ``end_time`` where written, else 0.6's last update of a final row."""
        if self.has("runs", "updated_at"):
            return (
                "COALESCE(NULLIF(end_time, ''), CASE WHEN status IN ('completed', 'failed', 'cancelled')"
                " THEN NULLIF(updated_at, '') END)"
            )
        return "end_time"

    @property
    def step_time_expr(self) -> str:
        return "start_time" if self.has("steps", "start_time") else "created_at"

    @property
    def step_duration_ms_expr(self) -> str:
        return "duration_ms" if self.has("steps", "duration_ms") else "execution_time_ms"


def detect_schema(conn: sqlite3.Connection, path: Path) -> Schema:
    """Read the table/column catalogue and classify it; :class:`DatabaseUnavailable` if not Flujo."""
    try:
        tables = [
            row[0]
            for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        ]
        columns = {
            table: frozenset(row[1] for row in conn.execute("SELECT * FROM pragma_table_info(?)", (table,)))
            for table in tables
        }
    except sqlite3.DatabaseError as exc:
        raise classify_error(exc, path) from exc
    return Schema(layout=_classify(columns, path), columns=columns)


def _classify(columns: dict[str, frozenset[str]], path: Path) -> Layout:
    workflow = columns.get("workflow_state")
    if workflow is None:
        found = ", ".join(sorted(columns)) or "none"
        raise DatabaseUnavailable(
            Problem.UNKNOWN_LAYOUT,
            f"{path}: no workflow_state table, not a Flujo state DB (tables: {found})",
        )
    missing = [c for c in REQUIRED_WORKFLOW_COLUMNS if c not in workflow]
    if "pipeline_name" not in workflow and "pipeline_id" not in workflow:
        missing.append("pipeline_name")
    if missing:
        raise DatabaseUnavailable(
            Problem.UNKNOWN_LAYOUT,
            f"{path}: table workflow_state lacks column(s) {', '.join(missing)}; unknown Flujo layout",
        )
    runs = columns.get("runs")
    if runs is None:
        return Layout.LEGACY_0432
    if "start_time" in runs:
        if "created_at" in runs or "is_background_task" in workflow:
            return Layout.HYBRID
        return Layout.V0435
    if "created_at" in runs:
        return Layout.V06
    raise DatabaseUnavailable(
        Problem.UNKNOWN_LAYOUT,
        f"{path}: table runs has neither start_time (0.4.x) nor created_at (0.6.x); unknown Flujo layout",
    )
