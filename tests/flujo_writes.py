"""The writes flujo's SQLite backend makes for one run, one backend call at a time.

Each method is one backend call as flujo makes it: a NEW connection, the statement(s), commit, close
(0.4.35 opens a connection per call; 0.6.x pools one, which changes nothing a reader can see between
commits).  Column sets and value shapes are those of the real fixtures (``sample-small.db`` written by
flujo 0.4.35, ``sample06-small.db`` by 0.6.11); the call order is SCHEMA.md §4 "Write sequence" and,
for 0.6.x, ``run_session.py``/``execution_manager_finalization.py`` of flujo 0.6.11: the workflow
state is persisted first, ``save_run_end`` next, ``save_trace`` last.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path


def one_call(db: Path, statements: list[tuple[str, tuple[object, ...]]], *, foreign_keys: bool = False) -> None:
    conn = sqlite3.connect(db)
    try:
        if foreign_keys:
            conn.execute("PRAGMA foreign_keys = ON")
        for sql, params in statements:
            conn.execute(sql, params)
        conn.commit()
    finally:
        conn.close()


def _naive(at: datetime) -> str:
    return at.astimezone(UTC).replace(tzinfo=None).isoformat()


def _aware(at: datetime) -> str:
    return at.astimezone(UTC).isoformat()


@dataclass
class Flujo0435Run:
    """One run of a 3-step ``approval_flow`` (prepare -> human_approval -> apply) as flujo 0.4.35
    writes it (writer time zone UTC: ``workflow_state`` local-naive equals UTC-naive)."""

    db: Path
    started: datetime
    run_id: str = field(default_factory=lambda: f"run_{uuid.uuid4().hex}")
    pipeline: str = "approval_flow"
    version: str = "0.9.2"
    state_created: datetime | None = None  # kept from the first save once a state was loaded (resume)

    def _context(self, status: str) -> str:
        return json.dumps(
            {
                "run_id": self.run_id,
                "initial_prompt": f"{self.pipeline} job #1",
                "scratchpad": {"status": status, "pause_message": "Approve the prepared change?"},
                "hitl_history": [],
                "command_log": [],
            }
        )

    def save_run_start(self) -> None:
        one_call(
            self.db,
            [
                (
                    "INSERT OR REPLACE INTO runs (run_id, pipeline_name, pipeline_version, status, start_time)"
                    " VALUES (?, ?, ?, 'running', ?)",
                    (self.run_id, self.pipeline, self.version, _naive(self.started)),
                )
            ],
        )

    def save_state(self, status: str, index: int, at: datetime) -> None:
        created = self.state_created or at  # overwritten on every save unless the state was loaded
        elapsed = int((at - self.state_created).total_seconds() * 1000) if self.state_created else None
        one_call(
            self.db,
            [
                (
                    "INSERT OR REPLACE INTO workflow_state (run_id, pipeline_id, pipeline_name, pipeline_version,"
                    " current_step_index, pipeline_context, last_step_output, step_history, status, created_at,"
                    " updated_at, total_steps, error_message, execution_time_ms, memory_usage_mb)"
                    " VALUES (?, ?, ?, ?, ?, ?, NULL, '[]', ?, ?, ?, 3, NULL, ?, 7.62939453125e-05)",
                    (
                        self.run_id,
                        self.pipeline,
                        self.pipeline,
                        self.version,
                        index,
                        self._context(status),
                        status,
                        _naive(created),
                        _naive(at),
                        elapsed,
                    ),
                )
            ],
        )

    def load_state(self) -> None:
        """``resume_async`` loads the saved state: later saves keep its created_at."""
        conn = sqlite3.connect(self.db)
        try:
            row = conn.execute("SELECT created_at FROM workflow_state WHERE run_id = ?", (self.run_id,)).fetchone()
        finally:
            conn.close()
        self.state_created = datetime.fromisoformat(row[0]).replace(tzinfo=UTC)

    def save_step_result(self, index: int, name: str, status: str, at: datetime, duration_ms: int) -> None:
        one_call(
            self.db,
            [
                (
                    "INSERT OR REPLACE INTO steps (step_run_id, run_id, step_name, step_index, status, start_time,"
                    " end_time, duration_ms, cost, tokens, input_blob, output_blob, error_blob)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0.0, 0, 'null', ?, ?)",
                    (
                        f"{self.run_id}:{index}",
                        self.run_id,
                        name,
                        index,
                        status,
                        _naive(at),
                        _naive(at + timedelta(microseconds=237)),
                        duration_ms if status == "completed" else 0,
                        '{"step": "prepare", "records": 496}' if status == "completed" else "null",
                        None if status == "completed" else json.dumps("approver lacks role 'admin'"),
                    ),
                )
            ],
        )

    def save_run_end(self, status: str, at: datetime) -> None:
        one_call(
            self.db,
            [
                (
                    "UPDATE runs SET status = ?, end_time = ?, total_cost = 0.0, final_context_blob = ?"
                    " WHERE run_id = ?",
                    (status, _naive(at), self._context(status), self.run_id),
                )
            ],
        )

    def save_trace(self, at: datetime, steps: list[tuple[str, str]]) -> None:
        """Deletes and re-inserts the run's spans in one transaction (foreign keys on)."""
        start = self.started.timestamp()
        root = str(uuid.uuid4())
        rows: list[tuple[str, tuple[object, ...]]] = [
            ("DELETE FROM spans WHERE run_id = ?", (self.run_id,)),
            (
                "INSERT INTO spans (span_id, run_id, parent_span_id, name, start_time, end_time, status, attributes,"
                " created_at) VALUES (?, ?, NULL, 'pipeline_root', ?, NULL, 'running', ?, datetime('now'))",
                (root, self.run_id, start, json.dumps({"initial_input": f"{self.pipeline} job #1"})),
            ),
        ]
        for offset, (name, status) in enumerate(steps):
            end = None if status == "running" else start + offset + 1
            rows.append(
                (
                    "INSERT INTO spans (span_id, run_id, parent_span_id, name, start_time, end_time, status,"
                    " attributes, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, '{}', datetime('now'))",
                    (str(uuid.uuid4()), self.run_id, root, name, start + offset, end, status),
                )
            )
        one_call(self.db, rows, foreign_keys=True)


