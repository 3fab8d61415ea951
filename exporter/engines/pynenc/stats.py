"""pynenc's refresh tiers over one file, and what they mean in canonical terms."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import TYPE_CHECKING

from exporter.engines.base import FollowsCursor
from exporter.engines.pynenc.layout import ENGINE_NAME, pynenc_schema
from exporter.engines.pynenc.snapshot import STUCK_REASONS, Aggregates, Counts, Snapshot, counts, snapshot
from exporter.engines.pynenc.statuses import PHASES
from exporter.engines.pynenc.tracking import FinishTracker
from exporter.model import Histogram, Overview, StuckReason

if TYPE_CHECKING:
    from exporter.config import MetricsConfig
    from exporter.engines.base import Tier
    from exporter.reader import ReadSession


class PynencStats(FollowsCursor):
    _tracker: FinishTracker

    def __init__(self, settings: MetricsConfig) -> None:
        self._tracker = FinishTracker(
            max_tasks=settings.max_pipelines,
            max_errors=settings.max_statuses,
            duration_window=settings.run_duration_window,
        )

    def snapshot(self, session: ReadSession, now: datetime, settings: MetricsConfig) -> Snapshot:
        return snapshot(session.conn, pynenc_schema(session.schema), now)

    def counts(self, session: ReadSession, now: datetime, settings: MetricsConfig) -> Counts:
        return counts(session.conn, pynenc_schema(session.schema), now)

    def aggregates(self, session: ReadSession, now: datetime, settings: MetricsConfig) -> Aggregates:
        return Aggregates(now)

    def follow_finished(self, session: ReadSession, now: datetime) -> bool:
        return self._tracker.update(session.conn, pynenc_schema(session.schema), now)

    def restarted(self) -> PynencStats:
        self._tracker = self._tracker.restarted()
        return self

    def overview(self, snapshot: Tier | None, counts: Tier | None, settings: MetricsConfig) -> Overview:
        """Runs are top-level invocations (no parent); stuck counts every invocation pynenc's
        recovery would act on, as ``pynenc_invocations_stuck`` does."""
        stuck: Counter[StuckReason] | None = None
        oldest: float | None = None
        if isinstance(snapshot, Snapshot):
            stuck = Counter(dict.fromkeys(STUCK_REASONS, 0))
            for app in snapshot.apps:
                stuck.update(app.stuck)
                if app.oldest_active_update is not None and (oldest is None or app.oldest_active_update < oldest):
                    oldest = app.oldest_active_update
        runs = None
        if isinstance(counts, Counts):
            runs = PHASES.fold((status, n) for app in counts.apps for status, n in app.runs_by_status.items())
        finished = self._tracker.totals()
        if not finished.seeded:
            return Overview(engine=ENGINE_NAME, runs=runs, stuck=stuck, oldest_active_update=oldest)
        durations = Histogram.merged(finished.top_level_durations.values())
        return Overview(
            engine=ENGINE_NAME,
            runs=runs,
            stuck=stuck,
            oldest_active_update=oldest,
            finished=PHASES.fold((status, n) for (_app, status), n in finished.runs.items()),
            durations=durations,
        )
