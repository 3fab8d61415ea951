"""The refresh tiers over a Marianne file, each in one short read transaction.

Workspace DB (one workspace's jobs, small tables):

* *snapshot* (every refresh): jobs by status and the judgement of each running job: zombie (pid
  dead, with ``metrics.marianne.same_host_pid_check`` only), running without a pid, stale (not
  updated for ``metrics.stuck.running_after``);
* *counts*: sheets by status (``idx_sheets_status``);
* *aggregates*: failed sheets by error category and exit reason, attempts per sheet, sheet
  durations.

Attempt outcomes, retries and finished jobs are counters: :mod:`.tracking` counts each once.

Registry DB (the conductor's): jobs by status, orphans and the stuck judgement, every refresh.

Gate on status: a retried sheet that later succeeds keeps its ``error_category`` and
``exit_reason``, and an attempt with exit code 0 can have failed its validations, so neither
column says whether something failed.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from exporter.engines.marianne import pids
from exporter.engines.marianne.layout import JOBS, SHEETS, RegistrySchema, Schema, WorkspaceSchema
from exporter.engines.marianne.statuses import (
    ORPHAN_STATUSES,
    PHASES,
    RUNNING,
    SHEET_FAILED,
)
from exporter.labels import label_text
from exporter.model import ACTIVE_PHASES, RUN_DURATION_BUCKETS, Histogram, StuckReason
from exporter.reader.badvalues import BadValue, shown
from exporter.timeparse import TimestampError, parse_instant

if TYPE_CHECKING:
    from exporter.config import MetricsConfig

STUCK_REASONS = (StuckReason.PID_DEAD, StuckReason.IDLE)
NONE = "none"  # label for a failed sheet without an error category / exit reason
ATTEMPT_BUCKETS = (0.0, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0)
# Sheets are often seconds long: finer low buckets than the jobs' (which use the overview's).
SHEET_DURATION_BUCKETS = (0.01, 0.05, *RUN_DURATION_BUCKETS)
REGISTRY_TABLE = "jobs"


@dataclass(frozen=True)
class JudgedJob:
    """A running job and what the rules make of it (``job_id`` for alerts and logs, never a label)."""

    job_id: str
    name: str
    status: str
    pid: int | None  # None: no pid, or one that is not a process id (a bad value)
    without_pid: bool  # the row's pid is NULL (an unreadable one is not "without")
    updated_at: datetime
    zombie: bool  # pid dead (only ever True with the same-host check on)
    stale: bool  # not updated for longer than the threshold

    @property
    def reason(self) -> StuckReason | None:
        """One reason per job, as the overview and the alerts count it: a dead pid first."""
        if self.zombie:
            return StuckReason.PID_DEAD
        return StuckReason.IDLE if self.stale else None


@dataclass(frozen=True)
class WorkspaceSnapshot:
    taken_at: datetime
    layout: str
    jobs_by_status: Counter[str]
    running_without_pid: int
    stale: int
    zombies: int | None  # None: the same-host pid check is off
    stuck: Counter[StuckReason]
    oldest_active_update: float | None
    bad_values: tuple[BadValue, ...] = field(default=())


@dataclass(frozen=True)
class RegistrySnapshot:
    taken_at: datetime
    layout: str
    jobs_by_status: Counter[str]
    orphans: int
    stuck: Counter[StuckReason]
    oldest_active_update: float | None
    bad_values: tuple[BadValue, ...] = field(default=())


@dataclass(frozen=True)
class Counts:
    taken_at: datetime
    sheets_by_status: Counter[str] | None  # None: the registry has no sheets
    bad_values: tuple[BadValue, ...] = field(default=())


@dataclass(frozen=True)
class Aggregates:
    taken_at: datetime
    failures: Counter[tuple[str, str]] | None  # (error category, exit reason) of failed sheets; None: registry
    attempts: Histogram | None  # attempt_count per sheet
    sheet_durations: Histogram | None  # None: no execution_duration_seconds before schema v3
    bad_values: tuple[BadValue, ...] = field(default=())


def _instant(raw: object, table: str, column: str, row_id: str, bad: list[BadValue]) -> datetime | None:
    try:
        return parse_instant(raw, UTC)
    except TimestampError:
        bad.append(BadValue(table, column, row_id, shown(raw)))
        return None


def _pid(raw: object, table: str, row_id: str, bad: list[BadValue]) -> int | None:
    if raw is None:
        return None
    if isinstance(raw, int) and not isinstance(raw, bool) and raw > 0:
        return raw
    bad.append(BadValue(table, "pid", row_id, shown(raw)))
    return None


def _dead(pid: int | None, settings: MetricsConfig) -> bool:
    return pid is not None and settings.marianne.same_host_pid_check and not pids.pid_alive(pid)


def running_jobs(
    conn: sqlite3.Connection, schema: Schema, now: datetime, settings: MetricsConfig, bad: list[BadValue]
) -> list[JudgedJob]:
    """Every running job with the zombie and stale rules applied (the stuck gauge and the alerts
    both come from here).  A workspace job's last update is ``updated_at``; a registry job's
    ``last_event_at``, else ``started_at``, else ``submitted_at``."""
    threshold = settings.stuck.running_after
    if isinstance(schema, RegistrySchema):
        sql = (
            f"SELECT job_id, job_id, pid, COALESCE(last_event_at, started_at, submitted_at) FROM {REGISTRY_TABLE} "
            f"WHERE status = '{RUNNING}'"
        )
        column = "last_event_at"
    else:
        sql = f"SELECT id, name, pid, updated_at FROM {JOBS} WHERE status = '{RUNNING}'"
        column = "updated_at"
    judged = []
    for job_id, name, raw_pid, raw_updated in conn.execute(sql):
        row_id = str(job_id)
        updated = _instant(raw_updated, JOBS, column, row_id, bad)
        if updated is None:
            if raw_updated is None:
                bad.append(BadValue(JOBS, column, row_id, shown(raw_updated)))
            continue
        pid = _pid(raw_pid, JOBS, row_id, bad)
        judged.append(
            JudgedJob(
                job_id=row_id,
                name=label_text(name) or row_id,
                status=RUNNING,
                pid=pid,
                without_pid=raw_pid is None,
                updated_at=updated,
                zombie=_dead(pid, settings),
                stale=now - updated > threshold,
            )
        )
    return judged


def _by_status(conn: sqlite3.Connection, table: str, bad: list[BadValue]) -> Counter[str]:
    found: Counter[str] = Counter()
    for status, n in conn.execute(f"SELECT status, COUNT(*) FROM {table} GROUP BY status"):
        label = label_text(status)
        if label is None:
            bad.append(BadValue(table, "status", "", shown(status), int(n)))
            continue
        found[label] += int(n)
    return found


def _oldest_active(conn: sqlite3.Connection, sql: str, table: str, column: str, bad: list[BadValue]) -> float | None:
    oldest: float | None = None
    for job_id, raw in conn.execute(sql):
        instant = _instant(raw, table, column, str(job_id), bad)
        if instant is not None and (oldest is None or instant.timestamp() < oldest):
            oldest = instant.timestamp()
    return oldest


def _active_list() -> str:
    return "(" + ", ".join(f"'{s}'" for s, phase in PHASES.phases.items() if phase in ACTIVE_PHASES) + ")"


def snapshot(
    conn: sqlite3.Connection, schema: Schema, now: datetime, settings: MetricsConfig
) -> WorkspaceSnapshot | RegistrySnapshot:
    bad: list[BadValue] = []
    jobs = running_jobs(conn, schema, now, settings, bad)
    stuck: Counter[StuckReason] = Counter(dict.fromkeys(STUCK_REASONS, 0))
    stuck.update(job.reason for job in jobs if job.reason is not None)
    if isinstance(schema, RegistrySchema):
        by_status = _by_status(conn, REGISTRY_TABLE, bad)
        orphans = sum(by_status[s] for s in ORPHAN_STATUSES)
        oldest = _oldest_active(
            conn,
            f"SELECT job_id, COALESCE(last_event_at, started_at, submitted_at) FROM {REGISTRY_TABLE} "
            f"WHERE status IN {_active_list()}",
            REGISTRY_TABLE,
            "last_event_at",
            [],  # the judgement above reports the running rows' bad times; others are not worth a second report
        )
        return RegistrySnapshot(now, schema.layout, by_status, orphans, stuck, oldest, tuple(bad))
    by_status = _by_status(conn, JOBS, bad)
    oldest = _oldest_active(
        conn, f"SELECT id, updated_at FROM {JOBS} WHERE status IN {_active_list()}", JOBS, "updated_at", []
    )
    return WorkspaceSnapshot(
        taken_at=now,
        layout=schema.layout,
        jobs_by_status=by_status,
        running_without_pid=sum(1 for job in jobs if job.without_pid),
        stale=sum(1 for job in jobs if job.stale),
        zombies=sum(1 for job in jobs if job.zombie) if settings.marianne.same_host_pid_check else None,
        stuck=stuck,
        oldest_active_update=oldest,
        bad_values=tuple(bad),
    )


def counts(conn: sqlite3.Connection, schema: Schema, now: datetime) -> Counts:
    if isinstance(schema, RegistrySchema):
        return Counts(now, None)
    bad: list[BadValue] = []
    return Counts(now, _by_status(conn, SHEETS, bad), tuple(bad))


def aggregates(conn: sqlite3.Connection, schema: Schema, now: datetime) -> Aggregates:
    if not isinstance(schema, WorkspaceSchema):
        return Aggregates(now, None, None, None)
    bad: list[BadValue] = []
    exit_reason = "exit_reason" if schema.has_exit_reason else "NULL"
    failures: Counter[tuple[str, str]] = Counter()
    for category, reason, n in conn.execute(
        f"SELECT error_category, {exit_reason}, COUNT(*) FROM {SHEETS} WHERE status = '{SHEET_FAILED}' GROUP BY 1, 2"
    ):
        labels = []
        for column, raw in (("error_category", category), ("exit_reason", reason)):
            label = NONE if raw is None else label_text(raw)
            if label is None:
                bad.append(BadValue(SHEETS, column, "", shown(raw), int(n)))
                break
            labels.append(label)
        else:
            failures[(labels[0], labels[1])] += int(n)
    attempts = Histogram(ATTEMPT_BUCKETS)
    for count, n in conn.execute(f"SELECT attempt_count, COUNT(*) FROM {SHEETS} GROUP BY 1"):
        if not isinstance(count, int) or count < 0:
            bad.append(BadValue(SHEETS, "attempt_count", "", shown(count), int(n)))
            continue
        for _ in range(int(n)):
            attempts.observe(float(count))
    return Aggregates(
        taken_at=now,
        failures=failures,
        attempts=attempts,
        sheet_durations=_sheet_durations(conn, bad) if schema.has_sheet_durations else None,
        bad_values=tuple(bad),
    )


def _sheet_durations(conn: sqlite3.Connection, bad: list[BadValue]) -> Histogram:
    durations = Histogram(SHEET_DURATION_BUCKETS)
    sql = f"SELECT job_id, execution_duration_seconds FROM {SHEETS} WHERE execution_duration_seconds IS NOT NULL"
    for job_id, seconds in conn.execute(sql):
        if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
            bad.append(BadValue(SHEETS, "execution_duration_seconds", str(job_id), shown(seconds)))
            continue
        durations.observe(float(seconds))
    return durations


# -- a conductor: its registry and the workspaces it lists -------------------------------------------

# What became of each workspace the registry lists, at the last snapshot (``marianne_workspaces``).
WORKSPACE_OK, WORKSPACE_MISSING, WORKSPACE_UNREADABLE, WORKSPACE_OVER_CAP = "ok", "missing", "unreadable", "over_cap"
WORKSPACE_STATES = (WORKSPACE_OK, WORKSPACE_MISSING, WORKSPACE_UNREADABLE, WORKSPACE_OVER_CAP)


@dataclass(frozen=True)
class ConductorSnapshot:
    """The registry's snapshot, and the workspace snapshots of the workspaces read, summed."""

    registry: RegistrySnapshot
    workspaces: WorkspaceSnapshot | None  # None: no workspace could be read
    health: Counter[str]  # workspaces listed, by state (every state present)
    read_errors: Counter[str]  # failed workspace reads since start, by reason (a Problem's value)

    @property
    def taken_at(self) -> datetime:
        return self.registry.taken_at

    @property
    def bad_values(self) -> tuple[BadValue, ...]:
        return self.registry.bad_values + (self.workspaces.bad_values if self.workspaces else ())


