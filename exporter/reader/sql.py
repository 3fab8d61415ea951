"""SQL-building helpers shared by every engine's queries."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class Rows(Protocol):
    """The part of a DB-API cursor the engines' queries use: iterate, or fetch one or all rows."""

    def __iter__(self) -> Iterator[Any]: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Connection(Protocol):
    """The part of ``sqlite3.Connection`` the engines' queries use, with ``?`` placeholders:
    ``sqlite3.Connection`` itself, or :class:`exporter.reader.postgres.PostgresConnection`."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Rows: ...


# Bound parameters per ``IN (...)``.  SQLite refuses a statement with more host parameters than
# SQLITE_MAX_VARIABLE_NUMBER: 999 before 3.32, 32766 since, and builds may lower it.  500 stays under
# the old default with room for the statement's other parameters.
IN_CLAUSE_LIMIT = 500


def in_chunks(values: Sequence[T], size: int = IN_CLAUSE_LIMIT) -> Iterator[tuple[str, tuple[T, ...]]]:
    """``values`` in slices of at most ``size``, each as (``"?,?,…"`` for ``IN (...)``, the parameters).

    Nothing for no values: ``IN ()`` is a syntax error in SQLite.
    """
    if size < 1:
        raise ValueError(f"chunk size must be positive, got {size}")
    for start in range(0, len(values), size):
        chunk = tuple(values[start : start + size])
        yield ",".join("?" * len(chunk)), chunk
