"""Why a DB cannot be read right now; every message names the file (or the database's redacted URL)."""

from __future__ import annotations

from enum import StrEnum


class Problem(StrEnum):
    """Bounded reason codes, safe to use as a metric label."""

    MISSING = "missing"
    EMPTY = "empty"
    UNREADABLE = "unreadable"
    NOT_SQLITE = "not_sqlite"
    CORRUPT = "corrupt"
    LOCKED = "locked"
    UNKNOWN_LAYOUT = "unknown_layout"
    TIMEOUT = "timeout"
    IO_ERROR = "io_error"
    QUERY_ERROR = "query_error"
    UNREACHABLE = "unreachable"  # a Postgres server refusing or not answering connections
    AUTH_FAILED = "auth_failed"  # a Postgres server rejecting the role or its password
    INTERNAL = "internal_error"  # a bug or an unforeseen value: caught by the watchdog, never fatal


class DatabaseUnavailable(Exception):
    def __init__(self, problem: Problem, message: str) -> None:
        super().__init__(message)
        self.problem = problem
        self.message = message
