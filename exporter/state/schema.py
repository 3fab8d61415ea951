"""DDL and in-place migration of Flujo state DBs (which layout a file has is the shared model of
exporter/engines/flujo/layout.py).

New files get the flujo 0.6.11 layout (``schemas/v0.6.11-github-fresh.sql``) plus a few indexes of our
own.  Existing files are recognised from ``PRAGMA table_info`` (never from ``user_version`` alone) and
upgraded additively, the way flujo 0.6.11 does it:

* ``workflow_state``-only files (flujo 0.4.32 and older, nullable variants): missing columns are
  appended with ``ALTER TABLE ... ADD COLUMN``, ``pipeline_name`` is filled from ``pipeline_id`` and
  NULLs in ``current_step_index``/``pipeline_context``/``status`` are back-filled; missing tables are
  created in the 0.6 layout.
* flujo 0.4.35 files: ``runs`` gets the 0.6 columns appended (``created_at``/``updated_at`` default
  ``''``), the old-style ``steps`` (``step_run_id`` key) gets ``raw_response``, the old ``spans`` table is
  kept as it is, and ``traces``/``system_state``/``evaluations`` are added.

Nothing is ever dropped, renamed or deleted.  A file that is not SQLite, or a SQLite file of another
application (tables but no ``workflow_state``), is refused with :class:`StateBackendError` and left
byte-identical.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from exporter.engines.flujo.layout import STEPS_V04_KEY, Layout, Schema, recognise
from exporter.state.errors import StateBackendError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1  # PRAGMA user_version written by flujo 0.6.11

TABLE_DDL: dict[str, str] = {
    "workflow_state": """
        CREATE TABLE IF NOT EXISTS workflow_state (
            run_id TEXT PRIMARY KEY,
            pipeline_id TEXT NOT NULL,
            pipeline_name TEXT NOT NULL,
            pipeline_version TEXT NOT NULL,
            current_step_index INTEGER NOT NULL,
            pipeline_context TEXT,
            last_step_output TEXT,
            step_history TEXT,
            status TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            total_steps INTEGER DEFAULT 0,
            error_message TEXT,
            execution_time_ms INTEGER,
            memory_usage_mb REAL,
            metadata TEXT,
            is_background_task INTEGER DEFAULT 0,
            parent_run_id TEXT,
            task_id TEXT,
            background_error TEXT
        )""",
    "runs": """
        CREATE TABLE IF NOT EXISTS runs (
            run_id TEXT PRIMARY KEY,
            pipeline_id TEXT NOT NULL,
            pipeline_name TEXT NOT NULL,
            pipeline_version TEXT NOT NULL,
            status TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            execution_time_ms INTEGER,
            memory_usage_mb REAL,
            total_steps INTEGER DEFAULT 0,
            error_message TEXT,
            end_time TEXT,
            total_cost REAL,
            final_context_blob TEXT
        )""",
    "system_state": """
        CREATE TABLE IF NOT EXISTS system_state (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )""",
    "steps": """
        CREATE TABLE IF NOT EXISTS steps (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id TEXT NOT NULL,
            step_name TEXT NOT NULL,
            step_index INTEGER NOT NULL,
            status TEXT NOT NULL,
            output TEXT,
            raw_response TEXT,
            cost_usd REAL,
            token_counts INTEGER,
            execution_time_ms INTEGER,
            created_at TEXT NOT NULL,
            FOREIGN KEY (run_id) REFERENCES runs(run_id) ON DELETE CASCADE
        )""",
    "traces": """
        CREATE TABLE IF NOT EXISTS traces (
            run_id TEXT PRIMARY KEY,
            trace_data TEXT NOT NULL,
            created_at TEXT NOT NULL,
            FOREIGN KEY (run_id) REFERENCES runs(run_id) ON DELETE CASCADE
        )""",
    "spans": """
        CREATE TABLE IF NOT EXISTS spans (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id TEXT NOT NULL,
            span_id TEXT NOT NULL,
            parent_span_id TEXT,
            name TEXT NOT NULL,
            start_time REAL NOT NULL,
            end_time REAL,
            status TEXT NOT NULL,
            attributes TEXT,
            created_at TEXT NOT NULL,
            FOREIGN KEY (run_id) REFERENCES runs(run_id) ON DELETE CASCADE
        )""",
    "evaluations": """
        CREATE TABLE IF NOT EXISTS evaluations (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id TEXT NOT NULL,
            step_name TEXT,
            score REAL NOT NULL,
            feedback TEXT,
            metadata TEXT,
            created_at TEXT NOT NULL DEFAULT (DATETIME('now')),
            FOREIGN KEY (run_id) REFERENCES runs(run_id) ON DELETE CASCADE
        )""",
}

# flujo 0.6.11's indexes, then ours (prefixed idx_fse_: flujo-state-exporter).
INDEX_DDL: dict[str, str] = {
    "idx_steps_run_id": "CREATE INDEX IF NOT EXISTS idx_steps_run_id ON steps(run_id)",
    "idx_steps_step_index": "CREATE INDEX IF NOT EXISTS idx_steps_step_index ON steps(step_index)",
    "idx_spans_run_id": "CREATE INDEX IF NOT EXISTS idx_spans_run_id ON spans(run_id)",
    "idx_spans_parent_span": "CREATE INDEX IF NOT EXISTS idx_spans_parent_span ON spans(parent_span_id)",
    "idx_evaluations_run_id": "CREATE INDEX IF NOT EXISTS idx_evaluations_run_id ON evaluations(run_id)",
    "idx_evaluations_created_at": ("CREATE INDEX IF NOT EXISTS idx_evaluations_created_at ON evaluations(created_at)"),
    "idx_workflow_state_status": ("CREATE INDEX IF NOT EXISTS idx_workflow_state_status ON workflow_state(status)"),
    "idx_workflow_state_pipeline_id": (
        "CREATE INDEX IF NOT EXISTS idx_workflow_state_pipeline_id ON workflow_state(pipeline_id)"
    ),
    "idx_workflow_state_parent_run_id": (
        "CREATE INDEX IF NOT EXISTS idx_workflow_state_parent_run_id ON workflow_state(parent_run_id)"
    ),
    "idx_workflow_state_created_at": (
        "CREATE INDEX IF NOT EXISTS idx_workflow_state_created_at ON workflow_state(created_at)"
    ),
    "idx_runs_status": "CREATE INDEX IF NOT EXISTS idx_runs_status ON runs(status)",
    "idx_runs_pipeline_id": "CREATE INDEX IF NOT EXISTS idx_runs_pipeline_id ON runs(pipeline_id)",
    "idx_runs_created_at": "CREATE INDEX IF NOT EXISTS idx_runs_created_at ON runs(created_at)",
    "idx_runs_pipeline_name": "CREATE INDEX IF NOT EXISTS idx_runs_pipeline_name ON runs(pipeline_name)",
    # Ours: keep the hot admin queries index-only at 1M rows.
    # Status counts split by background flag in one covering-index scan.
    "idx_fse_workflow_state_bg_status": (
        "CREATE INDEX IF NOT EXISTS idx_fse_workflow_state_bg_status ON workflow_state(is_background_task, status)"
    ),
    # AVG(execution_time_ms) over the (few) non-NULL rows only.
    "idx_fse_workflow_state_exec_time": (
        "CREATE INDEX IF NOT EXISTS idx_fse_workflow_state_exec_time "
        "ON workflow_state(execution_time_ms) WHERE execution_time_ms IS NOT NULL"
    ),
    # get_failed_workflows / stale background tasks: status + updated_at window.
    "idx_fse_workflow_state_status_updated": (
        "CREATE INDEX IF NOT EXISTS idx_fse_workflow_state_status_updated ON workflow_state(status, updated_at)"
    ),
}

# Columns appended to existing tables when missing: (name, ALTER definition), in flujo's order.
WORKFLOW_STATE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("pipeline_id", "TEXT NOT NULL DEFAULT 'unknown'"),
    ("pipeline_name", "TEXT NOT NULL DEFAULT ''"),
    ("pipeline_version", "TEXT NOT NULL DEFAULT 'latest'"),
    ("current_step_index", "INTEGER NOT NULL DEFAULT 0"),
    ("pipeline_context", "TEXT"),
    ("last_step_output", "TEXT"),
    ("status", "TEXT NOT NULL DEFAULT 'running'"),
    ("created_at", "TEXT NOT NULL DEFAULT ''"),
    ("updated_at", "TEXT NOT NULL DEFAULT ''"),
    ("total_steps", "INTEGER DEFAULT 0"),
    ("error_message", "TEXT"),
    ("execution_time_ms", "INTEGER"),
    ("memory_usage_mb", "REAL"),
    ("step_history", "TEXT"),
    ("metadata", "TEXT"),
    ("is_background_task", "INTEGER DEFAULT 0"),
    ("parent_run_id", "TEXT"),
    ("task_id", "TEXT"),
    ("background_error", "TEXT"),
)
RUNS_COLUMNS: tuple[tuple[str, str], ...] = (
    ("pipeline_id", "TEXT NOT NULL DEFAULT 'unknown'"),
    ("pipeline_name", "TEXT NOT NULL DEFAULT 'unknown'"),
    ("pipeline_version", "TEXT NOT NULL DEFAULT 'latest'"),
    ("status", "TEXT NOT NULL DEFAULT 'running'"),
    ("created_at", "TEXT NOT NULL DEFAULT ''"),
    ("updated_at", "TEXT NOT NULL DEFAULT ''"),
    ("execution_time_ms", "INTEGER"),
    ("memory_usage_mb", "REAL"),
    ("total_steps", "INTEGER DEFAULT 0"),
    ("error_message", "TEXT"),
    ("end_time", "TEXT"),
    ("total_cost", "REAL"),
    ("final_context_blob", "TEXT"),
)
STEPS_V06_COLUMNS: tuple[tuple[str, str], ...] = (
    ("output", "TEXT"),
    ("raw_response", "TEXT"),
    ("cost_usd", "REAL"),
    ("token_counts", "INTEGER"),
    ("execution_time_ms", "INTEGER"),
    ("created_at", "TEXT NOT NULL DEFAULT ''"),
)
STEPS_V04_COLUMNS: tuple[tuple[str, str], ...] = (("raw_response", "TEXT"),)


@dataclass(frozen=True)
class StateLayout(Schema):
    """An initialised (migrated) DB as the backend sees it: the shared Flujo layout model
    (:class:`exporter.engines.flujo.layout.Schema`: layout, columns, SQL that differs per layout) plus
    ``kind``, what the file was before the backend first opened it."""

    kind: str = ""


def check_header(path: Path) -> None:
    """Refuse a directory.  The header itself is left to SQLite (it fails with "file is not a database"
    before writing anything): opening and closing the file with plain I/O would drop every POSIX lock
    this process holds on it, including those of other connections to the same DB."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StateBackendError(f"cannot read {path}: {exc}", path=path) from exc
    if stat.S_ISDIR(info.st_mode):
        raise StateBackendError(f"{path} is a directory, not a SQLite database", path=path)


