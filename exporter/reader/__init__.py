"""The daemon's read-only view of a Flujo DB: never migrates, never writes."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path

from exporter.reader.active_cache import ActiveRowCache
from exporter.reader.connection import (
    begin_read,
    classify_error,
    end_read,
    file_identity,
    file_sizes,
    limit_queries,
    open_readonly,
)
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


_BUSY_SLICE_S = 0.25  # SQLite's own busy wait per attempt: a stop is noticed within this
_BUSY_PAUSE_S = 0.02


@dataclass(frozen=True)
class ReadSession:
    conn: sqlite3.Connection
    schema: Schema
    naive_tz: tzinfo


class FlujoReader:
    """Opens the DB afresh for every session: one short read transaction, then close."""

    def __init__(
        self,
        path: Path,
        *,
        naive_timezone: tzinfo,
        busy_timeout: float = 1.0,
        query_timeout: float = 10.0,
        halt: threading.Event | None = None,
    ) -> None:
        self.path = path
        # Set when the daemon stops: waits for a lock and running queries end at once.
        self.halt = halt or threading.Event()
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
        """One read transaction on a fresh connection, rolled back and closed on exit."""
        conn, schema = self._start_session()
        try:
            yield ReadSession(conn, schema, self.naive_timezone)
        except sqlite3.Error as exc:
            raise classify_error(exc, self.path) from exc
        finally:
            end_read(conn)

    def _start_session(self) -> tuple[sqlite3.Connection, Schema]:
        """Open and take the shared lock, waiting up to ``busy_timeout`` for a writer in short slices,
        so that :attr:`halt` (set when the daemon stops) ends the wait within one slice."""
        deadline = time.monotonic() + self.busy_timeout
        while True:
            slice_s = min(_BUSY_SLICE_S, max(deadline - time.monotonic(), 0.0))
            conn: sqlite3.Connection | None = None
            try:
                conn = open_readonly(self.path, busy_timeout=slice_s)
                begin_read(conn, self.path)
                schema = self._current_schema(conn)  # the first read: holds the shared lock from here on
                limit_queries(conn, timeout=self.query_timeout, halt=self.halt)
                return conn, schema
            except sqlite3.Error as exc:
                if conn is not None:
                    end_read(conn)
                problem = classify_error(exc, self.path)
                if not self._wait_again(problem, deadline):
                    raise problem from exc
            except DatabaseUnavailable as exc:
                if conn is not None:
                    end_read(conn)
                if not self._wait_again(exc, deadline):
                    raise
            except BaseException:
                if conn is not None:
                    end_read(conn)
                raise

    def _wait_again(self, problem: DatabaseUnavailable, deadline: float) -> bool:
        if problem.problem is not Problem.LOCKED or self.halt.is_set() or time.monotonic() >= deadline:
            return False
        self.halt.wait(_BUSY_PAUSE_S)
        return True

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
