"""Connection handling shared by the backend mixins.

One aiosqlite connection per backend instance, opened lazily on first use and guarded (with its
initialisation) by an ``asyncio.Lock``; WAL + ``busy_timeout`` let several instances/processes share a
file.  Schema validation/migration runs once per open, in a worker thread, with plain ``sqlite3``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from exporter.clock import Clock, system_clock
from exporter.state.errors import StateBackendError
from exporter.state.schema import StateLayout, initialize
from exporter.timeparse import iso_utc, resolve_timezone

log = logging.getLogger("exporter.state")

Row = sqlite3.Row
T = TypeVar("T")


class BackendCore:
    """State shared by the mixins: path, clock, zone, connection, lock, layout."""

    def __init__(
        self,
        db_path: str | os.PathLike[str],
        *,
        clock: Clock = system_clock,
        naive_timezone: str | tzinfo | None = None,
        busy_timeout_ms: int = 5000,
    ) -> None:
        self.db_path = Path(db_path)
        self._clock = clock
        self.naive_timezone: tzinfo = (
            naive_timezone if isinstance(naive_timezone, tzinfo) else resolve_timezone(naive_timezone)
        )
        if isinstance(busy_timeout_ms, bool) or not isinstance(busy_timeout_ms, int) or busy_timeout_ms < 0:
            raise ValueError(f"busy_timeout_ms must be an int >= 0, got {busy_timeout_ms!r}")
        self.busy_timeout_ms = busy_timeout_ms
        self._conn: aiosqlite.Connection | None = None
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None
        self._layout: StateLayout | None = None
        self._init_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.db_path)!r})"

    # -- time -------------------------------------------------------------------------------------

    def now(self) -> datetime:
        value = self._clock()
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def now_iso(self) -> str:
        return iso_utc(self.now())

    # -- schema -----------------------------------------------------------------------------------

    def ensure_layout_sync(self) -> StateLayout:
        """Validate/migrate the file once (thread-safe); the layout is cached until shutdown."""
        layout = self._layout
        if layout is not None:
            return layout
        with self._init_lock:
            if self._layout is None:
                self._layout = initialize(self.db_path, busy_timeout_ms=self.busy_timeout_ms)
            return self._layout

    @property
    def layout(self) -> StateLayout | None:
        """The detected layout, once the backend has been used (None before)."""
        return self._layout

    # -- connection -------------------------------------------------------------------------------

    def _get_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock = asyncio.Lock()
            self._lock_loop = loop
        return self._lock

    async def _open(self) -> tuple[aiosqlite.Connection, StateLayout]:
        layout = await asyncio.to_thread(self.ensure_layout_sync)
        if self._conn is None:
            pending = aiosqlite.connect(str(self.db_path), timeout=self.busy_timeout_ms / 1000, isolation_level=None)
            # aiosqlite's worker thread is non-daemon: a program that forgets shutdown() would hang at
            # exit.  Committed transactions are durable whatever happens to the thread (WAL).
            worker = getattr(pending, "_thread", None)
            if isinstance(worker, threading.Thread) and not worker.is_alive():
                worker.daemon = True
            try:
                conn = await pending
            except sqlite3.Error as exc:
                raise self._error("open", exc) from exc
            try:
                conn.row_factory = sqlite3.Row
                await conn.execute(f"PRAGMA busy_timeout = {self.busy_timeout_ms}")
                await conn.execute("PRAGMA foreign_keys = ON")
                await conn.execute("PRAGMA synchronous = NORMAL")
            except BaseException:
                await conn.close()
                raise
            self._conn = conn
        return self._conn, layout

    def _error(self, operation: str, exc: BaseException) -> StateBackendError:
        return StateBackendError(f"{operation} failed on {self.db_path}: {exc}", path=self.db_path)

    @contextlib.asynccontextmanager
    async def session(self, operation: str) -> AsyncIterator[tuple[aiosqlite.Connection, StateLayout]]:
        """Exclusive use of the shared connection (autocommit; no transaction open)."""
        async with self._get_lock():
            try:
                conn, layout = await self._open()
                if conn.in_transaction:  # left over by a cancelled operation
                    await conn.rollback()
                yield conn, layout
            except sqlite3.Error as exc:
                raise self._error(operation, exc) from exc

    @contextlib.asynccontextmanager
    async def transaction(self, operation: str) -> AsyncIterator[tuple[aiosqlite.Connection, StateLayout]]:
        """Like :meth:`session` inside ``BEGIN IMMEDIATE`` ... ``COMMIT`` (rolled back on error)."""
        async with self.session(operation) as (conn, layout):
            await conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn, layout
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    await conn.rollback()
                raise
            try:
                await conn.commit()
            except BaseException:
                # e.g. a deferred foreign key failing at COMMIT leaves the transaction open
                with contextlib.suppress(sqlite3.Error):
                    await conn.rollback()
                raise

    async def run_plain(self, operation: str, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` in a worker thread on a short-lived plain ``sqlite3`` connection (autocommit),
        holding the backend's lock: the Flujo write core shared with the daemon's jobs
        (``exporter/engines/flujo/jobs/core.py``) is synchronous and owns its short transactions."""
        async with self.session(operation):
            return await asyncio.to_thread(self._with_plain_connection, work)

    def _with_plain_connection(self, work: Callable[[sqlite3.Connection], T]) -> T:
        conn = sqlite3.connect(str(self.db_path), timeout=self.busy_timeout_ms / 1000, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout = {self.busy_timeout_ms}")
            return work(conn)
        finally:
            conn.close()

    async def shutdown(self) -> None:
        """Close the shared connection; the next call reopens it (and re-checks the schema)."""
        async with self._get_lock():
            conn, self._conn = self._conn, None
            with self._init_lock:
                self._layout = None
            if conn is not None:
                await conn.close()


async def fetchall(conn: aiosqlite.Connection, sql: str, params: Sequence[Any] = ()) -> list[Row]:
    return list(await conn.execute_fetchall(sql, params))


async def fetchone(conn: aiosqlite.Connection, sql: str, params: Sequence[Any] = ()) -> Row | None:
    rows = await fetchall(conn, sql, params)
    return rows[0] if rows else None


async def execute(conn: aiosqlite.Connection, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> int:
    """Run a statement; returns the changed row count."""
    cursor = await conn.execute(sql, params)
    count = cursor.rowcount
    await cursor.close()
    return int(count)


async def executemany(conn: aiosqlite.Connection, sql: str, rows: Iterable[Any]) -> int:
    cursor = await conn.executemany(sql, rows)
    count = cursor.rowcount
    await cursor.close()
    return int(count)


def row_dict(row: Row) -> dict[str, Any]:
    return dict(zip(row.keys(), row, strict=True))
