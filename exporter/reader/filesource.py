"""State kept in plain files (an engine's :class:`~exporter.engines.base.FileBackend`), served
through a private in-memory SQLite DB so that the engine's SQL runs unchanged.

* Read-only: each file is opened, read whole and closed; never locked, never written, and nothing
  is created next to it (the in-memory DB lives in this process only).
* Atomic: the writer replaces its files with a rename, so a read sees either the old file or the
  new one.  A file that is missing, truncated or not valid fails every session with its problem
  (the refresh keeps its last good values and /readyz names the file and why) until the files are
  valid again; a failed load replaces nothing.
* Cheap: the files are parsed again only when one's identity, size or mtime changed (or a file
  appeared or went); otherwise every session starts from a copy of the DB built last time.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

from exporter import engines
from exporter.engines.base import EngineSchema, FileBackend
from exporter.labels import decode_text
from exporter.reader.errors import DatabaseUnavailable, Problem

Signature = tuple[tuple[str, int, int, int, int], ...]


def is_file_source(path: Path) -> bool:
    """A directory or a ``.json`` file: not a SQLite DB (decided again at every session: the path
    may not exist yet when the daemon starts).  A path the daemon may not even look at is left to the
    SQLite reader, whose error names the unreadable directory."""
    return path.suffix.lower() == ".json" or _is_dir(path)


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:  # not even searchable: not ours to judge here
        return False


def backend_for(path: Path, wanted: str) -> FileBackend:
    candidates = engines.engines() if wanted == engines.AUTO else (engines.engine(wanted),)
    for candidate in candidates:
        if candidate.file_backend is not None:
            return candidate.file_backend
    raise DatabaseUnavailable(
        Problem.UNKNOWN_LAYOUT,
        f"{path}: a directory or .json file, and engine {wanted!r} has no file backend (give its SQLite state DB)",
    )


class FileSource:
    """The in-memory copy of one engine's files; thread-safe (the refresher and the tailer share it)."""

    def __init__(self, path: Path, backend: FileBackend) -> None:
        self.path = path
        self.backend = backend
        self._lock = threading.Lock()
        self._signature: Signature | None = None
        self._image: tuple[bytes, EngineSchema] | None = None
        self._sizes = 0

    def connect(self) -> tuple[sqlite3.Connection, EngineSchema]:
        """A fresh connection to a private copy of the current DB (a session may never see a later load)."""
        image, schema = self._current()
        conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        try:
            conn.deserialize(image)
            conn.text_factory = decode_text
            conn.execute("PRAGMA query_only = ON")
        except BaseException:
            conn.close()
            raise
        return conn, schema

    def file_sizes(self) -> int:
        return self._sizes

    def _current(self) -> tuple[bytes, EngineSchema]:
        with self._lock:
            files = list(self.backend.files(self.path))
            try:
                signature = tuple(_stat(path) for path in files)  # before reading: a later change reloads
            except DatabaseUnavailable as exc:
                if exc.problem is Problem.MISSING and _is_dir(self.path):
                    exc = DatabaseUnavailable(
                        exc.problem, f"{exc.message} (db.path {self.path} is a directory, read as a file backend's)"
                    )
                raise exc from None
            if self._image is None or signature != self._signature:
                contents = [(path, _read(path)) for path in files]
                self._image = _build(self.backend, contents)
                self._signature = signature
                self._sizes = sum(len(data) for _, data in contents)
            return self._image


def _stat(path: Path) -> tuple[str, int, int, int, int]:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise DatabaseUnavailable(Problem.MISSING, f"{path}: file does not exist") from None
    except OSError as exc:
        raise DatabaseUnavailable(Problem.UNREADABLE, f"{path}: cannot stat: {exc.strerror}") from None
    return str(path), info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns


def _read(path: Path) -> bytes:
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        raise DatabaseUnavailable(Problem.MISSING, f"{path}: file does not exist") from None
    except PermissionError:
        raise DatabaseUnavailable(
            Problem.UNREADABLE, f"{path}: permission denied (the exporter needs read access to the file)"
        ) from None
    except OSError as exc:
        raise DatabaseUnavailable(Problem.IO_ERROR, f"{path}: cannot read: {exc.strerror}") from None
    if not data:
        raise DatabaseUnavailable(Problem.EMPTY, f"{path}: file is empty (0 bytes)")
    return data


def _build(backend: FileBackend, contents: Sequence[tuple[Path, bytes]]) -> tuple[bytes, EngineSchema]:
    conn = sqlite3.connect(":memory:")  # Python's implicit transaction: one commit for every insert
    try:
        schema = backend.load(conn, contents)
        conn.commit()
        return conn.serialize(), schema
    finally:
        conn.close()
