"""Open a user's DB strictly read-only, through SQLite alone.

* ``mode=ro`` plus ``PRAGMA query_only``: SQLite itself refuses every write.
* The file is never opened with plain file I/O.  POSIX advisory locks belong to the process and
  closing *any* descriptor of a file drops *all* of them, including the locks of a write job's
  connection in this same process; another process could then checkpoint and delete the WAL under
  a live writer and corrupt the DB ("How To Corrupt An SQLite Database File", 2.2).  Only ``os.stat``
  (no descriptor) is used to explain a missing, empty or unreadable file.
* Never ``immutable=1``: a live DB can change at any moment, and an immutable read of a file that a
  writer changes meanwhile reads torn pages, or wrong numbers without any error.  On a WAL database
  SQLite therefore creates the standard ``-wal`` and ``-shm`` files when they are absent, as every
  reader does; it gives them the DB file's permissions and, when the exporter runs as root, its
  owner.  A read-only connection never checkpoints, so it never changes the DB's content.
* Keep read transactions short: a long one pins the WAL and makes it grow.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
import time
from pathlib import Path
from urllib.parse import quote

from exporter.labels import decode_text
from exporter.reader.errors import DatabaseUnavailable, Problem

PAGE_CACHE_KIB = 512


def open_readonly(path: Path, *, busy_timeout: float = 1.0) -> sqlite3.Connection:
    """Open ``path`` read-only; raise :class:`DatabaseUnavailable` naming the file otherwise."""
    check_file(path)
    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise classify_error(exc, path) from exc
    try:
        conn.text_factory = decode_text
        conn.execute("PRAGMA query_only = ON")
        # One pass per session over a file that may be gigabytes: a big page cache buys nothing.
        conn.execute(f"PRAGMA cache_size = -{PAGE_CACHE_KIB}")
        # SQLite reads the header lazily: make a bad header fail here, with its own reason.
        conn.execute("PRAGMA schema_version").fetchone()
    except sqlite3.Error as exc:
        conn.close()
        raise classify_error(exc, path) from exc
    return conn


def check_file(path: Path) -> os.stat_result:
    """What ``stat`` alone can say about the file (it opens no descriptor)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise DatabaseUnavailable(Problem.MISSING, f"{path}: database file does not exist") from None
    except PermissionError:
        raise DatabaseUnavailable(
            Problem.UNREADABLE, f"{path}: permission denied on a parent directory (the exporter needs search access)"
        ) from None
    except OSError as exc:
        raise DatabaseUnavailable(Problem.UNREADABLE, f"{path}: cannot stat: {exc.strerror}") from None
    if stat.S_ISDIR(info.st_mode):
        raise DatabaseUnavailable(Problem.UNREADABLE, f"{path}: is a directory, not a database file")
    if info.st_size == 0:
        raise DatabaseUnavailable(Problem.EMPTY, f"{path}: file is empty (0 bytes), no tables yet")
    return info


def file_identity(path: Path) -> tuple[int, int]:
    """(device, inode): changes when the file is deleted and recreated or swapped by a rename."""
    info = check_file(path)
    return info.st_dev, info.st_ino


# SQLite's primary result codes (``sqlite_errorname`` without the extended suffix) -> reason.
_BY_CODE = {
    "SQLITE_BUSY": Problem.LOCKED,
    "SQLITE_LOCKED": Problem.LOCKED,
    "SQLITE_INTERRUPT": Problem.TIMEOUT,
    "SQLITE_NOTADB": Problem.NOT_SQLITE,
    "SQLITE_CORRUPT": Problem.CORRUPT,
    "SQLITE_CANTOPEN": Problem.UNREADABLE,
    "SQLITE_PERM": Problem.UNREADABLE,
    "SQLITE_AUTH": Problem.UNREADABLE,
    "SQLITE_READONLY": Problem.UNREADABLE,
    "SQLITE_IOERR": Problem.IO_ERROR,
    "SQLITE_FULL": Problem.IO_ERROR,
    "SQLITE_NOMEM": Problem.IO_ERROR,
}
# A file shorter than its header or its WAL index says: a truncated DB or -wal file.
_TRUNCATED = frozenset({"SQLITE_IOERR_SHORT_READ", "SQLITE_CORRUPT_VTAB"})


