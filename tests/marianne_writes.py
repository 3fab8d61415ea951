"""The writes Marianne 0.1.0 makes, one backend call at a time, for the ops stack and the stuck-alert tests.

Workspace DB: ``SQLiteStateBackend.save`` upserts the job row and every sheet row in one transaction (``updated_at``
is ``utc_now()`` at each save; times are aware ISO-8601 UTC text) and ``record_execution`` inserts one
``execution_history`` row per attempt.  A finished job is saved with its end (``completed_at``) and no pid, as the
fixture's completed and failed jobs are.  Registry: ``JobRegistry.update_status`` sets a terminal status with
``completed_at = time.time()``; ``mark_orphans_failed`` (a conductor start) fails every queued or running job.
"""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path


def iso(instant: datetime) -> str:
    """How ``_datetime_to_str`` stores an aware UTC datetime."""
    return instant.isoformat()


@dataclass(frozen=True)
class Sheet:
    num: int
    status: str
    attempts: int
    duration: float
    error_category: str | None = None
    exit_reason: str | None = None


def save_job(
    db: Path,
    job_id: str,
    status: str,
    sheets: list[Sheet],
    *,
    created: datetime,
    updated: datetime,
    completed: datetime | None = None,
    pid: int | None = None,
) -> None:
    """One ``save()``: the job row and its sheet rows, upserted."""
    done = sum(1 for sheet in sheets if sheet.status == "completed")
    retries = sum(max(sheet.attempts - 1, 0) for sheet in sheets)
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute(
            "INSERT INTO jobs (id, name, description, status, total_sheets, last_completed_sheet, current_sheet,"
            " config_hash, config_snapshot, config_path, pid, error_message, total_retry_count, rate_limit_waits,"
            " created_at, updated_at, started_at, completed_at) VALUES (?, ?, NULL, ?, ?, ?, NULL, NULL, NULL, NULL,"
            " ?, NULL, ?, 0, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET status = excluded.status,"
            " last_completed_sheet = excluded.last_completed_sheet, pid = excluded.pid,"
            " total_retry_count = excluded.total_retry_count, updated_at = excluded.updated_at,"
            " started_at = excluded.started_at, completed_at = excluded.completed_at",
            (
                job_id,
                job_id,
                status,
                len(sheets),
                done,
                pid,
                retries,
                iso(created),
                iso(updated),
                iso(created),
                None if completed is None else iso(completed),
            ),
        )
        for sheet in sheets:
            ended = sheet.status in ("completed", "failed")
            conn.execute(
                "INSERT INTO sheets (job_id, sheet_num, status, attempt_count, exit_code, error_category, started_at,"
                " completed_at, execution_duration_seconds, exit_reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(job_id, sheet_num) DO UPDATE SET status = excluded.status,"
                " attempt_count = excluded.attempt_count, exit_code = excluded.exit_code,"
                " error_category = excluded.error_category, completed_at = excluded.completed_at,"
                " execution_duration_seconds = excluded.execution_duration_seconds,"
                " exit_reason = excluded.exit_reason",
                (
                    job_id,
                    sheet.num,
                    sheet.status,
                    sheet.attempts,
                    0 if ended else None,
                    sheet.error_category,
                    iso(created),
                    iso(updated) if ended else None,
                    sheet.duration if ended else None,
                    sheet.exit_reason,
                ),
            )
        conn.commit()


def record_executions(db: Path, job_id: str, sheets: list[Sheet], at: datetime) -> None:
    """``record_execution`` for every attempt of every sheet (one call each)."""
    for sheet in sheets:
        for attempt in range(1, sheet.attempts + 1):
            with contextlib.closing(sqlite3.connect(db)) as conn:
                conn.execute(
                    "INSERT INTO execution_history (job_id, sheet_num, attempt_num, prompt, output, exit_code,"
                    " duration_seconds, executed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (job_id, sheet.num, attempt, f"sheet {sheet.num} prompt", "ok", 0, sheet.duration, iso(at)),
                )
                conn.commit()


def finish_job(db: Path, job_id: str, status: str, at: datetime) -> None:
    """The last ``save()`` of a job that ended: its status, its end, no pid; sheets still in progress end with it."""
    sheet_status = "completed" if status == "completed" else "failed"
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute(
            "UPDATE jobs SET status = ?, pid = NULL, current_sheet = NULL, updated_at = ?, completed_at = ?"
            " WHERE id = ?",
            (status, iso(at), iso(at), job_id),
        )
        conn.execute(
            "UPDATE sheets SET status = ?, completed_at = ? WHERE job_id = ? AND status = 'in_progress'",
            (sheet_status, iso(at), job_id),
        )
        conn.execute(
            "UPDATE jobs SET last_completed_sheet = (SELECT COUNT(*) FROM sheets WHERE job_id = ?"
            " AND status = 'completed') WHERE id = ?",
            (job_id, job_id),
        )
        conn.commit()


def set_running(db: Path, job_id: str, pid: int | None, updated: datetime) -> None:
    """A ``save()`` of a running job with ``pid`` (``set_running_pid``), its last update at ``updated``."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute(
            "UPDATE jobs SET status = 'running', pid = ?, completed_at = NULL, updated_at = ? WHERE id = ?",
            (pid, iso(updated), job_id),
        )
        conn.commit()


def registry_update_status(db: Path, job_id: str, status: str, at: float) -> None:
    """``JobRegistry.update_status(job_id, status)`` with a terminal status."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("UPDATE jobs SET status = ?, completed_at = ? WHERE job_id = ?", (status, at, job_id))
        conn.commit()


def registry_mark_orphans_failed(db: Path, at: float) -> int:
    """``JobRegistry.mark_orphans_failed()``: what a starting conductor does to the jobs it lost."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        cursor = conn.execute(
            "UPDATE jobs SET status = 'failed', completed_at = ?,"
            " error_message = 'Daemon restarted while job was active' WHERE status IN ('queued', 'running')",
            (at,),
        )
        conn.commit()
        return cursor.rowcount


def dead_pid() -> int:
    """The pid of a child that ran, exited and was reaped: dead on this host (until the kernel reuses it)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def live_child() -> subprocess.Popen[bytes]:
    """A child that stays alive until the caller kills it: a pid that is alive on this host."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
