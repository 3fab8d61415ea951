"""The exporter's own state file (SQLite, never the user's Flujo DB).

Tables::

    meta(key, value)                      runs_hwm: the engine's discovery cursor (Flujo: highest
                                          runs.rowid discovered); hwm_run_id: the unit at it; source:
                                          the DB (Flujo: its path); watermark: see TraceStats; schema
                                          version
    pending(run_id, runs_rowid, ...)      trace units (Flujo runs, pynenc invocation trees) discovered
                                          but not completely exported (in progress ones included), with
                                          their position (Flujo: runs.rowid) and span count last seen
    exported_spans(run_id, span_id)       stored span ids already exported (or dead-lettered) of pending
                                          runs only: a resumed run's later spans go out, earlier ones not
    dead_letters(...)                     spans given up on, newest ``max_dead_letters`` kept
    replays(key, ...)                     progress of each `replay` (keyset cursor: runs rowid + span id)

Everything that follows an export is written in one transaction *after* the collector accepted the
batch, so a crash at any point re-sends at most the batch in flight and never skips one.  WAL with
``synchronous=NORMAL``: a power cut may lose the last commits, which again only means re-sending.

Every SQLite or file error surfaces as :class:`StateError` with a bounded reason (see
:data:`exporter.traces.metrics.STATE_ERROR_REASONS`); the caller stops exporting until the file
works again.  A file that is a SQLite DB of someone else (tables, but no ``meta.schema_version``
of ours) is refused as ``foreign`` and never written to.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from exporter.reader.sql import in_chunks
from exporter.traces.delivery import DeadLetter

SCHEMA_VERSION = "1"


class StateError(Exception):
    """The state file cannot be read or written; ``reason``: see ``metrics.STATE_ERROR_REASONS``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def classify(exc: BaseException) -> str:
    """A bounded reason for an error raised by SQLite or the file system on the state file."""
    if isinstance(exc, StateError):
        return exc.reason
    if isinstance(exc, sqlite3.Error):
        name = str(getattr(exc, "sqlite_errorname", "") or "")
        text = str(exc).lower()
        if name == "SQLITE_FULL" or "disk is full" in text:
            return "disk_full"
        if name in ("SQLITE_NOTADB", "SQLITE_CORRUPT") or "not a database" in text or "malformed" in text:
            return "corrupt"
        if name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_AUTH")):
            return "unwritable"
        if "readonly" in text or "unable to open" in text:
            return "unwritable"
        if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in text:
            return "locked"
        return "io"
    if isinstance(exc, OSError):
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            return "disk_full"
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.EEXIST):
            return "unwritable"
        return "io"
    return "io"


