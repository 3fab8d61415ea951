"""A pretend Marianne 0.1.0 conductor writing workspace job DBs and its registry, for the demo and tests.

What is written, and how, follows Marianne's own code (``Mzzkc/marianne-ai-compose`` at
``aa5d3a4c53fc``) and the rows it wrote in tests/fixtures/marianne/:

* a workspace's ``.marianne-state.db`` as ``SQLiteStateBackend`` writes it: schema v4 reached
  through its four migrations (v1's tables and indexes, then the ``ALTER TABLE`` of v2 and v3,
  one ``schema_version`` row each), so ``sqlite_master`` is exactly the fixture's; a new
  connection per operation with ``PRAGMA foreign_keys=ON`` and the default rollback journal;
  ``save()`` upserts the job row and every sheet row in one ``BEGIN IMMEDIATE``;
  ``record_execution()`` appends one ``execution_history`` row per attempt (no caller in Marianne's
  own code at that commit; the fixtures' generator called it, so files may hold such rows); times
  are aware ISO-8601 UTC text;
* the conductor's ``daemon-state.db`` as ``JobRegistry`` writes it: one long-lived connection in
  WAL mode, epoch-second REAL times, a row per submitted job with its workspace
  (``register_job`` -> ``update_status`` -> ``update_progress`` / ``save_checkpoint`` -> a final
  ``update_status``).

Like Marianne (``aiosqlite`` over ``sqlite3``), a writer waits for a lock with SQLite's busy
handler (``sqlite3.connect``'s default 5 s) and retries nothing itself: an
``sqlite3.OperationalError`` reaches the caller.

Sheets follow the conductor's (baton's) scheduling: an attempt that fails with retries left puts
its sheet in ``retry_scheduled`` (keeping the error fields, as Marianne keeps them once the retry
succeeds); ``failed`` is terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from exporter.engines.arrivals import arrive_until

WORKSPACE_DB = ".marianne-state.db"
REGISTRY_DB = "daemon-state.db"

# SQLiteStateBackend._migrate_v1's statements as sqlite_master keeps them ("IF NOT EXISTS" is added back when run).
WORKSPACE_V1_DDL = (
    "CREATE TABLE schema_version (\n"
    "                version INTEGER PRIMARY KEY,\n"
    "                applied_at TEXT NOT NULL\n"
    "            )",
    "CREATE TABLE jobs (\n"
    "                id TEXT PRIMARY KEY,\n"
    "                name TEXT NOT NULL,\n"
    "                description TEXT,\n"
    "                status TEXT NOT NULL DEFAULT 'pending',\n"
    "                total_sheets INTEGER NOT NULL,\n"
    "                last_completed_sheet INTEGER NOT NULL DEFAULT 0,\n"
    "                current_sheet INTEGER,\n"
    "                config_hash TEXT,\n"
    "                config_snapshot TEXT,\n"
    "                pid INTEGER,\n"
    "                error_message TEXT,\n"
    "                total_retry_count INTEGER NOT NULL DEFAULT 0,\n"
    "                rate_limit_waits INTEGER NOT NULL DEFAULT 0,\n"
    "                created_at TEXT NOT NULL,\n"
    "                updated_at TEXT NOT NULL,\n"
    "                started_at TEXT,\n"
    "                completed_at TEXT\n"
    "            )",
    "CREATE TABLE sheets (\n"
    "                job_id TEXT NOT NULL,\n"
    "                sheet_num INTEGER NOT NULL,\n"
    "                status TEXT NOT NULL DEFAULT 'pending',\n"
    "                attempt_count INTEGER NOT NULL DEFAULT 0,\n"
    "                exit_code INTEGER,\n"
    "                error_message TEXT,\n"
    "                error_category TEXT,\n"
    "                validation_passed INTEGER,\n"
    "                validation_details TEXT,\n"
    "                completion_attempts INTEGER NOT NULL DEFAULT 0,\n"
    "                passed_validations TEXT,\n"
    "                failed_validations TEXT,\n"
    "                last_pass_percentage REAL,\n"
    "                execution_mode TEXT,\n"
    "                outcome_data TEXT,\n"
    "                confidence_score REAL,\n"
    "                learned_patterns TEXT,\n"
    "                similar_outcomes_count INTEGER NOT NULL DEFAULT 0,\n"
    "                success_without_retry INTEGER NOT NULL DEFAULT 0,\n"
    "                outcome_category TEXT,\n"
    "                started_at TEXT,\n"
    "                completed_at TEXT,\n"
    "                PRIMARY KEY (job_id, sheet_num),\n"
    "                FOREIGN KEY (job_id) REFERENCES jobs(id) ON DELETE CASCADE\n"
    "            )",
    "CREATE TABLE execution_history (\n"
    "                id INTEGER PRIMARY KEY AUTOINCREMENT,\n"
    "                job_id TEXT NOT NULL,\n"
    "                sheet_num INTEGER NOT NULL,\n"
    "                attempt_num INTEGER NOT NULL,\n"
    "                prompt TEXT,\n"
    "                output TEXT,\n"
    "                exit_code INTEGER,\n"
    "                duration_seconds REAL,\n"
    "                executed_at TEXT NOT NULL,\n"
    "                FOREIGN KEY (job_id) REFERENCES jobs(id) ON DELETE CASCADE\n"
    "            )",
    "CREATE INDEX idx_jobs_status ON jobs(status)",
    "CREATE INDEX idx_jobs_updated ON jobs(updated_at)",
    "CREATE INDEX idx_sheets_status ON sheets(status)",
    "CREATE INDEX idx_history_job_sheet ON execution_history(job_id, sheet_num)",
)
# _migrate_v2 and _migrate_v3: (table, column, type) added when missing. v4 only renames a pre-v4 column.
WORKSPACE_ADDED_COLUMNS = {
    2: (("jobs", "config_path", "TEXT"),),
    3: (
        ("sheets", "execution_duration_seconds", "REAL"),
        ("sheets", "exit_signal", "INTEGER"),
        ("sheets", "exit_reason", "TEXT"),
    ),
    4: (),
}
SCHEMA_VERSION = 4

# JobRegistry._create_tables, then _migrate_schema's columns.
REGISTRY_DDL = (
    "CREATE TABLE jobs (\n"
    "                job_id TEXT PRIMARY KEY,\n"
    "                config_path TEXT NOT NULL,\n"
    "                workspace TEXT NOT NULL,\n"
    "                status TEXT NOT NULL DEFAULT 'queued',\n"
    "                pid INTEGER,\n"
    "                submitted_at REAL NOT NULL,\n"
    "                started_at REAL,\n"
    "                completed_at REAL,\n"
    "                error_message TEXT,\n"
    "                current_sheet INTEGER,\n"
    "                total_sheets INTEGER,\n"
    "                last_event_at REAL,\n"
    "                log_path TEXT,\n"
    "                snapshot_path TEXT\n"
    "            )",
    "CREATE INDEX idx_jobs_status\n            ON jobs (status)\n        ",
    "CREATE INDEX idx_jobs_submitted\n            ON jobs (submitted_at DESC)\n        ",
)
REGISTRY_ADDED_COLUMNS = (
    ("current_sheet", "INTEGER"),
    ("total_sheets", "INTEGER"),
    ("last_event_at", "REAL"),
    ("log_path", "TEXT"),
    ("snapshot_path", "TEXT"),
    ("checkpoint_json", "TEXT"),
    ("hook_config_json", "TEXT"),
    ("hook_results_json", "TEXT"),
)
TERMINAL_REGISTRY = ("completed", "failed", "cancelled")

# A hook around every write operation on a file (tests keep a ledger of the file's content with it).
Witness = Callable[[Path, str], None]


def _if_not_exists(statement: str) -> str:
    for head in ("CREATE TABLE ", "CREATE INDEX "):
        if statement.startswith(head):
            return head + "IF NOT EXISTS " + statement[len(head) :]
    raise ValueError(f"unexpected DDL: {statement[:40]!r}")


def utc_now() -> datetime:
    return datetime.now(UTC)


def _iso(instant: datetime | None) -> str | None:
    # Marianne's _datetime_to_str: isoformat() of an aware UTC datetime ("+00:00"; no fraction at .000000).
    return instant.isoformat() if instant else None


def _dumps(value: object) -> str | None:
    return None if value is None else json.dumps(value, default=str)


@dataclass
class Sheet:
    """The columns of ``SheetState`` that ``save()`` writes."""

    sheet_num: int
    status: str = "pending"
    attempt_count: int = 0
    exit_code: int | None = None
    error_message: str | None = None
    error_category: str | None = None
    validation_passed: bool | None = None
    validation_details: list[dict[str, object]] | None = None
    completion_attempts: int = 0
    passed_validations: list[str] = field(default_factory=list)
    failed_validations: list[str] = field(default_factory=list)
    learned_patterns: list[str] = field(default_factory=list)
    success_without_retry: bool = False
    started_at: datetime | None = None
    completed_at: datetime | None = None
    execution_duration_seconds: float | None = None
    exit_signal: int | None = None
    exit_reason: str | None = None


@dataclass
class Job:
    """The part of ``CheckpointState`` that reaches the workspace DB, with its transitions."""

    job_id: str
    total_sheets: int
    config_path: str
    created_at: datetime = field(default_factory=utc_now)
    status: str = "pending"
    sheets: dict[int, Sheet] = field(default_factory=dict)
    last_completed_sheet: int = 0
    current_sheet: int | None = None
    pid: int | None = None
    error_message: str | None = None
    total_retry_count: int = 0
    updated_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None

    @property
    def config_snapshot(self) -> dict[str, object]:
        return {"name": self.job_id, "instrument": "claude-code", "sheet": {"size": 1}}

    def _running(self) -> None:
        # CheckpointState._enforce_status_invariants: a running job has a start and no end.
        self.status = "running"
        self.started_at = self.started_at or utc_now()
        self.completed_at = None

    def sheet_started(self, n: int) -> Sheet:
        self.current_sheet = n
        self._running()
        sheet = self.sheets.setdefault(n, Sheet(n))
        sheet.status = "in_progress"
        sheet.started_at = utc_now()
        sheet.attempt_count += 1
        sheet.error_message = sheet.exit_code = None  # cleared for the new attempt; the category stays
        return sheet

    def sheet_completed(self, n: int, duration: float) -> None:
        sheet = self.sheets[n]
        sheet.status = "completed"
        sheet.completed_at = utc_now()
        sheet.exit_code = 0
        sheet.validation_passed = True
        sheet.validation_details = [{"rule": "file_exists", "passed": True}]
        sheet.execution_duration_seconds = duration
        self.last_completed_sheet = max(self.last_completed_sheet, n)
        self.current_sheet = None
        if len(self.sheets) >= self.total_sheets and all(s.status == "completed" for s in self.sheets.values()):
            self.status = "completed"
            self.completed_at = utc_now()

    def sheet_failed(self, n: int, failure: Failure, duration: float, *, retry: bool) -> None:
        """mark_sheet_failed; with a retry left the baton holds the sheet in ``retry_scheduled``."""
        sheet = self.sheets[n]
        sheet.status = "retry_scheduled" if retry else "failed"
        sheet.completed_at = utc_now()
        sheet.error_message = failure.message
        sheet.error_category = failure.category
        sheet.exit_code = failure.exit_code
        sheet.exit_signal = failure.exit_signal
        sheet.exit_reason = failure.exit_reason
        sheet.execution_duration_seconds = duration
        self.current_sheet = None
        self.total_retry_count += 1

    def sheet_skipped(self, n: int, reason: str) -> None:
        sheet = self.sheets.setdefault(n, Sheet(n))
        sheet.status = "skipped"
        sheet.completed_at = utc_now()
        sheet.error_message = reason
        self.current_sheet = None

    def failed(self, message: str) -> None:
        self.status = "failed"
        self.error_message = message
        self.pid = None
        self.completed_at = utc_now()

    def resumed(self) -> None:
        """Running again after a failure (a user's resume): same row, same ``created_at``; the
        sheet that failed is attempted again, its earlier attempts stay in the history.  A model
        of the transition (the rows' shape is Marianne's), for the counters' sake: an attempt
        counted ``failed`` becomes its sheet's ``failed_then_retried`` one."""
        self._running()
        self.error_message = None

    def paused(self) -> None:
        self.status = "paused"
        self.pid = None

    def cancelled(self) -> None:
        self.status = "cancelled"
        for n in range(1, self.total_sheets + 1):
            sheet = self.sheets.setdefault(n, Sheet(n))
            if sheet.status not in ("completed", "failed", "skipped"):
                sheet.status = "cancelled"

    def checkpoint_json(self) -> str:
        """What ``save_checkpoint`` stores: the whole state as JSON (CheckpointState.model_dump_json)."""
        state = {
            "job_id": self.job_id,
            "job_name": self.job_id,
            "config_hash": f"cfg-{self.job_id}",
            "config_snapshot": self.config_snapshot,
            "config_path": self.config_path,
            "status": self.status,
            "total_sheets": self.total_sheets,
            "last_completed_sheet": self.last_completed_sheet,
            "current_sheet": self.current_sheet,
            "total_retry_count": self.total_retry_count,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
            "started_at": _iso(self.started_at),
            "completed_at": _iso(self.completed_at),
            "sheets": {str(n): asdict(s) for n, s in self.sheets.items()},
        }
        return json.dumps(state, default=_iso_default, separators=(",", ":"))


def _iso_default(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(type(value).__name__)


@dataclass(frozen=True)
class Failure:
    category: str
    message: str
    exit_reason: str
    exit_code: int | None = 1
    exit_signal: int | None = None


class WorkspaceWriter:
    """``SQLiteStateBackend`` over ``<workspace>/.marianne-state.db``: every operation on its own
    connection, as Marianne's ``_connect()`` opens one (thread-safe for the same reason)."""

    def __init__(self, workspace: Path, *, witness: Witness | None = None) -> None:
        self.workspace = workspace
        self.path = workspace / WORKSPACE_DB
        self.witness = witness
        workspace.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            self._migrate(conn)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        if self.witness:
            self.witness(self.path, "before")
        # aiosqlite.connect(path): sqlite3's defaults (5 s busy wait, implicit transactions).
        conn = sqlite3.connect(self.path)
        try:
            conn.execute("PRAGMA foreign_keys=ON")
            yield conn
        finally:
            conn.close()
            if self.witness:
                self.witness(self.path, "after")

    def _migrate(self, conn: sqlite3.Connection) -> None:
        try:
            [(current,)] = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchall()
        except sqlite3.OperationalError:  # no such table: a new DB (Marianne's _get_schema_version does the same)
            current = 0
        if current < 1:
            for statement in WORKSPACE_V1_DDL:
                conn.execute(_if_not_exists(statement))
            conn.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)", (1, _iso(utc_now())))
            conn.commit()
        for version in range(max(current + 1, 2), SCHEMA_VERSION + 1):
            for table, column, kind in WORKSPACE_ADDED_COLUMNS[version]:
                columns = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
                if column not in columns:
                    conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
            conn.execute(
                "INSERT OR IGNORE INTO schema_version (version, applied_at) VALUES (?, ?)", (version, _iso(utc_now()))
            )
            conn.commit()

    def save(self, job: Job) -> None:
        job.updated_at = utc_now()
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(
                    """INSERT INTO jobs (
                        id, name, description, status, total_sheets, last_completed_sheet, current_sheet,
                        config_hash, config_snapshot, config_path, pid, error_message, total_retry_count,
                        rate_limit_waits, created_at, updated_at, started_at, completed_at
                    ) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    ON CONFLICT(id) DO UPDATE SET
                        name = excluded.name, status = excluded.status, total_sheets = excluded.total_sheets,
                        last_completed_sheet = excluded.last_completed_sheet, current_sheet = excluded.current_sheet,
                        config_hash = excluded.config_hash, config_snapshot = excluded.config_snapshot,
                        config_path = excluded.config_path, pid = excluded.pid, error_message = excluded.error_message,
                        total_retry_count = excluded.total_retry_count, rate_limit_waits = excluded.rate_limit_waits,
                        updated_at = excluded.updated_at, started_at = excluded.started_at,
                        completed_at = excluded.completed_at""",
                    (
                        job.job_id,
                        job.job_id,
                        None,
                        job.status,
                        job.total_sheets,
                        job.last_completed_sheet,
                        job.current_sheet,
                        f"cfg-{job.job_id}",
                        _dumps(job.config_snapshot),
                        job.config_path,
                        job.pid,
                        job.error_message,
                        job.total_retry_count,
                        0,
                        _iso(job.created_at),
                        _iso(job.updated_at),
                        _iso(job.started_at),
                        _iso(job.completed_at),
                    ),
                )
                for sheet in job.sheets.values():
                    conn.execute(
                        """INSERT INTO sheets (
                            job_id, sheet_num, status, attempt_count, exit_code, error_message, error_category,
                            validation_passed, validation_details, completion_attempts, passed_validations,
                            failed_validations, last_pass_percentage, execution_mode, outcome_data,
                            confidence_score, learned_patterns, similar_outcomes_count, success_without_retry,
                            outcome_category, started_at, completed_at, execution_duration_seconds, exit_signal,
                            exit_reason
                        ) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                        ON CONFLICT(job_id, sheet_num) DO UPDATE SET
                            status = excluded.status, attempt_count = excluded.attempt_count,
                            exit_code = excluded.exit_code, error_message = excluded.error_message,
                            error_category = excluded.error_category, validation_passed = excluded.validation_passed,
                            validation_details = excluded.validation_details,
                            completion_attempts = excluded.completion_attempts,
                            passed_validations = excluded.passed_validations,
                            failed_validations = excluded.failed_validations,
                            last_pass_percentage = excluded.last_pass_percentage,
                            execution_mode = excluded.execution_mode, outcome_data = excluded.outcome_data,
                            confidence_score = excluded.confidence_score, learned_patterns = excluded.learned_patterns,
                            similar_outcomes_count = excluded.similar_outcomes_count,
                            success_without_retry = excluded.success_without_retry,
                            outcome_category = excluded.outcome_category, started_at = excluded.started_at,
                            completed_at = excluded.completed_at,
                            execution_duration_seconds = excluded.execution_duration_seconds,
                            exit_signal = excluded.exit_signal, exit_reason = excluded.exit_reason""",
                        (
                            job.job_id,
                            sheet.sheet_num,
                            sheet.status,
                            sheet.attempt_count,
                            sheet.exit_code,
                            sheet.error_message,
                            sheet.error_category,
                            None if sheet.validation_passed is None else int(sheet.validation_passed),
                            _dumps(sheet.validation_details),
                            sheet.completion_attempts,
                            _dumps(sheet.passed_validations),
                            _dumps(sheet.failed_validations),
                            None,
                            None,
                            None,
                            None,
                            _dumps(sheet.learned_patterns),
                            0,
                            int(sheet.success_without_retry),
                            None,
                            _iso(sheet.started_at),
                            _iso(sheet.completed_at),
                            sheet.execution_duration_seconds,
                            sheet.exit_signal,
                            sheet.exit_reason,
                        ),
                    )
                conn.commit()
            except BaseException:
                conn.rollback()
                raise

    def record_execution(
        self, job_id: str, sheet_num: int, attempt_num: int, output: str, exit_code: int | None, duration: float
    ) -> int:
        with self._connect() as conn:
            cursor = conn.execute(
                "INSERT INTO execution_history (job_id, sheet_num, attempt_num, prompt, output, exit_code, "
                "duration_seconds, executed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job_id,
                    sheet_num,
                    attempt_num,
                    f"sheet {sheet_num} prompt",
                    output,
                    exit_code,
                    duration,
                    _iso(utc_now()),
                ),
            )
            conn.commit()
            return cursor.lastrowid or 0