def summed_snapshots(parts: Sequence[WorkspaceSnapshot], now: datetime) -> WorkspaceSnapshot | None:
    if not parts:
        return None
    stuck: Counter[StuckReason] = Counter(dict.fromkeys(STUCK_REASONS, 0))
    jobs: Counter[str] = Counter()
    for part in parts:
        stuck.update(part.stuck)
        jobs.update(part.jobs_by_status)
    zombies = [part.zombies for part in parts]
    oldest = [part.oldest_active_update for part in parts if part.oldest_active_update is not None]
    return WorkspaceSnapshot(
        taken_at=now,
        layout=parts[0].layout,
        jobs_by_status=jobs,
        running_without_pid=sum(part.running_without_pid for part in parts),
        stale=sum(part.stale for part in parts),
        zombies=None if None in zombies else sum(z for z in zombies if z is not None),
        stuck=stuck,
        oldest_active_update=min(oldest, default=None),
        bad_values=tuple(bad for part in parts for bad in part.bad_values),
    )


def summed_counts(parts: Sequence[Counts], now: datetime) -> Counts:
    sheets = [part.sheets_by_status for part in parts if part.sheets_by_status is not None]
    total: Counter[str] = Counter()
    for found in sheets:
        total.update(found)
    return Counts(now, total if sheets else None, tuple(bad for part in parts for bad in part.bad_values))


def summed_aggregates(parts: Sequence[Aggregates], now: datetime) -> Aggregates:
    read = [part for part in parts if part.failures is not None]
    if not read:
        return Aggregates(now, None, None, None)
    failures: Counter[tuple[str, str]] = Counter()
    for part in read:
        failures.update(part.failures or {})
    durations = [part.sheet_durations for part in read if part.sheet_durations is not None]
    return Aggregates(
        taken_at=now,
        failures=failures,
        attempts=_merged(ATTEMPT_BUCKETS, (p.attempts for p in read if p.attempts is not None)),
        sheet_durations=_merged(SHEET_DURATION_BUCKETS, durations) if durations else None,
        bad_values=tuple(bad for part in parts for bad in part.bad_values),
    )


def _merged(bounds: tuple[float, ...], histograms: Iterable[Histogram]) -> Histogram:
    total = Histogram(bounds)
    for histogram in histograms:
        total.merge(histogram)
    return total