def _user_objects(conn: sqlite3.Connection) -> dict[str, str]:
    rows = conn.execute(
        "SELECT name, type FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' AND type IN ('table', 'view')"
    ).fetchall()
    return {str(name): str(kind) for name, kind in rows}


def _columns(conn: sqlite3.Connection, table: str) -> tuple[str, ...]:
    return tuple(str(row[1]) for row in conn.execute(f'PRAGMA table_info("{table}")').fetchall())


def _index_names(conn: sqlite3.Connection) -> set[str]:
    return {str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}


def _plan(conn: sqlite3.Connection) -> list[str]:
    """Statements that bring the file to our layout (empty when it is up to date)."""
    tables = {name for name, kind in _user_objects(conn).items() if kind == "table"}
    stmts: list[str] = []
    ws_altered = False
    for table, ddl in TABLE_DDL.items():
        if table not in tables:
            stmts.append(ddl)
            continue
        cols = set(_columns(conn, table))
        wanted: tuple[tuple[str, str], ...] = ()
        if table == "workflow_state":
            wanted = WORKFLOW_STATE_COLUMNS
        elif table == "runs":
            wanted = RUNS_COLUMNS
        elif table == "steps":
            wanted = STEPS_V04_COLUMNS if STEPS_V04_KEY in cols else STEPS_V06_COLUMNS
        for name, definition in wanted:
            if name not in cols:
                stmts.append(f'ALTER TABLE {table} ADD COLUMN "{name}" {definition}')
                if table == "workflow_state":
                    ws_altered = True
                    if name == "pipeline_name":
                        stmts.append(
                            "UPDATE workflow_state SET pipeline_name = COALESCE(pipeline_id, '') "
                            "WHERE pipeline_name = ''"
                        )
    if ws_altered:
        # flujo 0.4.35's back-fill of legacy NULLs (only when the table had to be migrated).
        stmts += [
            "UPDATE workflow_state SET current_step_index = 0 WHERE current_step_index IS NULL",
            "UPDATE workflow_state SET pipeline_context = '{}' WHERE pipeline_context IS NULL",
            "UPDATE workflow_state SET status = 'running' WHERE status IS NULL",
        ]
    existing = _index_names(conn)
    stmts += [ddl for name, ddl in INDEX_DDL.items() if name not in existing]
    if int(conn.execute("PRAGMA user_version").fetchone()[0]) < SCHEMA_VERSION:
        stmts.append(f"PRAGMA user_version = {SCHEMA_VERSION}")
    return stmts


