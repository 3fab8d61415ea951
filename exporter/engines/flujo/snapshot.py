"""A point-in-time picture of a Flujo DB, each tier computed in one short read transaction.

Three tiers, so that a refresh costs little at any DB size:

* *fast* (every refresh): the active (running/paused) rows behind stuck-run detection and the
  created-in-24h window — both bounded by an index to the rows that matter;
* *counts* (every ``metrics.counts_interval``): status counts and windows that walk a whole index
  (the status index of a 1M-row table is ~40 ms to count);
* *aggregate* (every ``metrics.aggregate_interval``): per-pipeline breakdowns, span totals by
  status and flujo's AVG, which scan whole tables.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo

from exporter.engines.flujo import runs, spans, workflows
from exporter.engines.flujo.active_cache import ActiveRowCache
from exporter.engines.flujo.groups import value_counts
from exporter.engines.flujo.layout import Capability, Schema
from exporter.engines.flujo.stuck import ActiveSummary, StuckPolicy, summarize_active
from exporter.engines.flujo.workflows import WindowCounts
from exporter.reader.badvalues import BadValue
from exporter.reader.sql import Connection

DAY = timedelta(hours=24)


@dataclass(frozen=True)
class FastStats:
    taken_at: datetime
    created_24h: WindowCounts
    active: ActiveSummary
    bad_values: tuple[BadValue, ...] = field(default=())


@dataclass(frozen=True)
class CountStats:
    taken_at: datetime
    workflows_by_status: Counter[str]  # top-level only
    background_by_status: Counter[str] | None  # None: the layout has no background tasks
    failed_24h: WindowCounts
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
    bad_values: tuple[BadValue, ...] = field(default=())


def fast_stats(
    conn: Connection,
    schema: Schema,
    now: datetime,
    naive_tz: tzinfo,
    policy: StuckPolicy,
    cache: ActiveRowCache | None = None,
) -> FastStats:
    bad: list[BadValue] = []
    active = summarize_active((cache or ActiveRowCache()).rows(conn, schema, naive_tz, now, bad), now, policy)
    created = workflows.created_since(conn, schema, now - DAY, now, naive_tz, bad)
    return FastStats(taken_at=now, created_24h=created, active=active, bad_values=tuple(bad))


def count_stats(conn: Connection, schema: Schema, now: datetime, naive_tz: tzinfo) -> CountStats:
    bad: list[BadValue] = []
    top, background = workflows.status_counts(conn, schema, bad)
    failed = workflows.failed_since(conn, schema, now - DAY, now, naive_tz, bad)
    runs_by_status = None
    if schema.supports(Capability.RUNS):
        runs_by_status = value_counts(conn, "runs", "status", bad)
    return CountStats(
        taken_at=now,
        workflows_by_status=top,
        background_by_status=background,
        failed_24h=failed,
        runs_by_status=runs_by_status,
        spans_total=spans.total(conn) if schema.supports(Capability.SPANS) else None,
        bad_values=tuple(bad),
    )


def aggregate_stats(conn: Connection, schema: Schema, now: datetime) -> AggregateStats:
    bad: list[BadValue] = []
    by_pipeline = workflows.pipeline_status_counts(conn, schema, bad)
    runs_by_pipeline = runs.pipeline_status_counts(conn, bad) if schema.supports(Capability.RUNS) else None
    return AggregateStats(
        taken_at=now,
        workflows_by_pipeline_status=by_pipeline,
        runs_by_pipeline_status=runs_by_pipeline,
        spans=spans.totals(conn, bad) if schema.supports(Capability.SPANS) else None,
        average_execution_time_ms=workflows.average_execution_time_ms(conn, schema),
        bad_values=tuple(bad),
    )
