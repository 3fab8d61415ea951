"""Which active runs count as stuck: one rule, one setting (``metrics.stuck``), shared by the
``flujo_workflows_stuck`` / ``workflow_runs_stuck`` metrics and the stuck-run alerts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from exporter.engines.flujo.layout import flujo_schema
from exporter.engines.flujo.statuses import PAUSED, PHASES, RUNNING
from exporter.engines.flujo.workflows import ActiveWorkflow, active_workflows
from exporter.model import StuckReason, StuckRun

if TYPE_CHECKING:
    from exporter.config import MetricsConfig
    from exporter.engines.flujo.active_cache import ParsedRow
    from exporter.reader import ReadSession

# Flujo's stuck rule is one: no update for longer than the status's threshold.
STUCK_REASONS = {RUNNING: StuckReason.IDLE, PAUSED: StuckReason.PAUSED_TOO_LONG}


@dataclass(frozen=True)
class StuckPolicy:
    """A running run is stuck when not updated for ``running_after`` (per-pipeline overrides win);
    a paused one when not updated for ``paused_after`` (``None``: paused runs are never stuck)."""

    running_after: timedelta
    per_pipeline: Mapping[str, timedelta] = field(default_factory=dict)
    paused_after: timedelta | None = None

    def threshold_for(self, pipeline: str, status: str) -> timedelta | None:
        if status == RUNNING:
            return self.per_pipeline.get(pipeline, self.running_after)
        if status == PAUSED:
            return self.paused_after
        return None

    def threshold(self, run: ActiveWorkflow) -> timedelta | None:
        return self.threshold_for(run.pipeline, run.status)


def stuck_workflows(active: Iterable[ActiveWorkflow], now: datetime, policy: StuckPolicy) -> list[ActiveWorkflow]:
    """Top-level runs past their threshold.  Rows without a parseable update time, or with one in the
    future (it cannot be real, and would give a negative age), are not judged."""
    stuck = []
    for run in active:
        threshold = policy.threshold(run)
        if run.is_background or threshold is None or run.updated_at is None or run.updated_at > now:
            continue
        if now - run.updated_at > threshold:
            stuck.append(run)
    return stuck


@dataclass
class ActiveGroup:
    count: int = 0
    stuck: int = 0
    oldest_update: float | None = None  # Unix time of the longest-idle row


# (pipeline, status, is_background) -> group
ActiveSummary = dict[tuple[str, str, bool], ActiveGroup]


def summarize_active(rows: Iterable[ParsedRow], now: datetime, policy: StuckPolicy) -> ActiveSummary:
    """Counts, stuck counts and oldest update per group, computed once per refresh so that a scrape
    costs O(pipelines) however many crashed runs the DB holds.  An update time in the future (the
    reader reports those as bad values) is neither judged nor the oldest."""
    summary: ActiveSummary = {}
    now_ts = now.timestamp()
    limits: dict[tuple[str, str], float | None] = {}
    for pipeline, status, updated, is_background in rows:
        group = summary.get((pipeline, status, is_background))
        if group is None:
            group = summary[(pipeline, status, is_background)] = ActiveGroup()
        group.count += 1
        if updated is None or updated > now_ts:
            continue
        if group.oldest_update is None or updated < group.oldest_update:
            group.oldest_update = updated
        if is_background:
            continue
        key = (pipeline, status)
        if key not in limits:
            threshold = policy.threshold_for(pipeline, status)
            limits[key] = None if threshold is None else now_ts - threshold.total_seconds()
        limit = limits[key]
        if limit is not None and updated < limit:
            group.stuck += 1
    return summary


def stuck_policy(settings: MetricsConfig) -> StuckPolicy:
    stuck = settings.stuck
    return StuckPolicy(stuck.running_after, stuck.per_pipeline, stuck.paused_after)


def stuck_runs(session: ReadSession, now: datetime, settings: MetricsConfig) -> list[StuckRun]:
    """The stuck top-level runs of a Flujo file, judged exactly as the metrics judge them."""
    policy = stuck_policy(settings)
    active = active_workflows(session.db, flujo_schema(session.schema), session.naive_tz, [])
    found = []
    for run in stuck_workflows(active, now, policy):
        threshold = policy.threshold(run)
        # stuck_workflows only returns runs with an update time and a threshold.
        assert threshold is not None and run.updated_at is not None
        found.append(
            StuckRun(
                run_id=run.run_id,
                group=run.pipeline,
                status=run.status,
                phase=PHASES.phases[run.status],
                reason=STUCK_REASONS[run.status],
                updated_at=run.updated_at,
                threshold=threshold,
            )
        )
    return found