class RegistryWriter:
    """``JobRegistry`` over the conductor's ``daemon-state.db``: one connection kept open, WAL mode
    (``open()`` sets it), a commit after every operation."""

    def __init__(self, path: Path, *, witness: Witness | None = None, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.witness = witness
        self.clock = clock
        self._lock = threading.Lock()  # aiosqlite runs one connection's calls one at a time on its thread
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, check_same_thread=False)
        with self._operation() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            for statement in REGISTRY_DDL:
                conn.execute(_if_not_exists(statement))
            columns = {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}
            for column, kind in REGISTRY_ADDED_COLUMNS:
                if column not in columns:  # JobRegistry tries the ALTER and ignores "duplicate column"
                    conn.execute(f"ALTER TABLE jobs ADD COLUMN {column} {kind}")

    @contextlib.contextmanager
    def _operation(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self.witness:
                self.witness(self.path, "before")
            try:
                yield self._conn
                self._conn.commit()
            finally:
                if self.witness:
                    self.witness(self.path, "after")

    def close(self) -> None:
        """The last connection's close checkpoints the WAL into the DB and deletes it: a write too."""
        with self._lock:
            if self.witness:
                self.witness(self.path, "before")
            self._conn.close()
            if self.witness:
                self.witness(self.path, "after")

    def register_job(self, job_id: str, config_path: str, workspace: Path) -> None:
        with self._operation() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO jobs (job_id, config_path, workspace, status, submitted_at) "
                "VALUES (?, ?, ?, 'queued', ?)",
                (job_id, config_path, str(workspace), self.clock()),
            )

    def update_status(
        self, job_id: str, status: str, *, pid: int | None = None, error_message: str | None = None
    ) -> None:
        updates: list[str] = ["status = ?"]
        params: list[object] = [status]
        if pid is not None:
            updates.append("pid = ?")
            params.append(pid)
        if status == "running" and pid is not None:
            updates.append("started_at = ?")
            params.append(self.clock())
        if status in TERMINAL_REGISTRY:
            updates.append("completed_at = ?")
            params.append(self.clock())
        if error_message is not None:
            updates.append("error_message = ?")
            params.append(error_message)
        with self._operation() as conn:
            conn.execute(f"UPDATE jobs SET {', '.join(updates)} WHERE job_id = ?", (*params, job_id))

    def update_progress(self, job_id: str, current_sheet: int, total_sheets: int) -> None:
        with self._operation() as conn:
            conn.execute(
                "UPDATE jobs SET current_sheet = ?, total_sheets = ?, last_event_at = ? WHERE job_id = ?",
                (current_sheet, total_sheets, self.clock(), job_id),
            )

    def save_checkpoint(self, job_id: str, checkpoint_json: str) -> None:
        with self._operation() as conn:
            conn.execute(
                "UPDATE jobs SET checkpoint_json = ?, last_event_at = ? WHERE job_id = ?",
                (checkpoint_json, self.clock(), job_id),
            )


