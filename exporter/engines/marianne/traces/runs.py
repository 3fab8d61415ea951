"""Reading Marianne job runs from a workspace DB: which runs exist, how far they are, and the sheets
and attempts their spans are made of.

Marianne keeps one ``jobs`` row per job id and rewrites it on every save (an upsert: ``created_at``
is the one time it never rewrites, so a job run again under the same id keeps its first
``created_at``).  A *run* is therefore told apart by ``started_at``, which every new start writes
afresh: a fresh run's new ``CheckpointState``, and the conductor's resume of a paused job
(``checkpoint.started_at = utc_now()``).  A run's identity is (job id, ``started_at`` as stored);
a job never started (``started_at`` NULL) has no run yet.

Sheets and attempts are per job id, not per run: a new run upserts the sheet rows (a sheet not run
again keeps the earlier run's row) and ``execution_history`` only grows.  What belongs to a run is
what happened since its start: a sheet whose first time (``started_at``, else ``completed_at`` for
a skipped one) is not before the run's start, an attempt whose ``executed_at`` is not before it.
A sheet with neither time never ran (pending, or cancelled before it started) and has no span.

Only the columns spans are made of are read: never ``prompt`` and ``output`` (the instrument's
whole prompt and answer: size and privacy), nor the JSON blobs (config snapshot, validation
details, outcome data, learned patterns).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC

from exporter.engines.marianne.layout import HISTORY, JOBS, SHEETS, WorkspaceSchema
from exporter.engines.marianne.statuses import CANCELLED, COMPLETED, FAILED
from exporter.reader.sql import in_chunks
from exporter.timeparse import TimestampError, parse_instant

# The JobStatus words a run does not leave.  ``paused`` (and ``paused_at_chain``) is not one: the
# job resumes, under the same run (``mzt resume`` keeps ``started_at``) or a new one (the conductor).
FINISHED = frozenset({COMPLETED, FAILED, CANCELLED})
# Marianne's ``SheetStatus.is_terminal``.
TERMINAL_SHEET = frozenset({"completed", "failed", "skipped", "cancelled"})
SEPARATOR = "@"  # unit id = job id + "@" + started_at (ISO text has no "@"; a job id may)
_DIGEST_DOMAIN = b"marianne-run:"


def epoch(raw: object) -> float | None:
    """Epoch seconds of a stored time; ``None`` for NULL and for anything that is not a time."""
    try:
        instant = parse_instant(raw, UTC)
    except TimestampError:
        return None
    return None if instant is None else instant.timestamp()


def _int(raw: object) -> int | None:
    return raw if isinstance(raw, int) and not isinstance(raw, bool) else None


def _number(raw: object) -> float | None:
    return float(raw) if isinstance(raw, int | float) and not isinstance(raw, bool) else None


def _text(raw: object) -> str | None:
    return raw if isinstance(raw, str) and raw else None


def run_digest(unit_id: str) -> str:
    """A run's short fingerprint in the discovery cursor (16 hex digits of sha256)."""
    return hashlib.sha256(_DIGEST_DOMAIN + unit_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def split_unit(unit_id: str) -> tuple[str, str] | None:
    job_id, separator, started = unit_id.rpartition(SEPARATOR)
    return (job_id, started) if separator and started else None


@dataclass(frozen=True)
class JobRun:
    """One run of a job: its ``jobs`` row as read now."""

    job_id: str
    started_text: str  # jobs.started_at as stored: with the job id, what tells a run from the next
    created_text: str  # jobs.created_at as stored
    name: str
    status: str
    start: float
    updated_text: str
    updated: float | None
    completed_text: str
    completed: float | None
    error_message: str | None
    total_sheets: int | None
    last_completed_sheet: int | None
    total_retry_count: int | None
    rate_limit_waits: int | None

    @property
    def unit_id(self) -> str:
        return f"{self.job_id}{SEPARATOR}{self.started_text}"

    @property
    def digest(self) -> str:
        return run_digest(self.unit_id)

    @property
    def position(self) -> int:
        """Microseconds since the epoch of its start: runs are discovered in start order."""
        return round(self.start * 1_000_000)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def end(self) -> float | None:
        """A finished run's end: ``completed_at`` (a cancelled job has none: its last save)."""
        if not self.finished:
            return None
        return self.completed if self.completed is not None else self.updated


_JOB_COLUMNS = (
    "id, started_at, created_at, name, status, updated_at, completed_at, error_message,"
    " total_sheets, last_completed_sheet, total_retry_count, rate_limit_waits"
)


def _job_run(row: Sequence[object]) -> JobRun | None:
    job_id, started, created, name, status, updated, completed, error, total, last, retries, waits = row
    if not isinstance(job_id, str) or started is None:
        return None
    start = epoch(started)
    if start is None:  # a start that is not a time: no trace can be placed
        return None
    return JobRun(
        job_id=job_id,
        started_text=str(started),
        created_text="" if created is None else str(created),
        name=_text(name) or job_id,
        status=status if isinstance(status, str) else "unknown",
        start=start,
        updated_text="" if updated is None else str(updated),
        updated=epoch(updated),
        completed_text="" if completed is None else str(completed),
        completed=epoch(completed),
        error_message=_text(error),
        total_sheets=_int(total),
        last_completed_sheet=_int(last),
        total_retry_count=_int(retries),
        rate_limit_waits=_int(waits),
    )


def started_runs(conn: sqlite3.Connection) -> list[JobRun]:
    """The current run of every job that has started one."""
    found = []
    for row in conn.execute(f"SELECT {_JOB_COLUMNS} FROM {JOBS} WHERE started_at IS NOT NULL"):
        run = _job_run(row)
        if run is not None:
            found.append(run)
    return found


def runs_by_unit(conn: sqlite3.Connection, unit_ids: Sequence[str]) -> dict[str, JobRun]:
    """Those of ``unit_ids`` that are still their job's current run."""
    wanted: dict[str, str] = {}
    for unit_id in unit_ids:
        parts = split_unit(unit_id)
        if parts is not None:
            wanted[unit_id] = parts[0]
    found: dict[str, JobRun] = {}
    for marks, chunk in in_chunks(sorted(set(wanted.values()))):
        for row in conn.execute(f"SELECT {_JOB_COLUMNS} FROM {JOBS} WHERE id IN ({marks})", chunk):
            run = _job_run(row)
            if run is not None and run.unit_id in wanted:
                found[run.unit_id] = run
    return found


# --- what a run's spans are made of ---------------------------------------------------------------


@dataclass(frozen=True)
class Sheet:
    sheet_num: int
    status: str
    attempt_count: int | None
    exit_code: int | None
    exit_signal: int | None  # schema v3 on
    exit_reason: str | None  # schema v3 on
    error_message: str | None
    error_category: str | None
    duration: float | None  # execution_duration_seconds, schema v3 on
    started: float | None
    completed: float | None
    bad_time: str | None  # a stored time that is not one (the span is rejected)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_SHEET


@dataclass(frozen=True)
class Attempt:
    history_id: int
    sheet_num: int
    attempt_num: int
    exit_code: int | None
    duration: float | None
    executed: float | None  # None: not a time (the span is rejected)
    executed_raw: object


@dataclass
class Members:
    """A run's sheets (those that ran, by number) and attempts (by sheet, attempt number, row id)."""

    sheets: list[Sheet] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)


