"""Errors raised by the state backend."""

from __future__ import annotations

from pathlib import Path


class StateBackendError(Exception):
    """The state DB cannot be used: not a SQLite file, a foreign schema, or a failed SQL operation.

    The message always names the database file.  ``path`` holds it for programmatic use.
    """

    def __init__(self, message: str, *, path: Path | str | None = None) -> None:
        super().__init__(message)
        self.path = None if path is None else Path(path)