@dataclass
class Flujo06Run:
    """One run of ``approval_flow`` as flujo 0.6.11 writes it (aware UTC times, steps/spans with
    integer ids, ``runs`` ended through ``updated_at``)."""

    db: Path
    started: datetime
    run_id: str = field(default_factory=lambda: f"run_{uuid.uuid4().hex}")
    pipeline: str = "approval_flow"
    version: str = "0.9.2"
    state_created: datetime | None = None

    def record_run_start(self) -> None:
        at = _aware(self.started)
        one_call(
            self.db,
            [
                (
                    "INSERT OR REPLACE INTO runs (run_id, pipeline_id, pipeline_name, pipeline_version, status,"
                    " created_at, updated_at) VALUES (?, ?, ?, ?, 'running', ?, ?)",
                    (self.run_id, f"{self.pipeline}@{self.version}", self.pipeline, self.version, at, at),
                )
            ],
        )

    def persist_state(self, status: str, index: int, at: datetime) -> None:
        created = self.state_created or at
        elapsed = int((at - self.state_created).total_seconds() * 1000) if self.state_created else None
        context = json.dumps({"run_id": self.run_id, "status": status, "pipeline_name": self.pipeline})
        one_call(
            self.db,
            [
                (
                    "INSERT OR REPLACE INTO workflow_state (run_id, pipeline_id, pipeline_name, pipeline_version,"
                    " current_step_index, pipeline_context, last_step_output, step_history, status, created_at,"
                    " updated_at, total_steps, error_message, execution_time_ms, memory_usage_mb, metadata,"
                    " is_background_task, parent_run_id, task_id, background_error)"
                    " VALUES (?, ?, ?, ?, ?, ?, NULL, '[]', ?, ?, ?, 4, NULL, ?, NULL, '{}', 0, NULL, NULL, NULL)",
                    (
                        self.run_id,
                        f"{self.pipeline}@{self.version}",
                        self.pipeline,
                        self.version,
                        index,
                        context,
                        status,
                        _aware(created),
                        _aware(at),
                        elapsed,
                    ),
                )
            ],
        )

    def load_state(self) -> None:
        conn = sqlite3.connect(self.db)
        try:
            row = conn.execute("SELECT created_at FROM workflow_state WHERE run_id = ?", (self.run_id,)).fetchone()
        finally:
            conn.close()
        self.state_created = datetime.fromisoformat(row[0])

    def save_step_result(self, index: int, name: str, status: str, at: datetime) -> None:
        one_call(
            self.db,
            [
                (
                    "INSERT INTO steps (run_id, step_name, step_index, status, output, raw_response, cost_usd,"
                    " token_counts, execution_time_ms, created_at) VALUES (?, ?, ?, ?, ?, NULL, NULL, NULL, NULL, ?)",
                    (self.run_id, name, index, status, "null" if status == "failed" else "{}", _aware(at)),
                )
            ],
        )

    def save_run_end(self, status: str, at: datetime) -> None:
        one_call(
            self.db,
            [
                (
                    "UPDATE runs SET status = ?, updated_at = ?, execution_time_ms = NULL, memory_usage_mb = NULL,"
                    " total_steps = 0, error_message = NULL WHERE run_id = ?",
                    (status, _aware(at), self.run_id),
                )
            ],
        )

    def save_trace(self, at: datetime, monotonic_start: float, steps: list[tuple[str, str]]) -> None:
        created = at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
        root = str(uuid.uuid4())
        rows: list[tuple[str, tuple[object, ...]]] = [
            ("DELETE FROM spans WHERE run_id = ?", (self.run_id,)),
            (
                "INSERT INTO spans (run_id, span_id, parent_span_id, name, start_time, end_time, status, attributes,"
                " created_at) VALUES (?, ?, NULL, 'pipeline_run', ?, ?, 'paused', '{}', ?)",
                (self.run_id, root, monotonic_start, monotonic_start + len(steps), created),
            ),
        ]
        for offset, (name, status) in enumerate(steps):
            rows.append(
                (
                    "INSERT INTO spans (run_id, span_id, parent_span_id, name, start_time, end_time, status,"
                    " attributes, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, '{}', ?)",
                    (
                        self.run_id,
                        str(uuid.uuid4()),
                        root,
                        name,
                        monotonic_start + offset,
                        monotonic_start + offset + 1,
                        status,
                        created,
                    ),
                )
            )
        one_call(self.db, rows)