def _state_error(path: Path, exc: BaseException) -> StateError:
    if isinstance(exc, StateError):
        return exc
    reason = classify(exc)
    return StateError(reason, f"traces state file {path}: {reason.replace('_', ' ')} ({exc})")


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pending (
    run_id TEXT PRIMARY KEY,
    runs_rowid INTEGER NOT NULL,
    first_seen REAL NOT NULL,
    finished_seen REAL,
    finished_signature TEXT,
    spans INTEGER NOT NULL DEFAULT 0,
    exported INTEGER NOT NULL DEFAULT 0,
    signature TEXT
);
CREATE INDEX IF NOT EXISTS pending_by_rowid ON pending (runs_rowid);
CREATE TABLE IF NOT EXISTS exported_spans (
    run_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    PRIMARY KEY (run_id, span_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    source TEXT NOT NULL,
    run_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT
);
CREATE TABLE IF NOT EXISTS replays (
    key TEXT PRIMARY KEY,
    params TEXT NOT NULL,
    cursor_rowid INTEGER NOT NULL DEFAULT 0,
    cursor_span TEXT,
    exported INTEGER NOT NULL DEFAULT 0,
    dead INTEGER NOT NULL DEFAULT 0,
    done INTEGER NOT NULL DEFAULT 0,
    started_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class PendingRun:
    run_id: str
    rowid: int
    first_seen: float
    finished_seen: float | None  # when this exporter first saw the run finished with finished_signature
    finished_signature: str | None
    spans: int
    exported: int
    signature: str | None


@dataclass(frozen=True, slots=True)
class ReplayProgress:
    key: str
    cursor_rowid: int
    cursor_span: str | None
    exported: int
    dead: int
    done: bool


@dataclass
class Commit:
    """Everything one successful export changes, written in a single transaction."""

    exported_keys: list[tuple[str, str]]  # (run_id, span_id) of runs that stay pending
    completed_runs: list[str]  # runs now completely exported: forget them
    partial_runs: list[tuple[str, str, int]]  # (run_id, signature, spans exported in this commit)
    dead: list[DeadLetter]
    watermark: float | None = None


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        uri = f"file:{path}?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=5.0, isolation_level=None, check_same_thread=False)
    else:
        conn = sqlite3.connect(str(path), timeout=10.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 10000")
    return conn


def check_separate(state_path: Path, db_path: Path | str) -> None:
    """The state must not live in the Flujo DB: the reader may open that file ``immutable`` (no writer
    expected) and never writes to it.  A database's URL (``str``) is never a file."""
    if isinstance(db_path, Path) and state_path.resolve() == db_path.resolve():
        raise ValueError(f"traces state file {state_path} is the Flujo DB itself: use a file of its own")


class StateStore:
    """Used by one export thread at a time (a lock guards the connection); readers open their own."""

    def __init__(self, path: Path, *, max_dead_letters: int = 10_000) -> None:
        self.path = path
        self.max_dead_letters = max_dead_letters
        self._lock = threading.RLock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fresh = not path.exists()
            self._conn = connect(path)
        except (OSError, sqlite3.Error) as exc:
            raise _state_error(path, exc) from exc
        try:
            if fresh:
                os.chmod(path, 0o600)
            self._init_schema()
            self.identity = _identity(path)
        except BaseException as exc:
            self._conn.close()
            if isinstance(exc, (OSError, sqlite3.Error, StateError)):
                raise _state_error(path, exc) from exc
            raise

    def _init_schema(self) -> None:
        tables = {str(row[0]) for row in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if tables:
            version = None
            if "meta" in tables:
                with contextlib.suppress(sqlite3.OperationalError):
                    row = self._conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                    version = None if row is None else str(row[0])
            if version is None:
                shown = ", ".join(sorted(tables)[:5])
                raise StateError(
                    "foreign",
                    f"traces state file {self.path} is a SQLite DB of something else (tables {shown}):"
                    " refusing to write to it; point traces.state_file at a file of its own",
                )
            if version != SCHEMA_VERSION:
                raise StateError(
                    "foreign",
                    f"traces state file {self.path} has schema version {version} (this exporter knows"
                    f" {SCHEMA_VERSION}): written by another version; use a file of its own",
                )
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = NORMAL")
        # Tables and version in one transaction: a half-made file is never taken for a foreign one.
        # CREATE ... IF NOT EXISTS also adds the tables a file of an older release lacks.
        with self.transaction():
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._conn.execute(statement)
            self._conn.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)", (SCHEMA_VERSION,)
            )

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def replaced(self) -> bool:
        """Whether the file at :attr:`path` is no longer the one this store writes to (deleted or
        swapped): writing on would go to an unlinked file, lost at the next restart."""
        try:
            return _identity(self.path) != self.identity
        except OSError:
            return True

    def rebuild(self) -> None:
        """Write this store's content (still readable through the open connection when the file was
        unlinked) to a new file at :attr:`path` and continue there.  Nothing committed is lost."""
        with self._lock:
            temp = self.path.with_name(self.path.name + ".rebuild")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                temp.unlink(missing_ok=True)
                target = sqlite3.connect(str(temp))
                try:
                    self._conn.backup(target)
                finally:
                    target.close()
                os.chmod(temp, 0o600)
                self._conn.close()
                os.replace(temp, self.path)
                self._conn = connect(self.path)
                self._conn.execute("PRAGMA journal_mode = WAL")
                self._conn.execute("PRAGMA synchronous = NORMAL")
                self.identity = _identity(self.path)
            except (OSError, sqlite3.Error) as exc:
                with contextlib.suppress(OSError):
                    temp.unlink(missing_ok=True)
                raise _state_error(self.path, exc) from exc

    @contextmanager
    def _guarded(self) -> Iterator[sqlite3.Connection]:
        """The connection under the lock; SQLite and file errors become :class:`StateError`."""
        with self._lock:
            try:
                yield self._conn
            except (OSError, sqlite3.Error) as exc:
                raise _state_error(self.path, exc) from exc

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._guarded() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # a failed COMMIT (disk full) may leave it open
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise

    # --- meta -------------------------------------------------------------------------------------
    def meta(self, key: str) -> str | None:
        with self._guarded() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def cursor(self) -> str | None:
        """The discovery cursor (opaque, the engine's; Flujo's is the ``runs.rowid`` high-water mark)."""
        return self.meta("runs_hwm")

    def watermark(self) -> float | None:
        value = self.meta("watermark")
        return None if value is None else float(value)

    def bind_source(self, source: str) -> bool:
        """Remember which Flujo DB the tail state belongs to; a different one resets it (True)."""
        known = self.meta("source")
        if known == source:
            return False
        with self.transaction() as conn:
            if known is not None:
                conn.execute("DELETE FROM pending")
                conn.execute("DELETE FROM exported_spans")
                conn.execute("DELETE FROM meta WHERE key IN ('runs_hwm', 'hwm_run_id', 'watermark')")
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('source', ?)", (source,))
        return known is not None

    # --- discovery --------------------------------------------------------------------------------
    def add_pending(self, runs: Sequence[tuple[int, str, int]], hwm: str, hwm_run_id: str, now: float) -> None:
        """Record discovered units (position, id, span count) and move the discovery cursor
        (``hwm_run_id``: the unit at it, to notice rowid reuse later)."""
        with self.transaction() as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO pending (run_id, runs_rowid, first_seen, spans) VALUES (?, ?, ?, ?)",
                [(run_id, rowid, now, spans) for rowid, run_id, spans in runs],
            )
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('runs_hwm', ?)", (hwm,))
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('hwm_run_id', ?)", (hwm_run_id,))

    def move_cursor(self, cursor: str, unit_id: str) -> None:
        with self.transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('runs_hwm', ?)", (cursor,))
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('hwm_run_id', ?)", (unit_id,))

    def pending_page(self, after: tuple[int, str] | None, limit: int) -> list[PendingRun]:
        """Pending units after ``after`` (position, id) in (position, id) order: an engine's positions
        need not be unique (one per app)."""
        position, run_id = after if after is not None else (-1, "")
        with self._guarded() as conn:
            rows = conn.execute(
                "SELECT run_id, runs_rowid, first_seen, finished_seen, finished_signature, spans, exported, signature"
                " FROM pending"
                " WHERE runs_rowid > ? OR (runs_rowid = ? AND run_id > ?) ORDER BY runs_rowid, run_id LIMIT ?",
                (position, position, run_id, limit),
            ).fetchall()
        return [PendingRun(*row) for row in rows]

    def update_pending(
        self,
        *,
        vanished: Iterable[str] = (),
        finished_seen: Iterable[tuple[str, float, str]] = (),
        counts: Iterable[tuple[str, int]] = (),
    ) -> None:
        with self.transaction() as conn:
            for run_id in vanished:
                conn.execute("DELETE FROM pending WHERE run_id = ?", (run_id,))
                conn.execute("DELETE FROM exported_spans WHERE run_id = ?", (run_id,))
            conn.executemany(
                "UPDATE pending SET finished_seen = ?, finished_signature = ? WHERE run_id = ?",
                [(t, sig, r) for r, t, sig in finished_seen],
            )
            conn.executemany("UPDATE pending SET spans = ? WHERE run_id = ?", [(n, r) for r, n in counts])

    def exported_keys(self, run_id: str) -> set[str]:
        with self._guarded() as conn:
            return {row[0] for row in conn.execute("SELECT span_id FROM exported_spans WHERE run_id = ?", (run_id,))}

    def commit(self, change: Commit, source: str = "tail") -> None:
        now = time.time()
        with self.transaction() as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO exported_spans (run_id, span_id) VALUES (?, ?)", change.exported_keys
            )
            for run_id, signature, added in change.partial_runs:
                conn.execute(
                    "UPDATE pending SET signature = COALESCE(NULLIF(?, ''), signature), exported = exported + ?"
                    " WHERE run_id = ?",
                    (signature, added, run_id),
                )
            for run_id in change.completed_runs:
                conn.execute("DELETE FROM pending WHERE run_id = ?", (run_id,))
                conn.execute("DELETE FROM exported_spans WHERE run_id = ?", (run_id,))
            self._dead_letters(conn, change.dead, source, now)
            if change.watermark is not None:
                conn.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('watermark', ?)", (repr(change.watermark),)
                )

    def set_watermark(self, epoch: float) -> None:
        self.set_meta("watermark", repr(epoch))

    def _dead_letters(self, conn: sqlite3.Connection, dead: Sequence[DeadLetter], source: str, now: float) -> None:
        if not dead:
            return
        conn.executemany(
            "INSERT INTO dead_letters (at, source, run_id, span_id, reason, detail) VALUES (?, ?, ?, ?, ?, ?)",
            [(now, source, d.run_id, d.span_key, d.reason, d.detail) for d in dead],
        )
        conn.execute(
            "DELETE FROM dead_letters WHERE id <= (SELECT MAX(id) FROM dead_letters) - ?", (self.max_dead_letters,)
        )

    def dead_letters(self) -> list[tuple[str, str, str, str, str]]:
        """(source, run_id, span_id, reason, detail), oldest first."""
        with self._guarded() as conn:
            return [
                (str(a), str(b), str(c), str(d), str(e or ""))
                for a, b, c, d, e in conn.execute(
                    "SELECT source, run_id, span_id, reason, detail FROM dead_letters ORDER BY id"
                )
            ]

    # --- replay -----------------------------------------------------------------------------------
    def replay_progress(self, key: str, params: str) -> tuple[ReplayProgress, bool]:
        """The stored progress of replay ``key`` (created when new) and whether it is a resume."""
        now = time.time()
        with self.transaction() as conn:
            row = conn.execute(
                "SELECT cursor_rowid, cursor_span, exported, dead, done FROM replays WHERE key = ?", (key,)
            ).fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO replays (key, params, started_at, updated_at) VALUES (?, ?, ?, ?)",
                    (key, params, now, now),
                )
                return ReplayProgress(key, 0, None, 0, 0, False), False
        return ReplayProgress(key, int(row[0]), row[1], int(row[2]), int(row[3]), bool(row[4])), True

    def replay_commit(
        self, key: str, cursor_rowid: int, cursor_span: str | None, exported: int, dead: Sequence[DeadLetter]
    ) -> None:
        now = time.time()
        with self.transaction() as conn:
            conn.execute(
                "UPDATE replays SET cursor_rowid = ?, cursor_span = ?, exported = exported + ?, dead = dead + ?,"
                " updated_at = ? WHERE key = ?",
                (cursor_rowid, cursor_span, exported, len(dead), now, key),
            )
            self._dead_letters(conn, dead, "replay", now)

    def replay_done(self, key: str) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE replays SET done = 1, updated_at = ? WHERE key = ?", (time.time(), key))

    def replay_reset(self, key: str) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM replays WHERE key = ?", (key,))


