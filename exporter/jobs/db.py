"""Short-lived connections for the write jobs, clear errors, and index-bound keyset paging.

* A write connection exists only for one job run (:class:`JobConnection`): the daemon holds no
  writable handle between runs.
* ``mode=rw``: SQLite never creates the file; nothing is migrated, created or re-configured
  (no ``journal_mode``/``synchronous`` changes: those are the application's settings).
* Writes take the lock with ``BEGIN IMMEDIATE`` under a short busy timeout, so a job waits at most
  ``jobs.write_busy_timeout`` for the application and otherwise fails with "database is locked".
* The SQL below is built from fixed identifiers chosen in this package, never from config values.

A Postgres database (``db.url``) is a :class:`exporter.jobs.pg.PostgresTarget`: the same interface
(:class:`JobTarget`), its own connections, its own transactions and errors.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

from exporter.engines import detect
from exporter.engines.base import EngineSchema
from exporter.jobs.scheduler import JobError
from exporter.reader.connection import open_readonly, read_catalogue
from exporter.reader.errors import DatabaseUnavailable
from exporter.reader.sql import Rows

T = TypeVar("T")


class WriteRows(Rows, Protocol):
    @property
    def rowcount(self) -> int: ...


class JobConn(Protocol):
    """What the write jobs use of a connection: ``sqlite3.Connection`` itself, or
    :class:`exporter.jobs.pg.PostgresJobConnection` (``?`` placeholders on both)."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> WriteRows: ...

    @property
    def in_transaction(self) -> bool: ...

    def close(self) -> None: ...


class JobTarget(Protocol):
    """The user's DB as the write jobs see it: a SQLite file (:class:`Target`) or a Postgres database."""

    @property
    def path(self) -> object: ...  # what messages call the DB (a Postgres URL without its secrets)

    def open_job(self, job: str, *, write: bool) -> tuple[JobConn, bool]:
        """A new connection, and whether its commits should be followed by a WAL checkpoint."""
        ...

    def schema(self, conn: JobConn, engine: str) -> EngineSchema: ...

    def failure(self, exc: Exception, job: str, *, write: bool) -> JobError | None:
        """``exc`` as one clear JobError when it is the DB's own error; None for anything else."""
        ...

    def connect(self, job: str, *, write: bool) -> AbstractContextManager[JobConn]: ...


