"""seeknal's refresh tiers over one file, and what they mean in canonical terms.

seeknal keeps every run's rows, so executions are counted from the table itself (aggregates tier):
there is no finished-run cursor, and the overview's finished-run families stay absent.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import TYPE_CHECKING

from exporter.engines.base import NothingToFollow
from exporter.engines.seeknal.layout import ENGINE_NAME, seeknal_schema
from exporter.engines.seeknal.snapshot import STUCK_REASONS, Aggregates, Counts, Snapshot, aggregates, counts, snapshot
from exporter.engines.seeknal.statuses import PHASES
from exporter.model import Overview, StuckReason

if TYPE_CHECKING:
    from exporter.config import MetricsConfig
    from exporter.engines.base import Tier
    from exporter.reader import ReadSession


class SeeknalStats(NothingToFollow):
    def __init__(self, settings: MetricsConfig) -> None:
        pass

    def snapshot(self, session: ReadSession, now: datetime, settings: MetricsConfig) -> Snapshot:
        return snapshot(session.conn, seeknal_schema(session.schema), session.naive_tz, now, settings)

    def counts(self, session: ReadSession, now: datetime, settings: MetricsConfig) -> Counts:
        return counts(session.conn, seeknal_schema(session.schema), session.naive_tz, now)

    def aggregates(self, session: ReadSession, now: datetime, settings: MetricsConfig) -> Aggregates:
        return aggregates(session.conn, seeknal_schema(session.schema), session.naive_tz, now)

    def overview(self, snapshot: Tier | None, counts: Tier | None, settings: MetricsConfig) -> Overview:
        """Runs by derived status; stuck counts each stuck node (reason ``idle``), as
        ``seeknal_nodes_stuck`` does, so a run with two stuck nodes counts twice."""
        stuck: Counter[StuckReason] | None = None
        if isinstance(snapshot, Snapshot):
            stuck = Counter(dict.fromkeys(STUCK_REASONS, 0))
            stuck[StuckReason.IDLE] = len(snapshot.stuck)
        runs, oldest = None, None
        if isinstance(counts, Counts):
            runs = PHASES.fold(counts.runs_by_status.items())
            oldest = counts.oldest_active_update
        return Overview(engine=ENGINE_NAME, runs=runs, stuck=stuck, oldest_active_update=oldest)
