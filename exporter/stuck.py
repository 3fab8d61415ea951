"""Which active runs count as stuck: shared by the metrics and the stuck-run alerts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from exporter.reader.workflows import ActiveWorkflow


@dataclass(frozen=True)
class StuckPolicy:
    """A running run is stuck when not updated for ``running_after`` (per-pipeline overrides win);
    a paused one when not updated for ``paused_after`` (``None``: paused runs are never stuck)."""

    running_after: timedelta
    per_pipeline: Mapping[str, timedelta] = field(default_factory=dict)
    paused_after: timedelta | None = None

    def threshold(self, run: ActiveWorkflow) -> timedelta | None:
        if run.status == "running":
            return self.per_pipeline.get(run.pipeline, self.running_after)
        if run.status == "paused":
            return self.paused_after
        return None


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