def _times(started: object, completed: object) -> tuple[float | None, float | None, str | None]:
    start, end = epoch(started), epoch(completed)
    bad = next((repr(raw) for raw, at in ((started, start), (completed, end)) if raw is not None and at is None), None)
    return start, end, bad


def members(conn: sqlite3.Connection, schema: WorkspaceSchema, runs: Sequence[JobRun]) -> dict[str, Members]:
    """Per unit id: what of its job's sheets and attempts happened in that run."""
    by_job = {run.job_id: run for run in runs}
    found = {run.unit_id: Members() for run in runs}
    v3 = schema.has_exit_reason
    exit_columns = "exit_signal, exit_reason, execution_duration_seconds" if v3 else "NULL, NULL, NULL"
    for marks, chunk in in_chunks(sorted(by_job)):
        for row in conn.execute(
            f"SELECT job_id, sheet_num, status, attempt_count, exit_code, {exit_columns}, error_message,"
            f" error_category, started_at, completed_at FROM {SHEETS} WHERE job_id IN ({marks}) ORDER BY job_id,"
            " sheet_num",
            chunk,
        ):
            job_id, num, status, attempts, exit_code, signal, reason, duration, error, category, started, ended = row
            run = by_job.get(job_id) if isinstance(job_id, str) else None
            number = _int(num)
            if run is None or number is None or (started is None and ended is None):
                continue  # never ran
            start, end, bad = _times(started, ended)
            first = start if start is not None else end
            if bad is None and (first is None or first < run.start):
                continue  # an earlier run's
            found[run.unit_id].sheets.append(
                Sheet(
                    sheet_num=number,
                    status=status if isinstance(status, str) else "unknown",
                    attempt_count=_int(attempts),
                    exit_code=_int(exit_code),
                    exit_signal=_int(signal),
                    exit_reason=_text(reason),
                    error_message=_text(error),
                    error_category=_text(category),
                    duration=_number(duration),
                    started=start,
                    completed=end,
                    bad_time=bad,
                )
            )
        # Never prompt or output: only what the spans are made of.
        for history_id, job_id, num, attempt_num, exit_code, duration, executed in conn.execute(
            f"SELECT id, job_id, sheet_num, attempt_num, exit_code, duration_seconds, executed_at FROM {HISTORY}"
            f" WHERE job_id IN ({marks}) ORDER BY job_id, sheet_num, attempt_num, id",
            chunk,
        ):
            run = by_job.get(job_id) if isinstance(job_id, str) else None
            row_id, number, attempt = _int(history_id), _int(num), _int(attempt_num)
            if run is None or row_id is None or number is None or attempt is None:
                continue
            at = epoch(executed)
            if at is not None and at < run.start:
                continue  # an earlier run's
            found[run.unit_id].attempts.append(
                Attempt(row_id, number, attempt, _int(exit_code), _number(duration), at, executed)
            )
    return found


