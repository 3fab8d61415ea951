"""Which active runs count as stuck: shared by the metrics and the stuck-run alerts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo

from exporter.reader.workflows import ActiveRow, ActiveWorkflow, BadValue
from exporter.timeparse import TimestampError, parse_instant


@dataclass(frozen=True)
class StuckPolicy:
    """A running run is stuck when not updated for ``running_after`` (per-pipeline overrides win);
    a paused one when not updated for ``paused_after`` (``None``: paused runs are never stuck)."""

    running_after: timedelta
    per_pipeline: Mapping[str, timedelta] = field(default_factory=dict)
    paused_after: timedelta | None = None

    def threshold_for(self, pipeline: str, status: str) -> timedelta | None:
        if status == "running":
            return self.per_pipeline.get(pipeline, self.running_after)
        if status == "paused":
            return self.paused_after
        return None

    def threshold(self, run: ActiveWorkflow) -> timedelta | None:
        return self.threshold_for(run.pipeline, run.status)


def stuck_workflows(active: Iterable[ActiveWorkflow], now: datetime, policy: StuckPolicy) -> list[ActiveWorkflow]:
    """Top-level runs past their threshold.  Rows without a parseable update time are not judged."""
    stuck = []
    for run in active:
        threshold = policy.threshold(run)
        if run.is_background or threshold is None or run.updated_at is None:
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


def summarize_active(
    rows: Iterable[ActiveRow], now: datetime, naive_tz: tzinfo, policy: StuckPolicy, bad: list[BadValue]
) -> ActiveSummary:
    """Counts, stuck counts and oldest update per group, computed once per refresh so that a scrape
    costs O(pipelines) however many crashed runs the DB holds."""
    summary: ActiveSummary = {}
    for run_id, pipeline, status, updated_raw, is_background in rows:
        group = summary.setdefault((pipeline, status, bool(is_background)), ActiveGroup())
        group.count += 1
        try:
            updated = parse_instant(updated_raw, naive_tz)
        except TimestampError:
            bad.append(BadValue("workflow_state", "updated_at", run_id, str(updated_raw)))
            continue
        if updated is None:
            continue
        ts = updated.timestamp()
        if group.oldest_update is None or ts < group.oldest_update:
            group.oldest_update = ts
        threshold = policy.threshold_for(pipeline, status)
        if not is_background and threshold is not None and now - updated > threshold:
            group.stuck += 1
    return summary
