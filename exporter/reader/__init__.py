"""The daemon's read-only view of a Flujo DB: never migrates, never writes."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path

from exporter.reader.active_cache import ActiveRowCache
from exporter.reader.connection import file_identity, file_sizes, open_readonly, read_transaction
from exporter.reader.errors import DatabaseUnavailable, Problem
from exporter.reader.layout import Capability, Layout, Schema, detect_schema
from exporter.reader.snapshot import (
    AggregateStats,
    CountStats,
    FastStats,
    aggregate_stats,
    count_stats,
    fast_stats,
)
from exporter.stuck import StuckPolicy

__all__ = [
    "AggregateStats",
    "Capability",
    "CountStats",
    "DatabaseUnavailable",
    "FastStats",
    "FlujoReader",
    "Layout",
    "Problem",
    "ReadSession",
    "Schema",
]


@dataclass(frozen=True)
class ReadSession:
    conn: sqlite3.Connection
    schema: Schema
    naive_tz: tzinfo


class FlujoReader:
    """Opens the DB afresh for every session: one short read transaction, then close."""

    def __init__(
        self, path: Path, *, naive_timezone: tzinfo, busy_timeout: float = 1.0, query_timeout: float = 10.0
    ) -> None:
        self.path = path
        self.naive_timezone = naive_timezone
        self.busy_timeout = busy_timeout
        self.query_timeout = query_timeout
        self._active = ActiveRowCache()  # used by the single refresh thread only
        # (file identity, PRAGMA schema_version) -> Schema: the catalogue is read again only after a change.
        self._schema: tuple[tuple[int, int, int], Schema] | None = None
        # Bumped when another file appears at ``path``: watermarks of the old file must be dropped.
        self.generation = 0

    @contextmanager
    def session(self) -> Iterator[ReadSession]:
        conn = open_readonly(self.path, busy_timeout=self.busy_timeout)
        try:
            with read_transaction(conn, self.path, timeout=self.query_timeout):
                yield ReadSession(conn, self._current_schema(conn), self.naive_timezone)
        finally:
            conn.close()

    def _current_schema(self, conn: sqlite3.Connection) -> Schema:
        identity = file_identity(self.path)
        key = (*identity, int(conn.execute("PRAGMA schema_version").fetchone()[0]))
        cached = self._schema
        if cached is not None and cached[0] == key:
            return cached[1]
        if cached is not None and cached[0][:2] != identity:
            # Deleted and recreated, or swapped in by a rename: its rowids mean nothing to the caches.
            self._active = ActiveRowCache()
            self.generation += 1
        schema = detect_schema(conn, self.path)
        self._schema = (key, schema)
        return schema

    def schema(self) -> Schema:
        with self.session() as s:
            return s.schema

    def fast_stats(self, now: datetime, policy: StuckPolicy) -> tuple[Schema, FastStats]:
        with self.session() as s:
            return s.schema, fast_stats(s.conn, s.schema, now, s.naive_tz, policy, self._active)

    def count_stats(self, now: datetime) -> CountStats:
        with self.session() as s:
            return count_stats(s.conn, s.schema, now, s.naive_tz)

    def aggregate_stats(self, now: datetime) -> AggregateStats:
        with self.session() as s:
            return aggregate_stats(s.conn, s.schema, now)

    def file_sizes(self) -> tuple[int, int]:
        return file_sizes(self.path)
