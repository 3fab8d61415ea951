"""Marianne's refresh tiers over one file, and what they mean in canonical terms."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import TYPE_CHECKING

from exporter.engines.base import NothingToFollow
from exporter.engines.marianne.layout import ENGINE_NAME, marianne_schema
from exporter.engines.marianne.snapshot import (
    STUCK_REASONS,
    Aggregates,
    Counts,
    RegistrySnapshot,
    WorkspaceSnapshot,
    aggregates,
    counts,
    snapshot,
)
from exporter.engines.marianne.statuses import PHASES
from exporter.model import Overview, StuckReason

if TYPE_CHECKING:
    from exporter.config import MetricsConfig
    from exporter.engines.base import Tier
    from exporter.reader import ReadSession


class MarianneStats(NothingToFollow):
    """No finished-run cursor yet: Marianne rewrites its rows in place (a job's row and its sheets
    are saved whole on every change), so the overview's finished counters stay absent for now."""

    def __init__(self, settings: MetricsConfig) -> None:
        pass

    def snapshot(
        self, session: ReadSession, now: datetime, settings: MetricsConfig
    ) -> WorkspaceSnapshot | RegistrySnapshot:
        return snapshot(session.conn, marianne_schema(session.schema), now, settings)

    def counts(self, session: ReadSession, now: datetime, settings: MetricsConfig) -> Counts:
        return counts(session.conn, marianne_schema(session.schema), now)

    def aggregates(self, session: ReadSession, now: datetime, settings: MetricsConfig) -> Aggregates:
        return aggregates(session.conn, marianne_schema(session.schema), now)

    def overview(self, snapshot: Tier | None, counts: Tier | None, settings: MetricsConfig) -> Overview:
        """Runs are jobs (the workspace's, or the conductor's in the registry); a stuck job counts
        once, under ``pid_dead`` before ``idle``, as ``marianne_jobs_stuck`` counts it."""
        if not isinstance(snapshot, WorkspaceSnapshot | RegistrySnapshot):
            return Overview(engine=ENGINE_NAME)
        stuck: Counter[StuckReason] = Counter(dict.fromkeys(STUCK_REASONS, 0))
        stuck.update(snapshot.stuck)
        return Overview(
            engine=ENGINE_NAME,
            runs=PHASES.fold(snapshot.jobs_by_status.items()),
            stuck=stuck,
            oldest_active_update=snapshot.oldest_active_update,
        )