def _kind(schema: Schema, before: set[str]) -> str:
    """What the file was before the backend migrated it, told from the migrated layout."""
    if not before:
        return "fresh"
    if "runs" not in before:
        return "legacy-workflow-state-only"
    if schema.layout is Layout.HYBRID or schema.steps_v04:
        return "v0.4-upgraded"
    return "v0.6"


def read_layout(conn: sqlite3.Connection, path: Path, before: set[str]) -> StateLayout:
    """The migrated file's layout, recognised by the shared Flujo rules."""
    tables = {name for name, kind in _user_objects(conn).items() if kind == "table"}
    columns = {name: frozenset(_columns(conn, name)) for name in tables}
    schema = recognise(columns)
    if isinstance(schema, str):
        raise StateBackendError(f"{path}: not a Flujo layout after migration ({schema})", path=path)
    return StateLayout(schema.layout, schema.columns, kind=_kind(schema, before))


def initialize(path: Path, *, busy_timeout_ms: int = 5000) -> StateLayout:
    """Open (creating if needed), validate and migrate the DB at ``path``; return its layout.

    Idempotent and safe to run concurrently from several threads/processes: changes are applied in a
    ``BEGIN IMMEDIATE`` transaction after re-checking what is missing.
    """
    check_header(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = sqlite3.connect(str(path), timeout=busy_timeout_ms / 1000, isolation_level=None)
    except sqlite3.Error as exc:
        raise StateBackendError(f"cannot open SQLite database {path}: {exc}", path=path) from exc
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        try:
            objects = _user_objects(conn)
        except sqlite3.DatabaseError as exc:
            raise StateBackendError(
                f"{path} is not a SQLite database (bad file header) or is corrupt ({exc}); the file was left untouched",
                path=path,
            ) from exc
        if "workflow_state" not in objects and objects:
            found = ", ".join(sorted(objects))
            raise StateBackendError(
                f"{path} is a SQLite database of another application (no workflow_state table; "
                f"found: {found}); refusing to add Flujo tables to it",
                path=path,
            )
        if objects.get("workflow_state") == "view":
            raise StateBackendError(f"{path}: workflow_state is a view, not a table", path=path)
        if objects and "run_id" not in _columns(conn, "workflow_state"):
            raise StateBackendError(f"{path}: workflow_state has no run_id column", path=path)
        before = {name for name, kind in objects.items() if kind == "table"}
        mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
        if mode != "wal":
            _switch_to_wal(conn, busy_timeout_ms / 1000)
        stmts = _plan(conn)
        if stmts:
            conn.execute("BEGIN IMMEDIATE")
            try:
                stmts = _plan(conn)
                for stmt in stmts:
                    conn.execute(stmt)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            if stmts:
                log.info("prepared state DB %s (%d schema statements)", path, len(stmts))
        return read_layout(conn, path, before)
    except sqlite3.DatabaseError as exc:
        raise StateBackendError(f"cannot prepare SQLite database {path}: {exc}", path=path) from exc
    finally:
        conn.close()


def _switch_to_wal(conn: sqlite3.Connection, timeout_s: float) -> None:
    """``PRAGMA journal_mode = WAL`` answers "database is locked" at once, without SQLite's busy
    handler, while another connection initialises the same new file: retry until the busy timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc).lower() or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)
