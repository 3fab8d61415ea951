"""The daemon's read-only view of an engine's state DB: never migrates, never writes."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import tzinfo
from pathlib import Path
from typing import Protocol

from exporter import engines
from exporter.engines.base import EngineSchema
from exporter.reader.connection import (
    begin_read,
    classify_error,
    end_read,
    file_identity,
    file_sizes,
    limit_queries,
    open_readonly,
    read_catalogue,
)
from exporter.reader.errors import DatabaseUnavailable, Problem
from exporter.reader.filesource import FileSource, backend_for, is_file_source
from exporter.reader.sql import Connection

__all__ = ["DatabaseUnavailable", "Problem", "ReadSession", "Reader", "StateReader"]


_BUSY_SLICE_S = 0.25  # SQLite's own busy wait per attempt: a stop is noticed within this
_BUSY_PAUSE_S = 0.02


@dataclass(frozen=True)
class ReadSession:
    # The session's connection: an sqlite3 one, or a Postgres one with the same execute/fetch subset
    # (only engines with ``recognise_postgres`` are ever given one).
    db: Connection
    schema: EngineSchema
    naive_tz: tzinfo
    # The reader this session came from: an engine whose state spans several files (a Marianne
    # conductor's registry and its workspaces) opens the others through ``reader.sibling``.
    reader: StateReader | None = None

    def release(self) -> None:
        """End the read transaction now, before the session ends: what the engine needed from this
        file is read, and it goes on to read other files (the connection closes with the session)."""
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    @property
    def conn(self) -> sqlite3.Connection:
        """The SQLite connection, for code that reads SQLite files only (other engines, span export)."""
        if isinstance(self.db, sqlite3.Connection):
            return self.db
        raise DatabaseUnavailable(
            Problem.UNKNOWN_LAYOUT, "this part of the exporter reads SQLite state DBs only, not a Postgres database"
        )


class Reader(Protocol):
    """What the refresher needs of a reader: the SQLite :class:`StateReader` or the Postgres
    :class:`exporter.reader.postgres.PostgresReader`."""

    @property
    def path(self) -> Path | str:
        """What messages call the DB (a path, or a URL without its secrets)."""

    @property
    def generation(self) -> int:
        """Bumped when another DB took the place of the one read so far."""

    def session(self) -> AbstractContextManager[ReadSession]: ...

    def schema(self) -> EngineSchema: ...

    def file_sizes(self) -> tuple[int, int]: ...


class StateReader:
    """Opens the DB afresh for every session: one short read transaction, then close.  Which engine
    wrote the file is read from its catalogue (``engine``: ``auto`` or one engine's name)."""

    def __init__(
        self,
        path: Path,
        *,
        naive_timezone: tzinfo,
        engine: str = "auto",
        busy_timeout: float = 1.0,
        query_timeout: float = 10.0,
        halt: threading.Event | None = None,
    ) -> None:
        self.path = path
        self.engine = engine
        # Set when the daemon stops: waits for a lock and running queries end at once.
        self.halt = halt or threading.Event()
        self.naive_timezone = naive_timezone
        self.busy_timeout = busy_timeout
        self.query_timeout = query_timeout
        # (file identity, PRAGMA schema_version) -> schema: the catalogue is read again only after a change.
        self._schema: tuple[tuple[int, int, int], EngineSchema] | None = None
        # Bumped when another file appears at ``path``: rowid caches and watermarks of the old file
        # mean nothing for the new one.
        self.generation = 0
        # db.path a directory or a .json file: an engine's plain-file state (see filesource).
        self._files: FileSource | None = None

    @contextmanager
    def session(self) -> Iterator[ReadSession]:
        """One read transaction on a fresh connection, rolled back and closed on exit."""
        conn, schema = self._start_file_session() if is_file_source(self.path) else self._start_session()
        try:
            yield ReadSession(conn, schema, self.naive_timezone, self)
        except sqlite3.Error as exc:
            raise classify_error(exc, self.path) from exc
        finally:
            end_read(conn)

    def _start_session(self) -> tuple[sqlite3.Connection, EngineSchema]:
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

    def _start_file_session(self) -> tuple[sqlite3.Connection, EngineSchema]:
        if self._files is None:
            self._files = FileSource(self.path, backend_for(self.path, self.engine))
        conn, schema = self._files.connect()
        try:
            begin_read(conn, self.path)
            limit_queries(conn, timeout=self.query_timeout, halt=self.halt)
        except BaseException:
            end_read(conn)
            raise
        return conn, schema

    def _wait_again(self, problem: DatabaseUnavailable, deadline: float) -> bool:
        if problem.problem is not Problem.LOCKED or self.halt.is_set() or time.monotonic() >= deadline:
            return False
        self.halt.wait(_BUSY_PAUSE_S)
        return True

    def _current_schema(self, conn: sqlite3.Connection) -> EngineSchema:
        identity = file_identity(self.path)
        key = (*identity, int(conn.execute("PRAGMA schema_version").fetchone()[0]))
        cached = self._schema
        if cached is not None and cached[0] == key:
            return cached[1]
        if cached is not None and cached[0][:2] != identity:
            # Deleted and recreated, or swapped in by a rename: its rowids mean nothing to the caches.
            self.generation += 1
        schema = engines.detect(read_catalogue(conn, self.path), self.path, self.engine)
        self._schema = (key, schema)
        return schema

    def sibling(self, path: Path, engine: str) -> StateReader:
        """A reader of another file of the same engine's state, read the same way (same timeouts,
        stopped by the same halt)."""
        return StateReader(
            path,
            naive_timezone=self.naive_timezone,
            engine=engine,
            busy_timeout=self.busy_timeout,
            query_timeout=self.query_timeout,
            halt=self.halt,
        )

    def schema(self) -> EngineSchema:
        with self.session() as s:
            return s.schema

    def file_sizes(self) -> tuple[int, int]:
        """The DB file's and its WAL's bytes; for plain files, their total bytes at the last load."""
        if is_file_source(self.path):
            return (0 if self._files is None else self._files.file_sizes()), 0
        return file_sizes(self.path)
