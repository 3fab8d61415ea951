"""Marianne's refresh tiers over one file, and what they mean in canonical terms.  Pointed at a
workspace DB they read that one; pointed at the conductor's registry, the registry and the
workspaces it lists (:mod:`.conductor`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from exporter.engines.marianne.conductor import Workspaces
from exporter.engines.marianne.layout import ENGINE_NAME, RegistrySchema, marianne_schema
from exporter.engines.marianne.snapshot import (
    STUCK_REASONS,
    Aggregates,
    ConductorSnapshot,
    Counts,
    RegistrySnapshot,
    WorkspaceSnapshot,
    aggregates,
    counts,
    snapshot,
)
from exporter.engines.marianne.statuses import PHASES
from exporter.engines.marianne.tracking import Followed, HistoryTracker
from exporter.model import Overview, StuckReason

if TYPE_CHECKING:
    from exporter.config import MetricsConfig
    from exporter.engines.base import Tier
    from exporter.reader import ReadSession
    from exporter.reader.badvalues import BadValue


class MarianneStats:
    """The workspace target's counters (:class:`HistoryTracker`), or the conductor's workspaces
    with theirs; ``finished`` is their :class:`Followed` totals."""

    def __init__(self, settings: MetricsConfig) -> None:
        self._tracker = HistoryTracker()
        self._workspaces = Workspaces()
        self._registry = False  # the file at the path is the conductor's registry

    def snapshot(
        self, session: ReadSession, now: datetime, settings: MetricsConfig
    ) -> WorkspaceSnapshot | ConductorSnapshot:
        schema = marianne_schema(session.schema)
        self._registry = isinstance(schema, RegistrySchema)
        if self._registry:
            return self._workspaces.snapshot(session, now, settings)
        found = snapshot(session.conn, schema, now, settings)
        assert isinstance(found, WorkspaceSnapshot)
        return found

    def counts(self, session: ReadSession, now: datetime, settings: MetricsConfig) -> Counts:
        schema = marianne_schema(session.schema)
        if isinstance(schema, RegistrySchema):
            return self._workspaces.counts(session, now)
        return counts(session.conn, schema, now)

    def aggregates(self, session: ReadSession, now: datetime, settings: MetricsConfig) -> Aggregates:
        schema = marianne_schema(session.schema)
        if isinstance(schema, RegistrySchema):
            return self._workspaces.aggregates(session, now)
        return aggregates(session.conn, schema, now)

    def follow_finished(self, session: ReadSession, now: datetime) -> bool:
        if isinstance(marianne_schema(session.schema), RegistrySchema):
            return self._workspaces.follow(session)
        return self._tracker.update(session.conn)

    @property
    def finished(self) -> Followed | None:
        if self._registry:
            return self._workspaces.totals()
        return self._tracker.totals() if self._tracker.seeded else None

    @property
    def seeded(self) -> bool:
        return self._workspaces.seeded if self._registry else self._tracker.seeded

    def take_bad_values(self) -> Sequence[BadValue]:
        return [*self._tracker.take_bad_values(), *self._workspaces.take_bad_values()]

    def restarted(self) -> MarianneStats:
        """Another file at the path: a workspace DB is followed from its end; a registry's
        workspaces are other files, followed as before."""
        self._tracker.restarted()
        return self

    def overview(self, snapshot: Tier | None, counts: Tier | None, settings: MetricsConfig) -> Overview:
        """Runs are jobs (the workspace's, or the conductor's in the registry); a stuck job counts
        once, under ``pid_dead`` before ``idle``, as ``marianne_jobs_stuck`` counts it.  Jobs seen
        finishing and their durations come from the workspace DBs read."""
        current: WorkspaceSnapshot | RegistrySnapshot
        if isinstance(snapshot, ConductorSnapshot):
            current = snapshot.registry
        elif isinstance(snapshot, WorkspaceSnapshot):
            current = snapshot
        else:
            return Overview(engine=ENGINE_NAME)
        stuck: Counter[StuckReason] = Counter(dict.fromkeys(STUCK_REASONS, 0))
        stuck.update(current.stuck)
        followed = self.finished
        return Overview(
            engine=ENGINE_NAME,
            runs=PHASES.fold(current.jobs_by_status.items()),
            stuck=stuck,
            oldest_active_update=current.oldest_active_update,
            finished=None if followed is None else PHASES.fold(followed.finished.items()),
            durations=None if followed is None else followed.durations,
        )
