"""Time out background tasks that stopped updating: flujo 0.6.11's ``cleanup_stale_background_tasks``.

A background task (``is_background_task`` set) with status ``running`` whose ``updated_at`` instant is
more than ``stale_hours`` before now becomes ``failed`` with ``background_error`` set to flujo's text
and ``updated_at`` = now (aware UTC ISO, what 0.6 writes).  flujo compares the stored text with a local
naive string; here instants are compared.  Candidates come through the status index (running rows
are few).  On layouts without background tasks the job reports "not supported by this DB layout"
once (metric ``state_exporter_job_supported{job="stale_background_tasks"} 0`` and one log line).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta, tzinfo

from exporter.clock import Clock
from exporter.engines.flujo.jobs import core
from exporter.engines.flujo.jobs.config import StaleTasksConfig
from exporter.engines.flujo.layout import ENGINE_NAME, Capability, Layout, Schema, flujo_schema
from exporter.jobs.db import JobTarget, schema_of, write_transaction
from exporter.jobs.metrics import JobMetrics

log = logging.getLogger(__name__)

JOB = "stale_background_tasks"
BATCH = 500


class StaleTasksJob:
    def __init__(
        self, config: StaleTasksConfig, target: JobTarget, writer_tz: tzinfo, clock: Clock, metrics: JobMetrics
    ) -> None:
        self.config = config
        self.target = target
        self.writer_tz = writer_tz
        self.clock = clock
        self.metrics = metrics
        self.last_changed: list[str] = []
        self._unsupported_logged: Layout | None = None

    async def __call__(self) -> None:
        now = self.clock()
        cutoff = now - timedelta(hours=self.config.stale_hours)
        schema, stale = await asyncio.to_thread(self._find, cutoff)
        if not schema.supports(Capability.BACKGROUND_TASKS):
            self._unsupported(schema)
            return
        self._unsupported_logged = None
        self.metrics.set_supported(JOB, True)
        changed: list[str] = []
        try:
            for start in range(0, len(stale), BATCH):
                done = await asyncio.to_thread(self._fail, schema, stale[start : start + BATCH], now)
                changed += done
                self.metrics.stale_failed(len(done))
        finally:
            self.last_changed = changed
        for run_id in changed:
            log.info(
                "stale_background_tasks: background task %s timed out (no update for %gh), set to failed",
                run_id,
                self.config.stale_hours,
            )

    def _unsupported(self, schema: Schema) -> None:
        self.metrics.set_supported(JOB, False)
        if self._unsupported_logged != schema.layout:
            self._unsupported_logged = schema.layout
            log.info(
                "stale_background_tasks: not supported by this DB layout (%s has no background tasks); "
                "the job does nothing until the DB is upgraded",
                schema.layout.value,
            )

    def _find(self, cutoff: datetime) -> tuple[Schema, list[core.Candidate]]:
        with self.target.connect(JOB, write=False) as conn:
            schema = flujo_schema(schema_of(conn, self.target, ENGINE_NAME))
            if not schema.supports(Capability.BACKGROUND_TASKS):
                return schema, []
            dialect = schema.dialect
            # Postgres narrows by the instant in SQL (a typed column holds no bad values to report);
            # SQLite reads every running task, so that a value that is not a timestamp is counted.
            bound = None if dialect.has_rowid else cutoff
            stale = core.stale_tasks(
                conn, cutoff=cutoff, tz=self.writer_tz, on_bad=_log_bad, bound=bound, dialect=dialect
            )
        return schema, stale

    def _fail(self, schema: Schema, rows: list[core.Candidate], now: datetime) -> list[str]:
        dialect = schema.dialect
        with self.target.connect(JOB, write=True) as conn, write_transaction(conn):
            return core.fail_stale_rows(conn, rows, self.config.error_message, dialect.timestamp(now), dialect)


def _log_bad(run_id: object, column: str, value: object) -> None:
    log.warning("stale_background_tasks: skipping run_id=%r: %s %r is not a timestamp", run_id, column, value)
