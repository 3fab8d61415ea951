"""Flujo's refresh tiers over one file, and what they mean in canonical terms."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import TYPE_CHECKING

from exporter.engines.base import FollowsCursor
from exporter.engines.flujo.active_cache import ActiveRowCache
from exporter.engines.flujo.layout import ENGINE_NAME, Capability, flujo_schema
from exporter.engines.flujo.snapshot import (
    AggregateStats,
    CountStats,
    FastStats,
    aggregate_stats,
    count_stats,
    fast_stats,
)
from exporter.engines.flujo.statuses import PHASES
from exporter.engines.flujo.stuck import STUCK_REASONS, stuck_policy
from exporter.engines.flujo.tracking import FinishTracker
from exporter.model import Histogram, Overview, StuckReason

if TYPE_CHECKING:
    from exporter.config import MetricsConfig
    from exporter.engines.base import Tier
    from exporter.reader import ReadSession


class FlujoStats(FollowsCursor):
    _tracker: FinishTracker

    def __init__(self, settings: MetricsConfig) -> None:
        self._active = ActiveRowCache()
        # 0.4.32 has no runs table: no run can be seen finishing, so the overview has no finished
        # families rather than zeros that would claim nothing finishes.
        self._sees_finished_runs = False
        self._tracker = FinishTracker(
            max_pipelines=settings.max_pipelines,
            max_steps=settings.max_steps,
            duration_window=settings.run_duration_window,
        )

    def snapshot(self, session: ReadSession, now: datetime, settings: MetricsConfig) -> FastStats:
        schema = flujo_schema(session.schema)
        self._sees_finished_runs = schema.supports(Capability.RUNS)
        return fast_stats(session.db, schema, now, session.naive_tz, stuck_policy(settings), self._active)

    def counts(self, session: ReadSession, now: datetime, settings: MetricsConfig) -> CountStats:
        return count_stats(session.db, flujo_schema(session.schema), now, session.naive_tz)

    def aggregates(self, session: ReadSession, now: datetime, settings: MetricsConfig) -> AggregateStats:
        return aggregate_stats(session.db, flujo_schema(session.schema), now)

    def follow_finished(self, session: ReadSession, now: datetime) -> bool:
        return self._tracker.update(session.db, flujo_schema(session.schema), now)

    def restarted(self) -> FlujoStats:
        self._active = ActiveRowCache()  # its rowids belong to the old file
        self._tracker = self._tracker.restarted()
        return self

    def overview(self, snapshot: Tier | None, counts: Tier | None, settings: MetricsConfig) -> Overview:
        stuck: Counter[StuckReason] | None = None
        oldest: float | None = None
        if isinstance(snapshot, FastStats):
            stuck = Counter(dict.fromkeys(STUCK_REASONS.values(), 0))
            for (_pipeline, status, background), group in snapshot.active.items():
                if background:
                    continue
                reason = STUCK_REASONS.get(status)
                if reason is not None:
                    stuck[reason] += group.stuck
                if group.oldest_update is not None and (oldest is None or group.oldest_update < oldest):
                    oldest = group.oldest_update
        runs = PHASES.fold(counts.workflows_by_status.items()) if isinstance(counts, CountStats) else None
        finished = self._tracker.totals()
        if not finished.seeded or not self._sees_finished_runs:
            return Overview(engine=ENGINE_NAME, runs=runs, stuck=stuck, oldest_active_update=oldest)
        durations = Histogram.merged(finished.run_durations.values())
        return Overview(
            engine=ENGINE_NAME,
            runs=runs,
            stuck=stuck,
            oldest_active_update=oldest,
            finished=PHASES.fold((status, n) for (_pipeline, status), n in finished.runs.items()),
            durations=durations,
        )
