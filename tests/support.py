"""Helpers shared by the tests: the real Flujo fixture DBs and the external tools."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import sqlite3
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

from exporter.config import MetricsConfig
from exporter.engines.flujo.snapshot import AggregateStats, CountStats, FastStats
from exporter.engines.flujo.stats import FlujoStats
from exporter.reader import StateReader

FIXTURES = Path(__file__).parent / "fixtures"
T = TypeVar("T")
SMALL = "sample-small.db"
SMALL06 = "sample06-small.db"
LEGACY = "sample-v0.4.32-legacy.db"
ALL_FIXTURES = (SMALL, SMALL06, LEGACY)


def expected(name: str) -> dict[str, Any]:
    with (FIXTURES / f"{name}.expected.json").open() as handle:
        data: dict[str, Any] = json.load(handle)
    return data


def computed_at(name: str) -> datetime:
    return datetime.fromisoformat(expected(name)["computed_at_utc"])


def anchor_at(name: str) -> datetime:
    return datetime.fromisoformat(expected(name)["anchor_utc"])


def checksums(db: Path) -> dict[str, str]:
    """Digest of the DB and of its -wal, and whether a -shm exists, for the files that exist.

    The -shm is never opened: closing any descriptor of it would drop the POSIX locks that this
    process's own SQLite connections (a test's writer) hold on it, and it holds no content anyway."""
    found = {}
    for suffix in ("", "-wal"):
        candidate = Path(f"{db}{suffix}")
        if candidate.exists():
            found[suffix or "db"] = hashlib.sha256(candidate.read_bytes()).hexdigest()
    if Path(f"{db}-shm").exists():
        found["-shm"] = "present"
    return found


def content_checksums(db: Path) -> dict[str, str]:
    """Digest of what holds the DB's content: the file and a non-empty -wal.  A reader may create an
    empty -wal and a -shm (the WAL index, no content) on a WAL database, as every SQLite reader does."""
    return {k: v for k, v in checksums(db).items() if k == "db" or (k == "-wal" and Path(f"{db}-wal").stat().st_size)}


def make_hybrid(db: Path) -> None:
    """Apply what flujo 0.6.11 does to a 0.4.35 file (schemas/v0.6.11-github-upgraded-from-v0.4.35.sql)."""
    conn = sqlite3.connect(db)
    conn.executescript(
        """
        ALTER TABLE workflow_state ADD COLUMN "metadata" TEXT;
        ALTER TABLE workflow_state ADD COLUMN "is_background_task" INTEGER DEFAULT 0;
        ALTER TABLE workflow_state ADD COLUMN "parent_run_id" TEXT;
        ALTER TABLE workflow_state ADD COLUMN "task_id" TEXT;
        ALTER TABLE workflow_state ADD COLUMN "background_error" TEXT;
        ALTER TABLE runs ADD COLUMN "pipeline_id" TEXT NOT NULL DEFAULT 'unknown';
        ALTER TABLE runs ADD COLUMN "created_at" TEXT NOT NULL DEFAULT '';
        ALTER TABLE runs ADD COLUMN "updated_at" TEXT NOT NULL DEFAULT '';
        ALTER TABLE runs ADD COLUMN "execution_time_ms" INTEGER;
        ALTER TABLE runs ADD COLUMN "memory_usage_mb" REAL;
        ALTER TABLE runs ADD COLUMN "total_steps" INTEGER DEFAULT 0;
        ALTER TABLE runs ADD COLUMN "error_message" TEXT;
        ALTER TABLE steps ADD COLUMN raw_response TEXT;
        CREATE TABLE system_state (key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at TEXT NOT NULL);
        CREATE TABLE traces (run_id TEXT PRIMARY KEY, trace_data TEXT NOT NULL, created_at TEXT NOT NULL);
        CREATE INDEX idx_workflow_state_parent_run_id ON workflow_state(parent_run_id);
        CREATE INDEX idx_runs_created_at ON runs(created_at);
        """
    )
    conn.commit()
    conn.close()


def wait_for(condition: Callable[[], T], timeout: float, what: str | Callable[[], str], *, interval: float = 0.1) -> T:
    """Poll ``condition`` until it returns something truthy, and return that.

    ``what`` names what is awaited ("/readyz to answer 200"); a callable is called only on failure, so the
    message can show the state at that moment (counts, logs).  An exception from ``condition`` ends the
    wait at once: a condition raises when waiting longer is pointless (the process exited).  From a
    coroutine, run it in a thread (``await asyncio.to_thread(wait_for, ...)``) so the loop keeps running.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what() if callable(what) else what}")
        time.sleep(interval)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_tool(*names: str) -> str:
    """Path of the first binary found; skip locally when absent, fail in CI (tools must run there)."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    message = f"{' or '.join(names)} not installed (run scripts/install-test-tools.sh)"
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


def parse_exposition(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Samples of a text exposition keyed by (name, labels)."""
    from prometheus_client.parser import text_string_to_metric_families

    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def sample(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


class ExclusiveWriter:
    """A writer holding an EXCLUSIVE lock on ``db`` (switched to a rollback journal, where that blocks
    readers too): every reader gets "database is locked" until :meth:`release`."""

    def __init__(self, db: Path) -> None:
        conn = sqlite3.connect(db)
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.close()
        self._conn: sqlite3.Connection | None = sqlite3.connect(db, isolation_level=None)
        self._conn.execute("BEGIN EXCLUSIVE")

    def release(self) -> None:
        if self._conn is not None:
            self._conn.execute("ROLLBACK")
            self._conn.close()
            self._conn = None

    def __enter__(self) -> ExclusiveWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


NOBODY = 65534


def as_user(uid: int, work: Callable[[], T], *, groups: Sequence[int] = ()) -> T:
    """Run ``work`` in a forked child with ``uid``/gid ``uid`` and only the supplementary ``groups`` (none by
    default), so that file permissions apply even when the tests run as root (as CI does).  Returns what
    ``work`` returned and re-raises what it raised.  When the tests do not run as root, ``uid`` must be the
    current user (and ``groups`` is ignored)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read_end)
        try:
            if os.geteuid() == 0:
                os.setgroups(list(groups))
                os.setresgid(uid, uid, uid)
                os.setresuid(uid, uid, uid)
            outcome: tuple[bool, object] = (True, work())
        except BaseException as exc:
            outcome = (False, exc)
        with os.fdopen(write_end, "wb") as pipe:
            pickle.dump(outcome, pipe)
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        ok, value = pickle.load(pipe)
    os.waitpid(pid, 0)
    if not ok:
        assert isinstance(value, BaseException)
        raise value
    return value  # type: ignore[return-value]


def other_user() -> int:
    """A user the files of a test are not owned by: nobody when root, else ourselves (no other choice)."""
    return NOBODY if os.geteuid() == 0 else os.geteuid()


def query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` on a read-only connection of its own (closed before returning)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def app_writes(db: Path, n: int, table: str = "app_test_writes") -> None:
    """One write as flujo 0.4.35 does it: a new connection, one row, close (the last close of a WAL
    DB checkpoints and deletes -wal/-shm)."""
    conn = sqlite3.connect(db)
    try:
        conn.execute(f"CREATE TABLE IF NOT EXISTS {table} (n INTEGER)")
        conn.execute(f"INSERT INTO {table} VALUES (?)", (n,))
        conn.commit()
    finally:
        conn.close()


def integrity_and_rows(db: Path, table: str = "app_test_writes") -> tuple[str, list[int]]:
    """``PRAGMA integrity_check``'s first line and the rows :func:`app_writes` wrote, in order."""
    conn = sqlite3.connect(db)
    try:
        check = str(conn.execute("PRAGMA integrity_check").fetchone()[0])
        return check, [row[0] for row in conn.execute(f"SELECT n FROM {table} ORDER BY n")]
    finally:
        conn.close()


class FlujoTiers:
    """Flujo's refresh tiers over a reader, driven as the refresher drives them (one stats object,
    so its row cache lives across calls), each tier in its own read session."""

    def __init__(self, reader: StateReader, settings: MetricsConfig | None = None) -> None:
        self.reader = reader
        self.settings = settings or MetricsConfig()
        self.stats = FlujoStats(self.settings)

    def fast(self, now: datetime) -> FastStats:
        with self.reader.session() as session:
            return self.stats.snapshot(session, now, self.settings)

    def counts(self, now: datetime) -> CountStats:
        with self.reader.session() as session:
            return self.stats.counts(session, now, self.settings)

    def aggregates(self, now: datetime) -> AggregateStats:
        with self.reader.session() as session:
            return self.stats.aggregates(session, now, self.settings)