@dataclass
class RunInfo:
    """One run as read now (a :class:`~exporter.traces.source.UnitInfo`), with its members."""

    run: JobRun
    parts: Members

    @property
    def run_id(self) -> str:
        return self.run.unit_id

    @property
    def finished(self) -> bool:
        return self.run.finished

    @property
    def start(self) -> float | None:
        return self.run.start

    @property
    def end(self) -> float | None:
        return self.run.end

    @property
    def span_count(self) -> int:
        return 1 + len(self.parts.sheets) + len(self.parts.attempts)

    @property
    def signature(self) -> str:
        """Changes with every save of the job (``updated_at``) and every attempt recorded."""
        last = max((a.history_id for a in self.parts.attempts), default=0)
        return (
            f"{self.run.status}|{self.run.updated_text}|{self.run.completed_text}"
            f"|{len(self.parts.sheets)}|{len(self.parts.attempts)}|{last}"
        )


def run_infos(conn: sqlite3.Connection, schema: WorkspaceSchema, runs: Iterable[JobRun]) -> dict[str, RunInfo]:
    listed = list(runs)
    parts = members(conn, schema, listed)
    return {run.unit_id: RunInfo(run, parts[run.unit_id]) for run in listed}


# --- the discovery cursor: the runs discovered, as digests ------------------------------------------


def parse_cursor(cursor: str | None) -> set[str]:
    """The digests of the runs discovered; nothing for another engine's cursor (start over: a
    re-send deduplicates, a skip would lose)."""
    if not cursor:
        return set()
    try:
        data = json.loads(cursor)
    except ValueError:
        return set()
    runs = data.get("runs") if isinstance(data, dict) else None
    return {r for r in runs if isinstance(r, str)} if isinstance(runs, list) else set()


def cursor_text(digests: Iterable[str]) -> str:
    return json.dumps({"runs": sorted(digests)}, separators=(",", ":"))
