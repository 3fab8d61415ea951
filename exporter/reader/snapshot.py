"""A point-in-time picture of a Flujo DB, computed in one short read transaction.

Two tiers, so that a scrape stays cheap at any DB size:

* the *fast* tier runs every refresh and only uses index-bound queries;
* the *aggregate* tier (per-pipeline breakdowns, span totals by status, flujo's AVG) scans whole
  tables; the daemon refreshes it on its own, slower schedule and says so in the metric HELP.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo

from exporter.reader import runs, spans, workflows
from exporter.reader.layout import Capability, Schema
from exporter.reader.workflows import ActiveWorkflow, BadValue, WindowCounts

DAY = timedelta(hours=24)


@dataclass(frozen=True)
class FastStats:
    taken_at: datetime
    workflows_by_status: Counter[str]  # top-level only
    background_by_status: Counter[str] | None  # None: the layout has no background tasks
    created_24h: WindowCounts
    failed_24h: WindowCounts
    active: tuple[ActiveWorkflow, ...]
    runs_by_status: Counter[str] | None  # None: no runs table
    spans_total: int | None  # None: no spans table
    bad_values: tuple[BadValue, ...] = field(default=())


@dataclass(frozen=True)
class AggregateStats:
    taken_at: datetime
    workflows_by_pipeline_status: Counter[tuple[str, str]]
    runs_by_pipeline_status: Counter[tuple[str, str]] | None
    spans: spans.SpanTotals | None
    average_execution_time_ms: float


def fast_stats(conn: sqlite3.Connection, schema: Schema, now: datetime, naive_tz: tzinfo) -> FastStats:
    bad: list[BadValue] = []
    top, background = workflows.status_counts(conn, schema)
    since = now - DAY
    return FastStats(
        taken_at=now,
        workflows_by_status=top,
        background_by_status=background,
        created_24h=workflows.created_since(conn, schema, since, naive_tz, bad),
        failed_24h=workflows.failed_since(conn, schema, since, naive_tz, bad),
        active=tuple(workflows.active_workflows(conn, schema, naive_tz, bad)),
        runs_by_status=runs.status_counts(conn) if schema.supports(Capability.RUNS) else None,
        spans_total=spans.total(conn) if schema.supports(Capability.SPANS) else None,
        bad_values=tuple(bad),
    )


def aggregate_stats(conn: sqlite3.Connection, schema: Schema, now: datetime) -> AggregateStats:
    has_runs = schema.supports(Capability.RUNS)
    return AggregateStats(
        taken_at=now,
        workflows_by_pipeline_status=workflows.pipeline_status_counts(conn, schema),
        runs_by_pipeline_status=runs.pipeline_status_counts(conn) if has_runs else None,
        spans=spans.totals(conn) if schema.supports(Capability.SPANS) else None,
        average_execution_time_ms=workflows.average_execution_time_ms(conn, schema),
    )
