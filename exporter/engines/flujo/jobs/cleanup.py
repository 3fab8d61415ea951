"""Cleanup of old workflows: flujo's ``cleanup_old_workflows(days_old)``, time-correct and in small pieces.

Phase 1 deletes ``workflow_state`` rows whose ``created_at`` instant (naive values read in the writer's
zone) is more than ``days_old`` days before now; flujo compares strings and keeps the threshold's
whole calendar day.  Phase 2 (``delete_runs``) deletes, like flujo's ``delete_run``, a run with its
steps, spans, trace and evaluations once it has no ``workflow_state`` row left and started more than
``runs_retention_days`` ago.

Both phases walk an index in pages (keyset on ``(column, rowid)``), compare parsed instants in
Python, and delete one page per ``BEGIN IMMEDIATE`` transaction (a few set-based statements, no
per-row round trips while the lock is held), then checkpoint passively and pause.  The delete
re-checks the row (same rowid and created_at; for runs: still no workflow_state row), so a row the
application re-saved in between is kept.  A run whose spans the span exporter has not exported yet
(``exported`` callable) is not touched at all, neither its workflow_state row nor its run rows.

On Postgres (the schema's dialect) the same code pages by primary key (run_id) instead of rowid,
re-checks ``updated_at`` (flujo's upsert keeps ``created_at``), runs each page in a plain ``BEGIN``
... ``COMMIT`` under the session's ``lock_timeout``/``statement_timeout``, and skips rows the
application holds locked.  The child rows are deleted explicitly, as on SQLite, for their counts;
the ``ON DELETE CASCADE`` of flujo's foreign keys still catches a span or step inserted meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from functools import partial

from exporter.clock import Clock
from exporter.engines.flujo.dialect import Dialect
from exporter.engines.flujo.jobs import core
from exporter.engines.flujo.jobs.config import CleanupConfig
from exporter.engines.flujo.layout import ENGINE_NAME, Schema, flujo_schema
from exporter.jobs.db import (
    Cursor,
    JobConn,
    JobConnection,
    JobTarget,
    keyset_page,
    next_cursor,
    placeholders,
    schema_of,
    write_transaction,
)
from exporter.jobs.metrics import JobMetrics
from exporter.jobs.scheduler import JobError, Sleep
from exporter.timeparse import instant_before

log = logging.getLogger(__name__)

JOB = "cleanup"
TABLES = ("workflow_state", "runs", "steps", "spans", "traces", "evaluations")
RUN_CHILD_TABLES = core.RUN_CHILD_TABLES
ExportedFn = Callable[[Iterable[str]], set[str]]
_BAD_LOGGED = 5
MAX_REPORTED_IDS = 10_000  # run ids kept in CleanupReport (the counts are always complete)


@dataclass
class CleanupReport:
    """What one run deleted (or, in a dry run, would delete)."""

    dry_run: bool
    rows: Counter[str] = field(default_factory=Counter)  # table -> rows
    workflow_run_ids: list[str] = field(default_factory=list)  # workflow_state rows deleted (first 10 000)
    run_ids: list[str] = field(default_factory=list)  # runs deleted with their child rows (first 10 000)
    kept_unexported: set[str] = field(default_factory=set)
    bad_values: int = 0
    transactions: int = 0


@dataclass(frozen=True)
class _Page:
    scanned: int
    cursor: Cursor | None
    candidates: list[core.Candidate]  # (rowid or key, run_id, stored value re-checked on delete)
    with_spans: set[str]


class CleanupJob:
    def __init__(
        self,
        config: CleanupConfig,
        target: JobTarget,
        writer_tz: tzinfo,
        clock: Clock,
        metrics: JobMetrics,
        *,
        sleep: Sleep = asyncio.sleep,
        exported: ExportedFn | None = None,
    ) -> None:
        self.config = config
        self.target = target
        self.writer_tz = writer_tz
        self.clock = clock
        self.metrics = metrics
        self.sleep = sleep
        self.exported = exported
        self.last_report: CleanupReport | None = None
        self._size = config.batch_size

    async def __call__(self) -> None:
        cfg = self.config
        report = CleanupReport(dry_run=cfg.dry_run)
        workflow_cutoff = instant_before(self.clock(), cfg.days_old * 86400)
        runs_cutoff = instant_before(self.clock(), (cfg.runs_retention_days or cfg.days_old) * 86400)
        db = JobConnection(self.target, JOB, write=not cfg.dry_run)
        try:
            schema = await db.call(lambda conn: flujo_schema(schema_of(conn, self.target, ENGINE_NAME)))
            if workflow_cutoff is not None:
                await self._workflows(db, schema, workflow_cutoff, report)
                if cfg.delete_runs and runs_cutoff is not None and schema.has("runs", "run_id"):
                    await self._runs(db, schema, workflow_cutoff, runs_cutoff, report)
        finally:
            self.last_report = report
            self.metrics.cleanup_finished(report)
            await db.close()
        self._log_summary(report)

    async def _pause(self) -> None:
        await self.sleep(self.config.pause_between_batches.total_seconds())

    # -- phase 1: workflow_state ------------------------------------------------------------------

    async def _workflows(self, db: JobConnection, schema: Schema, cutoff: datetime, report: CleanupReport) -> None:
        dialect = schema.dialect
        bound = dialect.upper_bound(cutoff)
        has_spans = schema.has("spans", "run_id")
        cursor: Cursor | None = None
        while True:
            limit = self._size
            page = await db.call(partial(self._workflow_page, dialect, bound, cursor, limit, cutoff, has_spans, report))
            cursor = page.cursor
            rows = await self._gate(page.candidates, page.with_spans, report)
            if rows:
                if self.config.dry_run:
                    ids = [run_id for _, run_id, _ in rows]
                    _remember(report.workflow_run_ids, ids)
                    report.rows["workflow_state"] += len(ids)
                    log.info(
                        "cleanup dry run: would delete workflow_state rows of %d runs: %s", len(ids), ", ".join(ids)
                    )
                else:
                    deleted, held = await db.call(partial(self._delete_workflows, db, dialect, rows))
                    report.transactions += 1
                    _remember(report.workflow_run_ids, deleted)
                    report.rows["workflow_state"] += len(deleted)
                    self.metrics.cleanup_deleted({"workflow_state": len(deleted)})
                    self._adapt(held)
                    await self._pause()
            if page.scanned < limit:
                return

    def _workflow_page(
        self,
        dialect: Dialect,
        bound: object,
        cursor: Cursor | None,
        limit: int,
        cutoff: datetime,
        has_spans: bool,
        report: CleanupReport,
        conn: JobConn,
    ) -> _Page:
        found = core.old_workflows_page(
            conn,
            cutoff=cutoff,
            bound=bound,
            after=cursor,
            limit=limit,
            tz=self.writer_tz,
            on_bad=lambda run_id, column, value: self._bad("workflow_state", column, run_id, value, report),
            dialect=dialect,
        )
        with_spans = _with_spans(conn, [c[1] for c in found.old]) if has_spans else set()
        return _Page(found.scanned, found.cursor, found.old, with_spans)

    @staticmethod
    def _delete_workflows(
        db: JobConnection, dialect: Dialect, rows: Sequence[core.Candidate], conn: JobConn
    ) -> tuple[list[str], float]:
        """Delete the rows still as read (:func:`.core.delete_workflow_rows`) in one short transaction."""
        with write_transaction(conn) as held:
            deleted = core.delete_workflow_rows(conn, rows, dialect)
        db.checkpoint(conn)
        return deleted, held[0]

    # -- phase 2: runs and their child rows -----------------------------------------------------------

    async def _runs(
        self, db: JobConnection, schema: Schema, workflow_cutoff: datetime, cutoff: datetime, report: CleanupReport
    ) -> None:
        # Paged through the index of the first start column; an empty value falls through to the
        # next one in Python, in the order of Schema.run_start_sql.
        column, *rest = schema.run_start_columns
        fallback = f"r.{rest[0]}" if rest else "NULL"
        dialect = schema.dialect
        key = dialect.key("runs", "r")
        select = f"{key}, r.{column}, r.run_id, {fallback}, ws.run_id IS NOT NULL, ws.created_at"
        children = [t for t in RUN_CHILD_TABLES if schema.has(t, "run_id")]
        has_spans = "spans" in children
        bound = dialect.upper_bound(cutoff)
        cursor: Cursor | None = None
        while True:
            limit = self._size

            def page(conn: JobConn, after: Cursor | None = cursor, limit: int = limit) -> _Page:
                rows = keyset_page(
                    conn,
                    select=select,
                    source="runs r LEFT JOIN workflow_state ws ON ws.run_id = r.run_id",
                    column=f"r.{column}",
                    rowid=key,
                    bound=bound,
                    after=after,
                    limit=limit,
                )
                candidates = self._run_candidates(rows, workflow_cutoff, cutoff, report)
                with_spans = _with_spans(conn, [c[1] for c in candidates]) if has_spans else set()
                return _Page(len(rows), next_cursor(rows), candidates, with_spans)

            found = await db.call(page)
            cursor = found.cursor
            ids = [run_id for _, run_id, _ in await self._gate(found.candidates, found.with_spans, report)]
            if ids:
                if self.config.dry_run:
                    counts = await db.call(partial(self._count_runs, ids, children))
                    _remember(report.run_ids, ids)
                    report.rows.update(counts)
                    log.info(
                        "cleanup dry run: would delete %d runs with their child rows: %s", len(ids), ", ".join(ids)
                    )
                else:
                    deleted, counts, held = await db.call(partial(self._delete_runs, db, ids, children))
                    report.transactions += 1
                    _remember(report.run_ids, deleted)
                    report.rows.update(counts)
                    self.metrics.cleanup_deleted(counts)
                    self._adapt(held)
                    await self._pause()
            if found.scanned < limit:
                return

    def _run_candidates(
        self, rows: Sequence[tuple[object, ...]], workflow_cutoff: datetime, cutoff: datetime, report: CleanupReport
    ) -> list[core.Candidate]:
        candidates: list[core.Candidate] = []
        for rowid, start, run_id, fallback, has_workflow, workflow_created in rows:
            # The first non-blank start column is the start (Schema.run_start_sql); it must parse.
            blank = start is None or (isinstance(start, str) and not start.strip())
            instant = core.stored_instant(fallback if blank else start, UTC)
            if instant is None:
                self._bad("runs", "start_time", run_id, start, report)
                continue
            if instant >= cutoff:
                continue
            if has_workflow:
                # Really deleted in phase 1 unless kept; a dry run pretends phase 1 happened.
                if not self.config.dry_run or str(run_id) in report.kept_unexported:
                    continue
                created = self._parse(workflow_created, self.writer_tz, "workflow_state", "created_at", run_id, report)
                if created is None or created >= workflow_cutoff:
                    continue
            candidates.append((core.row_key(rowid), str(run_id), start))
        return candidates

    @staticmethod
    def _delete_runs(
        db: JobConnection, ids: list[str], children: list[str], conn: JobConn
    ) -> tuple[list[str], Counter[str], float]:
        # No FOR UPDATE SKIP LOCKED here, unlike workflow_state: on Postgres it needs UPDATE on runs,
        # which the write role has no other use for; runs past their retention with no state row
        # left are not written by the application, and lock_timeout bounds the rare wait.
        counts: Counter[str] = Counter()
        with write_transaction(conn) as held:
            confirmed = [
                row[0]
                for row in conn.execute(
                    f"SELECT run_id FROM runs WHERE run_id IN ({placeholders(len(ids))})"
                    " AND NOT EXISTS (SELECT 1 FROM workflow_state w WHERE w.run_id = runs.run_id)",
                    ids,
                )
            ]
            if confirmed:
                marks = placeholders(len(confirmed))
                for table in [*children, "runs"]:
                    counts[table] += conn.execute(f"DELETE FROM {table} WHERE run_id IN ({marks})", confirmed).rowcount
        db.checkpoint(conn)
        return confirmed, counts, held[0]

    @staticmethod
    def _count_runs(ids: list[str], children: list[str], conn: JobConn) -> Counter[str]:
        counts: Counter[str] = Counter({"runs": len(ids)})
        marks = placeholders(len(ids))
        for table in children:
            counts[table] += conn.execute(f"SELECT COUNT(*) FROM {table} WHERE run_id IN ({marks})", ids).fetchone()[0]
        return counts

    # -- shared -------------------------------------------------------------------------------------

    async def _gate(
        self, rows: list[core.Candidate], with_spans: set[str], report: CleanupReport
    ) -> list[core.Candidate]:
        """Drop runs whose spans the span exporter has not exported yet (runs without spans pass).
        The span exporter's answer may need I/O: it is asked from a worker thread."""
        if self.exported is None or not with_spans:
            return rows
        try:
            done = await asyncio.to_thread(self.exported, sorted(with_spans))
        except Exception as exc:
            raise JobError(f"cannot ask the span exporter which runs are exported: {exc}") from exc
        kept = with_spans - set(done)
        if not kept:
            return rows
        report.kept_unexported |= kept
        return [row for row in rows if row[1] not in kept]

    def _adapt(self, held: float) -> None:
        """Halve the batch after a transaction held the lock too long; grow it back when well under."""
        target = self.config.max_transaction.total_seconds()
        if held > target and self._size > 1:
            self._size = max(1, self._size // 2)
        elif held < target / 4 and self._size < self.config.batch_size:
            self._size = min(self.config.batch_size, self._size * 2)

    def _parse(
        self, value: object, tz: tzinfo, table: str, column: str, run_id: object, report: CleanupReport
    ) -> datetime | None:
        instant = core.stored_instant(value, tz)
        if instant is None:
            self._bad(table, column, run_id, value, report)
        return instant

    @staticmethod
    def _bad(table: str, column: str, run_id: object, value: object, report: CleanupReport) -> None:
        report.bad_values += 1
        if report.bad_values <= _BAD_LOGGED:
            log.warning("cleanup: skipping %s.%s of run_id=%r: not a timestamp (%r)", table, column, run_id, value)

    def _log_summary(self, report: CleanupReport) -> None:
        tables = ", ".join(f"{report.rows[t]} {t}" for t in TABLES if report.rows[t]) or "nothing"
        kept = (
            f"; kept {len(report.kept_unexported)} runs whose spans are not exported yet"
            if report.kept_unexported
            else ""
        )
        if report.dry_run:
            log.info("cleanup dry run: would delete %s%s", tables, kept)
        else:
            log.info("cleanup: deleted %s in %d transactions%s", tables, report.transactions, kept)


def _remember(kept: list[str], ids: list[str]) -> None:
    kept += ids[: max(MAX_REPORTED_IDS - len(kept), 0)]


def _with_spans(conn: JobConn, run_ids: list[str]) -> set[str]:
    """Which of ``run_ids`` have at least one span row (only those need the span exporter's word)."""
    if not run_ids:
        return set()
    sql = f"SELECT DISTINCT run_id FROM spans WHERE run_id IN ({placeholders(len(run_ids))})"
    return {row[0] for row in conn.execute(sql, run_ids)}