@dataclass(frozen=True)
class Target:
    """The user's DB as the write jobs see it."""

    path: Path
    busy_timeout: float

    @contextmanager
    def connect(self, job: str, *, write: bool) -> Iterator[sqlite3.Connection]:
        """A fresh connection (read-only when ``write`` is False), closed on exit; errors become JobError."""
        conn = self.open_write(job) if write else self.open_read(job)
        try:
            yield conn
        except sqlite3.Error as exc:
            raise describe(exc, self, job, write=write) from exc
        finally:
            conn.close()

    def open_write(self, job: str) -> sqlite3.Connection:
        if not self.path.exists():
            raise JobError(f"{self.path}: database file does not exist")
        uri = f"file:{quote(str(self.path.resolve()))}?mode=rw"
        try:
            return sqlite3.connect(
                uri, uri=True, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise describe(exc, self, job, write=True) from exc

    def open_read(self, job: str) -> sqlite3.Connection:
        try:
            return open_readonly(self.path, busy_timeout=self.busy_timeout)
        except DatabaseUnavailable as exc:
            raise JobError(exc.message) from exc

    def open_job(self, job: str, *, write: bool) -> tuple[JobConn, bool]:
        """On a WAL database a write connection uses ``synchronous=NORMAL`` (per connection, not stored
        in the file): its commits do not fsync while holding the write lock; a power loss can only
        undo some of its deletes, which the next run repeats.  Its own automatic checkpoints are off;
        the caller runs a ``PASSIVE`` one after each transaction (:meth:`JobConnection.checkpoint`)."""
        if not write:
            return self.open_read(job), False
        conn = self.open_write(job)
        try:
            wal = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal"
            if wal:
                conn.execute("PRAGMA synchronous = NORMAL")
                conn.execute("PRAGMA wal_autocheckpoint = 0")
        except BaseException:
            conn.close()
            raise
        return conn, wal

    def schema(self, conn: JobConn, engine: str) -> EngineSchema:
        try:
            return detect(read_catalogue(conn, self.path), self.path, engine)  # type: ignore[arg-type]
        except DatabaseUnavailable as exc:
            raise JobError(exc.message) from exc

    def failure(self, exc: Exception, job: str, *, write: bool) -> JobError | None:
        return describe(exc, self, job, write=write) if isinstance(exc, sqlite3.Error) else None


class JobConnection:
    """One connection for one job run, used from worker threads one call at a time.

    It is opened on the first call and closed by :meth:`close`, which waits for a call still running
    in a thread (after a cancelled ``await``), so the connection is never used by two threads.
    After each transaction on a WAL file, :meth:`checkpoint` runs a ``PASSIVE`` checkpoint (never
    blocks the application's writer), so the WAL stays small and the application's commits do not
    inherit checkpoints (see :meth:`Target.open_job`).
    """

    def __init__(self, target: JobTarget, job: str, *, write: bool) -> None:
        self.target = target
        self.job = job
        self.write = write
        self.wal = False
        self._conn: JobConn | None = None
        self._lock = threading.Lock()

    async def call(self, work: Callable[[Any], T]) -> T:
        return await asyncio.to_thread(self._run, work)

    def _run(self, work: Callable[[Any], T]) -> T:
        with self._lock:
            try:
                if self._conn is None:
                    self._conn, self.wal = self.target.open_job(self.job, write=self.write)
                return work(self._conn)
            except Exception as exc:
                failure = self.target.failure(exc, self.job, write=self.write)
                if failure is None:
                    raise
                raise failure from exc

    def checkpoint(self, conn: JobConn) -> None:
        if self.wal:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    async def close(self) -> None:
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def describe(exc: sqlite3.Error, target: Target, job: str, *, write: bool) -> JobError:
    """One clear sentence saying what is wrong and what happens next."""
    name = getattr(exc, "sqlite_errorname", "")
    text = str(exc)
    lowered = text.lower()
    if name.startswith("SQLITE_READONLY") or "readonly database" in lowered:
        return JobError(
            f"{target.path}: the database is read-only for the exporter ({text}); the {job} job needs write "
            "access to the DB file, its -wal/-shm files and its directory"
        )
    if name.startswith("SQLITE_BUSY") or "locked" in lowered or "busy" in lowered:
        return JobError(
            f"{target.path}: database is locked: another connection held the write lock for longer than "
            f"jobs.write_busy_timeout ({target.busy_timeout:g}s)"
        )
    if name.startswith("SQLITE_CANTOPEN") or "unable to open" in lowered:
        mode = "for writing" if write else "read-only"
        return JobError(f"{target.path}: cannot open the database {mode} ({text})")
    return JobError(f"{target.path}: {text}")


def schema_of(conn: JobConn, target: JobTarget, engine: str) -> EngineSchema:
    """The layout ``engine`` recognises in the target DB; :class:`JobError` naming what is missing."""
    return target.schema(conn, engine)


@contextmanager
def write_transaction(conn: JobConn) -> Iterator[list[float]]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (rolled back on error); yields a list that receives the lock
    hold time in seconds (from getting the lock to the end of the commit).  On Postgres a plain
    ``BEGIN``: row locks are taken by the statements (``lock_timeout`` bounds any wait)."""
    conn.execute("BEGIN IMMEDIATE" if isinstance(conn, sqlite3.Connection) else "BEGIN")
    held = [time.perf_counter()]
    try:
        yield held
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    finally:
        held[0] = time.perf_counter() - held[0]


def placeholders(count: int) -> str:
    return ", ".join("?" * count)


@dataclass(frozen=True)
class Cursor:
    """Position after the last row of a page in ``ORDER BY column, rowid`` order (on Postgres the
    table's primary key stands in for the rowid: a run_id)."""

    value: object
    rowid: int | str


def keyset_page(
    conn: JobConn,
    *,
    select: str,
    source: str,
    column: str,
    bound: object,
    after: Cursor | None,
    limit: int,
    rowid: str = "rowid",
) -> list[tuple[object, ...]]:
    """Rows with ``column < bound`` (an index range: the text pre-filter of an instant window), in index
    order, starting after ``after``.  The first two selected values must be ``rowid`` and ``column``.

    ``column >= last`` keeps the scan on the index; the rows equal to ``last`` that were already seen
    are skipped by rowid (SQLite sorts only the ties: "RIGHT PART OF ORDER BY"; Postgres does the
    same with an incremental sort on the primary key)."""
    params: list[object] = [bound]
    where = f"{column} < ?"
    if after is not None:
        where += f" AND {column} >= ? AND NOT ({column} = ? AND {rowid} <= ?)"
        params += [after.value, after.value, after.rowid]
    sql = f"SELECT {select} FROM {source} WHERE {where} ORDER BY {column}, {rowid} LIMIT ?"
    params.append(limit)
    return conn.execute(sql, params).fetchall()


def next_cursor(rows: Sequence[tuple[object, ...]]) -> Cursor | None:
    if not rows:
        return None
    last = rows[-1]
    key = last[0]
    return Cursor(last[1], key if isinstance(key, str) else int(key))  # type: ignore[call-overload]
