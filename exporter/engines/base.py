"""What an engine brings to the daemon: recognising its files, its refresh tiers, its collectors,
its stuck-run judgement for the alerts.

The framework (reader, refresher, scrape, readiness) only knows these shapes; everything an engine
knows about its own tables, statuses and rules stays in its package.
"""

from __future__ import annotations

import importlib
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Self

from exporter.model import Overview, PhaseMap, StuckReason, StuckRun

if TYPE_CHECKING:
    from prometheus_client.registry import Collector

    from exporter.collectors.base import View
    from exporter.config import MetricsConfig
    from exporter.reader import ReadSession
    from exporter.reader.badvalues import BadValue
    from exporter.reader.sql import Connection
    from exporter.traces.source import SourceFactory

# table -> its columns, as read from the file's catalogue
Catalogue = Mapping[str, frozenset[str]]


def missing_from(catalogue: Catalogue, required: Mapping[str, Sequence[str]]) -> str | None:
    """What ``catalogue`` lacks of ``required`` (table -> its columns), in the words ``recognise``
    reports; ``None`` when it lacks nothing."""
    missing = []
    for table, needed in required.items():
        columns = catalogue.get(table)
        if columns is None:
            missing.append(f"no {table} table")
            continue
        lacking = [c for c in needed if c not in columns]
        if lacking:
            missing.append(f"table {table} lacks column(s) {', '.join(lacking)}")
    return "; ".join(missing) or None


class EngineSchema(Protocol):
    """What an engine recognised in a file: which engine, which of its layouts."""

    @property
    def engine(self) -> str: ...

    @property
    def layout(self) -> str: ...


class Tier(Protocol):
    """One refresh tier's result: when it was read and the rows it had to skip."""

    @property
    def taken_at(self) -> datetime: ...

    @property
    def bad_values(self) -> Sequence[BadValue]: ...


class EngineStats(Protocol):
    """The refresh tiers over one file.  Owned by the single refresh thread; holds whatever the
    engine keeps between refreshes (row caches, the finished-run cursor)."""

    def snapshot(self, session: ReadSession, now: datetime, settings: MetricsConfig) -> Tier:
        """Cheap, every refresh: active runs, stuck judgement."""

    def counts(self, session: ReadSession, now: datetime, settings: MetricsConfig) -> Tier:
        """Index counts, every ``counts_interval``."""

    def aggregates(self, session: ReadSession, now: datetime, settings: MetricsConfig) -> Tier:
        """Whole-table aggregates, every ``aggregate_interval``."""

    def follow_finished(self, session: ReadSession, now: datetime) -> bool:
        """Advance the finished-run cursor by one batch; ``True`` once caught up."""

    @property
    def finished(self) -> object:
        """Totals of runs seen finishing, for this engine's collectors."""

    @property
    def seeded(self) -> bool:
        """``False`` until the first full pass over finished runs is done."""

    def take_bad_values(self) -> Sequence[BadValue]:
        """Bad values the finished-run cursor skipped since last asked."""

    def restarted(self) -> EngineStats:
        """For another file at the same path: caches dropped, counters going on from their values."""

    def overview(self, snapshot: Tier | None, counts: Tier | None, settings: MetricsConfig) -> Overview:
        """The engine's state in canonical terms (see :mod:`exporter.model`)."""


@dataclass(frozen=True)
class FileBackend:
    """An engine's state kept in plain (JSON) files rather than SQLite: the reader reads the files
    whole and loads them into a private in-memory SQLite DB with the engine's own tables, so the
    engine's queries run unchanged (see :mod:`exporter.reader.filesource`)."""

    # The files that make up the state named by ``db.path`` (a file or a directory), the main one
    # first; raises DatabaseUnavailable (``missing``) when the main file is absent.
    files: Callable[[Path], Sequence[Path]]
    # Creates the tables in the empty DB and inserts the files' content (path, bytes), main first;
    # raises DatabaseUnavailable naming the file that is truncated or not the engine's.
    load: Callable[[sqlite3.Connection, Sequence[tuple[Path, bytes]]], EngineSchema]


def imported_on_call(target: str) -> Callable[[Any], Any]:
    """``module:name``, imported when first called: an engine's collectors pull in the scrape side
    and its span source the export side, which importing the engine (its settings, the registry)
    must not."""
    module, name = target.split(":")

    def call(argument: Any) -> Any:
        return getattr(importlib.import_module(module), name)(argument)

    return call


class FinishedCursor(Protocol):
    """An engine's cursor over finished runs (Flujo's runs rowid, pynenc's history)."""

    def totals(self) -> object: ...

    @property
    def seeded(self) -> bool: ...

    def take_bad_values(self) -> Sequence[BadValue]: ...


class FollowsCursor:
    """The finished-run part of :class:`EngineStats` read from the engine's cursor, ``_tracker``
    (the engine advances it in its own ``follow_finished`` and swaps it in ``restarted``)."""

    _tracker: FinishedCursor

    @property
    def finished(self) -> object:
        return self._tracker.totals()

    @property
    def seeded(self) -> bool:
        return self._tracker.seeded

    def take_bad_values(self) -> Sequence[BadValue]:
        return self._tracker.take_bad_values()


class NothingToFollow:
    """The finished-run part of :class:`EngineStats` for an engine without a finished-run cursor:
    its tiers read every execution from the tables themselves."""

    def follow_finished(self, session: ReadSession, now: datetime) -> bool:
        return True

    @property
    def finished(self) -> None:
        return None

    @property
    def seeded(self) -> bool:
        return True

    def take_bad_values(self) -> Sequence[BadValue]:
        return ()

    def restarted(self) -> Self:
        return self


@dataclass(frozen=True)
class Engine:
    name: str  # lower case: the ``engine`` label, ``db.engine``, ``--engine``
    title: str  # as the project spells it, for messages
    summary: str  # one line for ``--help`` and the README
    phases: PhaseMap
    stuck_reasons: tuple[StuckReason, ...]  # the reasons this engine judges
    recognise: Callable[[Catalogue], EngineSchema | str]  # its schema, or what the file lacks
    new_stats: Callable[[MetricsConfig], EngineStats]
    collectors: Callable[[View], Sequence[Collector]]  # the engine's own metric families
    # The active runs the engine's stuck rule judges stuck now (the rule behind its stuck metric and
    # ``workflow_runs_stuck``, with the same ``metrics.stuck`` settings), for the stuck-run alerts.
    stuck_runs: Callable[[ReadSession, datetime, MetricsConfig], list[StuckRun]]
    stuck_alert_name: str  # ``alertname`` of the daemon's per-run stuck alerts
    # Its span source for the tailer and ``replay`` (see :mod:`exporter.traces.source`), from the
    # attribute limits; ``None``: the engine has no spans to export.  Imports the span code when called.
    spans: SourceFactory | None = None
    # Its plain-file state (``db.path`` a directory or a ``.json`` file); ``None``: SQLite only.
    file_backend: FileBackend | None = None
    # Its schema in a Postgres database (``db.url``) from the catalogue and the connection (for the
    # engine's own version table), or what the database lacks; ``None``: the engine has no Postgres
    # backend.  Its tiers then get a :class:`~exporter.reader.sql.Connection`, not an sqlite3 one.
    recognise_postgres: Callable[[Connection, Catalogue], EngineSchema | str] | None = None
