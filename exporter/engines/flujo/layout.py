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

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from exporter.engines.flujo.dialect import POSTGRES, SQLITE, Dialect
from exporter.engines.flujo.statuses import FINISHED_SQL
from exporter.reader.errors import DatabaseUnavailable, Problem
from exporter.reader.sql import Connection

ENGINE_NAME = "flujo"

REQUIRED_WORKFLOW_COLUMNS = ("run_id", "status", "created_at", "updated_at")

# Where a run's start is, most trusted first.  0.4.35 writes ``runs.start_time``; 0.6 writes
# ``runs.created_at`` only.  When 0.6 opens a 0.4.35 file (the hybrid) it appends ``created_at`` with
# DEFAULT '' and never fills it for the existing rows, while ``start_time`` (NOT NULL) keeps the real
# start: so ``start_time`` first, an empty value falls through to ``created_at``
# (tests/reader/test_layout.py::test_run_start_order_on_real_files shows it on the fixtures).
RUN_START_COLUMNS = ("start_time", "created_at")
STEPS_V04_KEY = "step_run_id"


def run_start_value(row: Mapping[str, object]) -> object:
    """A run's start from a ``runs`` row read as a mapping: the Python twin of
    :meth:`Schema.run_start_sql` (first non-empty value of :data:`RUN_START_COLUMNS`)."""
    empty = None
    for column in RUN_START_COLUMNS:
        value = row.get(column)
        if value is not None and value != "":
            return value
        empty = value if value is not None else empty
    return empty  # '' when a column holds '' (what flujo's own list_runs returns then)


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
    columns: Mapping[str, frozenset[str]]
    engine: str = ENGINE_NAME
    # How the queries are spelled for the DB holding these tables (SQLite file or Postgres database).
    dialect: Dialect = SQLITE
    # Postgres only: the versions in ``flujo_schema_versions`` (SQLite files have no such table).
    schema_versions: tuple[int, ...] = ()

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
    def run_start_columns(self) -> tuple[str, ...]:
        """The ``runs`` columns holding a run's start, in the order they are trusted (see
        :data:`RUN_START_COLUMNS`): the first non-empty one is the start."""
        return tuple(c for c in RUN_START_COLUMNS if self.has("runs", c))

    @property
    def run_start_expr(self) -> str:
        """SQL for a run's start on ``runs`` (unqualified column names)."""
        return self.run_start_sql()

    def run_start_sql(self, alias: str = "") -> str:
        """SQL for a run's start on ``runs`` (columns qualified with ``alias`` when given): the one
        definition the reader, the span exporter, the jobs and the state backend use."""
        prefix = f"{alias}." if alias else ""
        columns = self.run_start_columns or RUN_START_COLUMNS[-1:]
        if len(columns) == 1:
            return f"{prefix}{columns[0]}"
        parts = [self.dialect.nonempty(f"{prefix}{column}") for column in columns]
        return f"COALESCE({', '.join(parts)})"

    @property
    def run_end_expr(self) -> str:
        """When a run finished: ``end_time`` where written, else 0.6's last update of a final row."""
        if not self.has("runs", "updated_at"):
            return "end_time"
        final = f"CASE WHEN status IN {FINISHED_SQL} THEN {self.dialect.nonempty('updated_at')} END"
        if not self.has("runs", "end_time"):
            return final  # flujo's Postgres runs table has no end_time: its last update is the end
        return f"COALESCE({self.dialect.nonempty('end_time')}, {final})"

    @property
    def steps_v04(self) -> bool:
        """Old-style (0.4.35) steps table: ``step_run_id`` key, ``start_time``/``duration_ms``/``*_blob``;
        0.6 keeps it as it is when it opens a 0.4.35 file."""
        return self.has("steps", STEPS_V04_KEY)

    @property
    def step_time_expr(self) -> str:
        return "start_time" if self.has("steps", "start_time") else "created_at"

    @property
    def step_duration_ms_expr(self) -> str:
        return "duration_ms" if self.has("steps", "duration_ms") else "execution_time_ms"


def recognise(columns: Mapping[str, frozenset[str]]) -> Schema | str:
    """The Flujo layout of a file with these tables and columns, or what it lacks to be one."""
    layout = _classify(columns)
    return Schema(layout, columns) if isinstance(layout, Layout) else layout


# flujo's PostgresBackend records its migrations here (001 base tables, 002 indexes; 003-005 need
# pgvector and add ``memories`` and ``evaluations``), where SQLite files have PRAGMA user_version.
PG_VERSIONS_TABLE = "flujo_schema_versions"


def recognise_postgres(conn: Connection, columns: Mapping[str, frozenset[str]]) -> Schema | str:
    """The Flujo layout of a Postgres database with these tables and columns, or what it lacks.

    Postgres databases are written by one backend only (0.6's ``PostgresBackend``), so the layout is
    always 0.6; the versions table proves flujo created the tables, and the columns present decide
    the capabilities as on SQLite (``evaluations`` only exists where pgvector let migration 003 run).
    """
    if PG_VERSIONS_TABLE not in columns:
        return f"no {PG_VERSIONS_TABLE} table (not created by flujo's PostgresBackend)"
    versions = tuple(sorted(int(v) for (v,) in conn.execute(f"SELECT version FROM {PG_VERSIONS_TABLE}")))
    if not versions:
        return f"{PG_VERSIONS_TABLE} is empty: flujo's migrations have not run"
    layout = _classify(columns)
    if not isinstance(layout, Layout):
        return layout
    if layout is not Layout.V06:
        return f"tables of flujo layout {layout}, which flujo's PostgresBackend never writes"
    return Schema(layout, columns, dialect=POSTGRES, schema_versions=versions)


def flujo_schema(schema: object) -> Schema:
    """``schema`` as a Flujo schema, for code that serves Flujo files only (its write jobs, its spans)."""
    if isinstance(schema, Schema):
        return schema
    engine = getattr(schema, "engine", "another engine")
    raise DatabaseUnavailable(Problem.UNKNOWN_LAYOUT, f"this is a {engine} state DB; only Flujo DBs have this")


def _classify(columns: Mapping[str, frozenset[str]]) -> Layout | str:
    workflow = columns.get("workflow_state")
    if workflow is None:
        return "no workflow_state table"
    missing = [c for c in REQUIRED_WORKFLOW_COLUMNS if c not in workflow]
    if "pipeline_name" not in workflow and "pipeline_id" not in workflow:
        missing.append("pipeline_name")
    if missing:
        return f"table workflow_state lacks column(s) {', '.join(missing)}"
    runs = columns.get("runs")
    if runs is None:
        return Layout.LEGACY_0432
    if "start_time" in runs:
        if "created_at" in runs or "is_background_task" in workflow:
            return Layout.HYBRID
        return Layout.V0435
    if "created_at" in runs:
        return Layout.V06
    return "table runs has neither start_time (0.4.x) nor created_at (0.6.x)"
