"""Short-lived connections for the write jobs, clear errors, and index-bound keyset paging.

* A write connection exists only for one job run (:class:`JobConnection`): the daemon holds no
  writable handle between runs.
* ``mode=rw``: SQLite never creates the file; nothing is migrated, created or re-configured
  (no ``journal_mode``/``synchronous`` changes: those are the application's settings).
* Writes take the lock with ``BEGIN IMMEDIATE`` under a short busy timeout, so a job waits at most
  ``jobs.write_busy_timeout`` for the application and otherwise fails with "database is locked".
* The SQL below is built from fixed identifiers chosen in this package, never from config values.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

from exporter.engines import detect
from exporter.engines.base import EngineSchema
from exporter.jobs.scheduler import JobError
from exporter.reader.connection import open_readonly, read_catalogue
from exporter.reader.errors import DatabaseUnavailable

T = TypeVar("T")


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


class JobConnection:
    """One connection for one job run, used from worker threads one call at a time.

    It is opened on the first call and closed by :meth:`close`, which waits for a call still running
    in a thread (after a cancelled ``await``), so the connection is never used by two threads.

    On a WAL database a write connection uses ``synchronous=NORMAL`` (per connection, not stored in
    the file): its commits do not fsync while holding the write lock; a power loss can only undo
    some of its deletes, which the next run repeats.  Its own automatic checkpoints are off;
    :meth:`checkpoint` runs a ``PASSIVE`` one (never blocks the application's writer) after each
    transaction, so the WAL stays small and the application's commits do not inherit checkpoints.
    """

    def __init__(self, target: Target, job: str, *, write: bool) -> None:
        self.target = target
        self.job = job
        self.write = write
        self.wal = False
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    async def call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.to_thread(self._run, work)

    def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            try:
                if self._conn is None:
                    self._conn = self._open()
                return work(self._conn)
            except sqlite3.Error as exc:
                raise describe(exc, self.target, self.job, write=self.write) from exc

    def _open(self) -> sqlite3.Connection:
        if not self.write:
            return self.target.open_read(self.job)
        conn = self.target.open_write(self.job)
        try:
            self.wal = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal"
            if self.wal:
                conn.execute("PRAGMA synchronous = NORMAL")
                conn.execute("PRAGMA wal_autocheckpoint = 0")
        except BaseException:
            conn.close()
            raise
        return conn

    def checkpoint(self, conn: sqlite3.Connection) -> None:
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


def schema_of(conn: sqlite3.Connection, target: Target, engine: str) -> EngineSchema:
    """The layout ``engine`` recognises in the target file; :class:`JobError` naming what is missing."""
    try:
        return detect(read_catalogue(conn, target.path), target.path, engine)
    except DatabaseUnavailable as exc:
        raise JobError(exc.message) from exc


@contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[list[float]]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (rolled back on error); yields a list that receives the lock
    hold time in seconds (from getting the lock to the end of the commit)."""
    conn.execute("BEGIN IMMEDIATE")
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
    """Position after the last row of a page in ``ORDER BY column, rowid`` order."""

    value: object
    rowid: int


def keyset_page(
    conn: sqlite3.Connection,
    *,
    select: str,
    source: str,
    column: str,
    bound: str,
    after: Cursor | None,
    limit: int,
    rowid: str = "rowid",
) -> list[tuple[object, ...]]:
    """Rows with ``column < bound`` (an index range: the text pre-filter of an instant window), in index
    order, starting after ``after``.  The first two selected values must be ``rowid`` and ``column``.

    ``column >= last`` keeps the scan on the index; the rows equal to ``last`` that were already seen
    are skipped by rowid (SQLite sorts only the ties: "RIGHT PART OF ORDER BY")."""
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
    return Cursor(last[1], int(last[0]))  # type: ignore[call-overload]
