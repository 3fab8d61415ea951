"""One daemon per conductor: pointed at the registry (``daemon-state.db``), the daemon also reads
the job DB (``<workspace>/.marianne-state.db``) of every workspace the registry's ``jobs.workspace``
names, so the workspace families are summed over the workspaces read.

Each workspace DB is read exactly as a workspace target is: opened afresh for every tier, in one
short read transaction, never through Marianne's code.  The registry's read transaction ends
before the first workspace is opened (:meth:`ReadSession.release`).

* At most ``metrics.marianne.max_workspaces`` are read, the most recently active first (the newest
  ``last_event_at``, ``started_at`` or ``submitted_at`` of their registry jobs); the rest are
  counted as ``over_cap``.
* A workspace without a DB (deleted, or its job not started yet) is ``missing``; one that cannot be
  read (not SQLite, corrupt, not Marianne's, locked past the busy timeout…) ``unreadable``.  Either
  is left out of the sums, counted in ``marianne_workspaces`` and by reason in
  ``marianne_workspace_read_errors_total``, and logged when its state changes.  Neither makes the
  daemon unready: the registry is the target, and it was read.
* No workspace path is a label: the paths are the user's, unbounded, and come and go with jobs.
* Counters (attempt outcomes, retries, finished jobs) go on across workspaces: a workspace that
  stops being read keeps its totals, one the registry no longer lists hands them to a retired
  total, and one that comes back is followed from its end (its rows were counted already).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from exporter.engines.marianne.layout import ENGINE_NAME, RegistrySchema, WorkspaceSchema
from exporter.engines.marianne.snapshot import (
    REGISTRY_TABLE,
    WORKSPACE_MISSING,
    WORKSPACE_OK,
    WORKSPACE_OVER_CAP,
    WORKSPACE_STATES,
    WORKSPACE_UNREADABLE,
    Aggregates,
    ConductorSnapshot,
    Counts,
    RegistrySnapshot,
    WorkspaceSnapshot,
    aggregates,
    counts,
    snapshot,
    summed_aggregates,
    summed_counts,
    summed_snapshots,
)
from exporter.engines.marianne.tracking import Followed, HistoryTracker
from exporter.reader.badvalues import BadValue, shown
from exporter.reader.errors import DatabaseUnavailable, Problem

if TYPE_CHECKING:
    from exporter.config import MetricsConfig
    from exporter.reader import ReadSession, StateReader

log = logging.getLogger(__name__)

WORKSPACE_DB = ".marianne-state.db"
_NO_DB = (Problem.MISSING, Problem.EMPTY)  # not created yet (or deleted): no job DB, not a broken one


@dataclass
class _Workspace:
    reader: StateReader
    tracker: HistoryTracker
    generation: int
    state: str | None = None  # at the last snapshot, to log changes only


@dataclass
class Workspaces:
    """The workspaces of one registry, across refreshes (owned by the single refresh thread)."""

    known: dict[str, _Workspace] = field(default_factory=dict)  # listed by the registry, by path
    read: list[str] = field(default_factory=list)  # read fine at the last snapshot
    retired: Followed | None = None  # totals of workspaces the registry no longer lists
    retired_paths: set[str] = field(default_factory=set)
    errors: Counter[str] = field(default_factory=Counter)
    over_cap: int = 0
    _bad: list[BadValue] = field(default_factory=list)

    def snapshot(self, session: ReadSession, now: datetime, settings: MetricsConfig) -> ConductorSnapshot:
        registry = snapshot(session.conn, RegistrySchema(), now, settings)
        assert isinstance(registry, RegistrySnapshot)
        listed = self._listed(session)
        session.release()
        origin = _origin(session)
        cap = settings.marianne.max_workspaces
        chosen = listed[:cap]
        self._over_cap(len(listed) - len(chosen), cap)
        self._forget(set(listed))
        health: Counter[str] = Counter(dict.fromkeys(WORKSPACE_STATES, 0))
        health[WORKSPACE_OVER_CAP] = len(listed) - len(chosen)
        parts: list[WorkspaceSnapshot] = []
        self.read = []
        for path in chosen:
            workspace = self._workspace(path, origin)
            try:
                with workspace.reader.session() as ws:
                    found = snapshot(ws.conn, _workspace_schema(ws.schema, path), now, settings)
            except DatabaseUnavailable as exc:
                health[self._failed(path, workspace, exc)] += 1
                continue
            assert isinstance(found, WorkspaceSnapshot)
            parts.append(found)
            self.read.append(path)
            health[WORKSPACE_OK] += 1
            if workspace.state not in (None, WORKSPACE_OK):
                log.info("Marianne workspace %s is read again", path)
            workspace.state = WORKSPACE_OK
        return ConductorSnapshot(registry, summed_snapshots(parts, now), health, Counter(self.errors))

    def counts(self, session: ReadSession, now: datetime) -> Counts:
        session.release()
        parts = []
        for path, workspace in self._reading():
            try:
                with workspace.reader.session() as ws:
                    parts.append(counts(ws.conn, _workspace_schema(ws.schema, path), now))
            except DatabaseUnavailable as exc:
                self._failed(path, workspace, exc)
        return summed_counts(parts, now)

    def aggregates(self, session: ReadSession, now: datetime) -> Aggregates:
        session.release()
        parts = []
        for path, workspace in self._reading():
            try:
                with workspace.reader.session() as ws:
                    parts.append(aggregates(ws.conn, _workspace_schema(ws.schema, path), now))
            except DatabaseUnavailable as exc:
                self._failed(path, workspace, exc)
        return summed_aggregates(parts, now)

    def follow(self, session: ReadSession) -> bool:
        """Every workspace read at the last snapshot caught up, each batch in its own session."""
        session.release()
        for path, workspace in self._reading():
            try:
                caught_up = False
                while not caught_up:
                    with workspace.reader.session() as ws:
                        _workspace_schema(ws.schema, path)
                        if workspace.reader.generation != workspace.generation:
                            log.warning("Marianne workspace %s holds another file: following it from its end", path)
                            workspace.generation = workspace.reader.generation
                            workspace.tracker.restarted()
                        caught_up = workspace.tracker.update(ws.conn)
            except DatabaseUnavailable as exc:
                self._failed(path, workspace, exc)
        return True

    def totals(self) -> Followed | None:
        """Summed over every workspace followed so far; ``None`` before any was."""
        parts = [
            # Undecided attempts are a gauge of the workspaces read now; the counters go on for all.
            totals if path in self.read else replace(totals, undecided=0)
            for path, w in self.known.items()
            if w.tracker.seeded
            for totals in (w.tracker.totals(),)
        ]
        if self.retired is not None:
            parts.append(self.retired)
        return Followed.merged(parts) if parts else None

    @property
    def seeded(self) -> bool:
        return all(self.known[path].tracker.seeded for path in self.read if path in self.known)

    def take_bad_values(self) -> list[BadValue]:
        found, self._bad = self._bad, []
        for workspace in self.known.values():
            found.extend(workspace.tracker.take_bad_values())
        return found

    # -- helpers -----------------------------------------------------------------------------------

    def _listed(self, session: ReadSession) -> list[str]:
        """The registry's workspaces, most recently active first."""
        sql = (
            f"SELECT workspace, MAX(COALESCE(last_event_at, started_at, submitted_at)) AS active "
            f"FROM {REGISTRY_TABLE} GROUP BY workspace ORDER BY active DESC, workspace"
        )
        listed = []
        for workspace, _active in session.conn.execute(sql):
            if not isinstance(workspace, str) or not workspace or "\x00" in workspace:
                self._bad.append(BadValue(REGISTRY_TABLE, "workspace", "", shown(workspace)))
                continue
            listed.append(workspace)
        return listed

    def _reading(self) -> list[tuple[str, _Workspace]]:
        return [(path, self.known[path]) for path in self.read if path in self.known]

    def _workspace(self, path: str, origin: StateReader) -> _Workspace:
        workspace = self.known.get(path)
        if workspace is None:
            reader = origin.sibling(Path(path) / WORKSPACE_DB, ENGINE_NAME)
            tracker = HistoryTracker()
            if path in self.retired_paths:
                tracker.restarted()  # its rows were counted before the registry dropped it
            workspace = self.known[path] = _Workspace(reader, tracker, reader.generation)
        return workspace

    def _failed(self, path: str, workspace: _Workspace, exc: DatabaseUnavailable) -> str:
        state = WORKSPACE_MISSING if exc.problem in _NO_DB else WORKSPACE_UNREADABLE
        self.errors[exc.problem.value] += 1
        if workspace.state != state:
            log.warning("Marianne workspace %s is %s, left out of the sums: %s", path, state, exc.message)
        workspace.state = state
        if path in self.read and state != WORKSPACE_OK:
            self.read.remove(path)
        return state

    def _forget(self, listed: set[str]) -> None:
        for path in [p for p in self.known if p not in listed]:
            totals = self.known.pop(path).tracker.totals()
            mine = replace(totals, undecided=0)  # a gauge of what is present, not a total
            self.retired = mine if self.retired is None else Followed.merged([self.retired, mine])
            self.retired_paths.add(path)
            log.info("Marianne workspace %s is no longer in the registry: its totals are kept", path)

    def _over_cap(self, over: int, cap: int) -> None:
        if over and not self.over_cap:
            log.warning(
                "the registry lists %d workspaces, more than metrics.marianne.max_workspaces (%d): the %d least "
                'recently active are not read (marianne_workspaces{state="over_cap"})',
                cap + over,
                cap,
                over,
            )
        self.over_cap = over


def _origin(session: ReadSession) -> StateReader:
    if session.reader is None:
        raise RuntimeError("a registry session without its reader: workspaces cannot be opened")
    return session.reader


def _workspace_schema(schema: object, path: str) -> WorkspaceSchema:
    if isinstance(schema, WorkspaceSchema):
        return schema
    layout = getattr(schema, "layout", "another engine's")
    raise DatabaseUnavailable(
        Problem.UNKNOWN_LAYOUT, f"{Path(path) / WORKSPACE_DB}: a {layout} file, not a Marianne workspace DB"
    )