def classify_error(exc: sqlite3.Error, path: Path) -> DatabaseUnavailable:
    """A bounded reason for a SQLite error, from its result code (message text as a fallback)."""
    name = str(getattr(exc, "sqlite_errorname", "") or "")
    text = str(exc)
    if name in _TRUNCATED:
        return DatabaseUnavailable(Problem.CORRUPT, f"{path}: {text} (a truncated database or -wal file)")
    cannot_create_shm = name.startswith("SQLITE_CANTOPEN") and os.access(path, os.R_OK) and not _shm_possible(path)
    if name == "SQLITE_READONLY_DIRECTORY" or cannot_create_shm:
        return DatabaseUnavailable(
            Problem.UNREADABLE,
            f"{path}: {text}: the DB is in WAL mode and its -shm file is absent; SQLite must create the -wal "
            "and -shm files next to the DB and the directory is read-only for the exporter (give it write access "
            "to the directory, as the app's user or group: see the README's data-safety section)",
        )
    primary = "_".join(name.split("_")[:2])
    problem = _BY_CODE.get(primary) or _by_message(text.lower())
    if problem is Problem.UNREADABLE and not os.access(path, os.R_OK):
        text += " (permission denied: the exporter needs read access to the file)"
    elif problem is Problem.NOT_SQLITE:
        text = f"not a SQLite database ({text}: bad file header)"
    return DatabaseUnavailable(problem, f"{path}: {text}")


def _shm_possible(path: Path) -> bool:
    """Whether SQLite could use or create the -shm file (stat and access only: no descriptor)."""
    shm = Path(f"{path}-shm")
    return os.access(shm, os.R_OK) if shm.exists() else os.access(path.parent, os.W_OK | os.X_OK)


def _by_message(lowered: str) -> Problem:
    if "locked" in lowered or "busy" in lowered:
        return Problem.LOCKED
    if "interrupted" in lowered:
        return Problem.TIMEOUT
    if "not a database" in lowered:
        return Problem.NOT_SQLITE
    if "malformed" in lowered or "corrupt" in lowered:
        return Problem.CORRUPT
    if "unable to open" in lowered:
        return Problem.UNREADABLE
    if "disk i/o" in lowered:
        return Problem.IO_ERROR
    return Problem.QUERY_ERROR


def begin_read(conn: sqlite3.Connection, path: Path) -> None:
    """Start the read transaction; its first read (by the caller) takes SQLite's shared lock."""
    try:
        conn.execute("BEGIN")
    except sqlite3.Error as exc:
        raise classify_error(exc, path) from exc


def limit_queries(conn: sqlite3.Connection, *, timeout: float, halt: threading.Event) -> None:
    """Interrupt any statement running past ``timeout`` seconds from now, or once ``halt`` is set."""
    deadline = time.monotonic() + timeout
    conn.set_progress_handler(lambda: int(halt.is_set() or time.monotonic() > deadline), 10_000)


def end_read(conn: sqlite3.Connection) -> None:
    """Roll back and close.  SQLite ends the transaction itself on some errors (a short read of a
    truncated -wal): a ROLLBACK then would fail and hide the real error."""
    try:
        conn.set_progress_handler(None, 0)
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    finally:
        conn.close()


def file_sizes(path: Path) -> tuple[int, int]:
    """Size in bytes of the DB file and of its WAL (0 when absent)."""

    def size(candidate: str) -> int:
        try:
            return os.stat(candidate).st_size
        except OSError:
            return 0

    return size(str(path)), size(f"{path}-wal")


def read_catalogue(conn: sqlite3.Connection, path: Path) -> dict[str, frozenset[str]]:
    """Every table of the file with its columns: what engines recognise a file by."""
    try:
        tables = [
            row[0]
            for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        ]
        return {
            table: frozenset(row[1] for row in conn.execute("SELECT * FROM pragma_table_info(?)", (table,)))
            for table in tables
        }
    except sqlite3.DatabaseError as exc:
        raise classify_error(exc, path) from exc