def _identity(path: Path) -> tuple[int, int]:
    stat = os.stat(path)
    return stat.st_dev, stat.st_ino


@contextmanager
def _reading(path: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection to the state file; errors become :class:`StateError`."""
    try:
        conn = connect(path, readonly=True)
    except sqlite3.Error as exc:
        raise _state_error(path, exc) from exc
    try:
        yield conn
    except sqlite3.Error as exc:
        raise _state_error(path, exc) from exc
    finally:
        conn.close()


def read_exported_state(path: Path) -> tuple[str | None, str | None]:
    """(discovery cursor, source) from a state file, opened read-only by the caller's thread.

    Raises :class:`StateError` when the file exists but cannot be read as our state."""
    if not path.exists():
        return None, None
    with _reading(path) as conn:
        rows = dict(conn.execute("SELECT key, value FROM meta WHERE key IN ('runs_hwm', 'source')").fetchall())
    hwm = rows.get("runs_hwm")
    return (None if hwm is None else str(hwm)), rows.get("source")


def pending_among(path: Path, run_ids: Sequence[str]) -> set[str]:
    """Which of ``run_ids`` the state file still lists as pending (read-only, any thread)."""
    if not path.exists() or not run_ids:
        return set()
    with _reading(path) as conn:
        found: set[str] = set()
        for marks, chunk in in_chunks(run_ids):
            found.update(row[0] for row in conn.execute(f"SELECT run_id FROM pending WHERE run_id IN ({marks})", chunk))
        return found


def pending_pages(path: Path, page: int = 500) -> Iterator[list[tuple[str, int]]]:
    """(run_id, spans exported so far) of every pending run, page by page, read-only (any thread)."""
    if not path.exists():
        return
    with _reading(path) as conn:
        after, after_id = -1, ""
        while True:
            rows = conn.execute(
                "SELECT runs_rowid, run_id, exported FROM pending WHERE runs_rowid > ? OR (runs_rowid = ? AND"
                " run_id > ?) ORDER BY runs_rowid, run_id LIMIT ?",
                (after, after, after_id, page),
            ).fetchall()
            if not rows:
                return
            after, after_id = int(rows[-1][0]), str(rows[-1][1])
            yield [(str(run_id), int(exported)) for _, run_id, exported in rows]
