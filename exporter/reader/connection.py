"""Open a user's Flujo DB strictly read-only and without leaving a trace on disk.

* ``mode=ro`` plus ``PRAGMA query_only``: SQLite itself refuses every write.
* A WAL database with no ``-wal`` file has no writer attached; opening it normally would create
  ``-wal``/``-shm`` files, so it is opened ``immutable=1`` instead (nothing is created or locked).
  A writer that attaches during such a read cannot be harmed; at worst this one read fails and is
  retried on the next refresh.
* With a writer attached, a reader only takes SQLite's shared locks (not file content) and reuses
  an existing read mark in ``-shm``; it never checkpoints.  Keep read transactions short: a long
  one pins the WAL and makes it grow.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from exporter.labels import decode_text
from exporter.reader.errors import DatabaseUnavailable, Problem

SQLITE_MAGIC = b"SQLite format 3\x00"
_WAL_VERSION_OFFSET = 18
PAGE_CACHE_KIB = 512  # header bytes 18/19 are 2 when the file is in WAL mode


def open_readonly(path: Path, *, busy_timeout: float = 1.0) -> sqlite3.Connection:
    """Open ``path`` read-only; raise :class:`DatabaseUnavailable` naming the file otherwise."""
    header = _read_header(path)
    wal_mode = len(header) > _WAL_VERSION_OFFSET and header[_WAL_VERSION_OFFSET] == 2
    immutable = wal_mode and not Path(f"{path}-wal").exists()
    uri = f"file:{quote(str(path.resolve()))}?mode=ro" + ("&immutable=1" if immutable else "")
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
        conn.text_factory = decode_text
        conn.execute("PRAGMA query_only = ON")
        # One pass per session over a file that may be gigabytes: a big page cache buys nothing.
        conn.execute(f"PRAGMA cache_size = -{PAGE_CACHE_KIB}")
    except sqlite3.Error as exc:
        raise classify_error(exc, path) from exc
    return conn


def _read_header(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            header = handle.read(100)
    except FileNotFoundError:
        raise DatabaseUnavailable(Problem.MISSING, f"{path}: database file does not exist") from None
    except IsADirectoryError:
        raise DatabaseUnavailable(Problem.UNREADABLE, f"{path}: is a directory, not a database file") from None
    except PermissionError:
        raise DatabaseUnavailable(
            Problem.UNREADABLE, f"{path}: permission denied (the exporter needs read access)"
        ) from None
    except OSError as exc:
        raise DatabaseUnavailable(Problem.UNREADABLE, f"{path}: cannot read: {exc.strerror}") from None
    if not header:
        raise DatabaseUnavailable(Problem.EMPTY, f"{path}: file is empty (0 bytes), no Flujo tables yet")
    if not header.startswith(SQLITE_MAGIC):
        raise DatabaseUnavailable(Problem.NOT_SQLITE, f"{path}: not a SQLite database (bad file header)")
    return header


def classify_error(exc: sqlite3.Error, path: Path) -> DatabaseUnavailable:
    text = str(exc)
    lowered = text.lower()
    if "locked" in lowered or "busy" in lowered:
        problem = Problem.LOCKED
    elif "interrupted" in lowered:
        problem = Problem.TIMEOUT
    elif "not a database" in lowered or "malformed" in lowered or "corrupt" in lowered:
        problem = Problem.CORRUPT
    elif "unable to open" in lowered:
        problem = Problem.UNREADABLE
    else:
        problem = Problem.QUERY_ERROR
    return DatabaseUnavailable(problem, f"{path}: {text}")


@contextmanager
def read_transaction(conn: sqlite3.Connection, path: Path, *, timeout: float) -> Iterator[sqlite3.Connection]:
    """One short, consistent read transaction, interrupted after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
    try:
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("ROLLBACK")
    except sqlite3.Error as exc:
        raise classify_error(exc, path) from exc
    finally:
        conn.set_progress_handler(None, 0)


def file_sizes(path: Path) -> tuple[int, int]:
    """Size in bytes of the DB file and of its WAL (0 when absent)."""

    def size(candidate: str) -> int:
        try:
            return os.stat(candidate).st_size
        except OSError:
            return 0

    return size(str(path)), size(f"{path}-wal")