# -- a pretend conductor ---------------------------------------------------------------------------

# (scenario, weight): how one submitted job goes.
SCENARIOS = (
    ("clean", 40),  # every sheet completes first time
    ("retried", 20),  # one sheet fails transiently, then succeeds
    ("exhausted", 10),  # one sheet fails every attempt: the job fails
    ("fatal", 6),  # an auth failure, not retried: the job fails
    ("paused", 6),  # paused after its first sheet
    ("skipped", 6),  # a sheet skipped, then the job is cancelled
    ("lost", 3),  # the conductor stops updating it mid-sheet: running, going stale
    ("resumed", 6),  # an auth failure fails the job; resumed, the sheet's next attempt succeeds
)
MAX_ATTEMPTS = 3
TRANSIENT = Failure("transient", "Rate limited by instrument", "error")
TIMEOUT = Failure("timeout", "Command timed out", "timeout", exit_code=None, exit_signal=15)
KILLED = Failure("signal", "Killed by signal 9", "killed", exit_code=None, exit_signal=9)
VALIDATION = Failure("validation", "Validation failed: output.csv missing", "completed", exit_code=0)
AUTH = Failure("auth", "Authentication failed", "error")


class Conductor:
    """Jobs submitted to a few workspaces, each going through Marianne's transitions, with the
    registry (when given) following them.  ``speed=math.inf`` writes without pausing.  Every write
    runs off the event loop (as aiosqlite does), one at a time per job."""

    def __init__(
        self,
        workspaces: Sequence[WorkspaceWriter],
        registry: RegistryWriter | None = None,
        *,
        seed: int | None = None,
        speed: float = 1.0,
    ) -> None:
        self.workspaces = list(workspaces)
        self.registry = registry
        self.random = random.Random(seed)
        self.speed = speed
        self.submitted = 0
        self.pid = os.getpid()

    async def run_forever(self, stop: asyncio.Event, *, jobs_per_second: float = 1.0) -> None:
        await arrive_until(stop, jobs_per_second, self.random, self.run_one)

    async def _pause(self, low: float, high: float) -> None:
        if math.isfinite(self.speed):
            await asyncio.sleep(self.random.uniform(low, high) / self.speed)

    async def _write(self, operation: Callable[..., object], *args: object) -> None:
        await asyncio.to_thread(operation, *args)

    async def _registry(self, name: str, *args: object, **kwargs: object) -> None:
        if self.registry is not None:
            await asyncio.to_thread(getattr(self.registry, name), *args, **kwargs)

    async def _save(self, workspace: WorkspaceWriter, job: Job) -> None:
        """A save, then the conductor's publish of the state to the registry."""
        await self._write(workspace.save, job)
        await self._registry("save_checkpoint", job.job_id, job.checkpoint_json())

    async def run_one(self, scenario: str | None = None) -> str:
        names = [name for name, _ in SCENARIOS]
        scenario = scenario or self.random.choices(names, [w for _, w in SCENARIOS])[0]
        self.submitted += 1
        workspace = self.workspaces[self.submitted % len(self.workspaces)]
        job = Job(f"{scenario}-{self.submitted:05d}", self.random.randint(2, 4), f"scores/{scenario}.yaml")
        await self._registry("register_job", job.job_id, job.config_path, workspace.workspace)
        await self._write(workspace.save, job)
        await self._pause(0.1, 0.5)  # queued until the conductor starts it
        await self._registry("update_status", job.job_id, "running", pid=self.pid)
        failing = self.random.randint(1, job.total_sheets)
        for n in range(1, job.total_sheets + 1):
            if scenario == "skipped" and n == failing:
                job.sheet_skipped(n, "skip_when condition matched")
                await self._save(workspace, job)
                job.cancelled()
                await self._save(workspace, job)
                await self._registry("update_status", job.job_id, "cancelled")
                return job.job_id
            failures: list[Failure] = []
            if n == failing:
                failures = {
                    "retried": [TRANSIENT],
                    "exhausted": [TIMEOUT, KILLED, VALIDATION],
                    "fatal": [AUTH],
                    "resumed": [AUTH],
                }.get(scenario, [])
            if not await self._sheet(workspace, job, n, failures, lost=scenario == "lost" and n == failing):
                if scenario != "resumed" or job.status != "failed":
                    return job.job_id
                await self._pause(0.5, 2.0)  # someone looks at the failure, fixes the credentials
                job.resumed()
                await self._save(workspace, job)
                await self._registry("update_status", job.job_id, "running", pid=self.pid)
                if not await self._sheet(workspace, job, n, [], lost=False, first_attempt=2):
                    return job.job_id
            if scenario == "paused" and n == 1:
                job.paused()
                await self._save(workspace, job)
                await self._registry("update_status", job.job_id, "paused")
                return job.job_id
        await self._registry("update_status", job.job_id, "completed")
        return job.job_id

    async def _sheet(
        self,
        workspace: WorkspaceWriter,
        job: Job,
        n: int,
        failures: list[Failure],
        *,
        lost: bool,
        first_attempt: int = 1,
    ) -> bool:
        """Run sheet ``n`` through its attempts: True when it completed and the job goes on."""
        for attempt, failure in enumerate([*failures, None], start=first_attempt):
            job.sheet_started(n)
            await self._save(workspace, job)
            await self._registry("update_progress", job.job_id, n, job.total_sheets)
            if lost:
                return False  # nothing more is written for it
            duration = round(self.random.uniform(0.1, 3.0), 3)
            await self._pause(0.1, 0.8)
            if failure is None:
                job.sheet_completed(n, duration)
                await self._save(workspace, job)
                await self._write(workspace.record_execution, job.job_id, n, attempt, "ok", 0, duration)
                return True
            last = attempt == MAX_ATTEMPTS or failure is AUTH
            job.sheet_failed(n, failure, duration, retry=not last)
            await self._save(workspace, job)
            await self._write(
                workspace.record_execution, job.job_id, n, attempt, failure.message, failure.exit_code, duration
            )
            if last:
                job.failed(f"Sheet {n} failed after {attempt} attempts")
                await self._save(workspace, job)
                await self._registry("update_status", job.job_id, "failed", error_message=job.error_message)
                return False
        raise AssertionError("unreachable: the last attempt either completes or fails the job")
