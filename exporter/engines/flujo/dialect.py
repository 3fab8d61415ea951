"""What Flujo's queries must say differently on SQLite and on Postgres; everything else is shared.

flujo writes the same tables on both backends (same names, columns and indexes), but with real types
on Postgres (``tests/fixtures/flujo-postgres/README.md``): ``TIMESTAMPTZ`` instead of ISO text,
``BOOLEAN is_background_task`` instead of 0/1, and no ``rowid``.  So one set of queries serves both
and only these fragments differ; the placeholder style (``?``) is the connection adapter's business
(:class:`exporter.reader.postgres.PostgresConnection`).  Every fragment is built from fixed names
chosen here, never from config or data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from exporter.timeparse import iso_utc, text_lower_bound, text_upper_bound

# A row's identity for caches and cursors: SQLite's rowid, or a Postgres key (run_id text, SERIAL id).
RowKey = int | str


@dataclass(frozen=True)
class Dialect:
    name: Literal["sqlite", "postgres"]

    @property
    def has_rowid(self) -> bool:
        """SQLite's rowid grows with every insert (flujo 0.4's ``INSERT OR REPLACE`` gives a saved row
        a new one): the finished-run cursor and the 0.4.35 active-row cache follow it.  Postgres has
        no such column; see :mod:`exporter.engines.flujo.tracking` for what it uses instead."""
        return self.name == "sqlite"

    def key(self, table: str, alias: str = "") -> str:
        """The column naming one row of ``table``.  On Postgres: the primary keys flujo declares
        (``run_id`` of the state and run tables, the ``SERIAL`` ``id`` of steps and spans)."""
        prefix = f"{alias}." if alias else ""
        if self.has_rowid:
            return f"{prefix}rowid"
        return f"{prefix}{'id' if table in ('steps', 'spans') else 'run_id'}"

    def is_true(self, expression: str) -> str:
        """``expression`` (a flag column or a condition, possibly NULL) as a condition, NULL false.
        SQLite stores the flag as 0/1; Postgres has a real BOOLEAN, which ``COALESCE(x, 0)`` rejects."""
        if self.has_rowid:
            return f"COALESCE({expression}, 0) != 0"
        return f"COALESCE({expression}, FALSE)"

    def nonempty(self, column: str) -> str:
        """``column`` with flujo's empty-text placeholder read as NULL (0.6 adds ``runs.created_at``
        with DEFAULT '' to old SQLite files).  A typed Postgres timestamp is never '' and ``NULLIF``
        with '' would fail to cast."""
        return f"NULLIF({column}, '')" if self.has_rowid else column

    def lower_bound(self, instant: datetime) -> object:
        """A parameter for ``time_column >= ?`` that keeps every row at or after ``instant``.  SQLite
        compares text, so the bound is a widened text prefix and Python checks exact instants after;
        Postgres compares real instants, so the bound is the instant itself (Python's check agrees)."""
        return text_lower_bound(instant) if self.has_rowid else instant

    def upper_bound(self, instant: datetime) -> object:
        """A parameter for ``time_column < ?`` that keeps every row before ``instant``."""
        return text_upper_bound(instant) if self.has_rowid else instant

    def not_text(self, column: str) -> str:
        """``column``, with NULL turned into a non-text value (a BLOB) that the label check rejects as
        a bad value, where NULL itself would mean "no row".  Postgres declares the column NOT NULL
        and cannot mix types in one expression: the column as it is."""
        return f"COALESCE({column}, X'')" if self.has_rowid else column

    @property
    def not_indexed(self) -> str:
        """SQLite's hint to scan a table instead of walking an index (the seed's one pass)."""
        return " NOT INDEXED" if self.has_rowid else ""

    @property
    def outer_first_join(self) -> str:
        """A join keeping its left table as the outer loop: SQLite's ``CROSS JOIN`` does that; on
        Postgres ``CROSS JOIN`` takes no ``ON`` and the planner picks the order from statistics."""
        return "CROSS JOIN" if self.has_rowid else "JOIN"

    # -- the write jobs (exporter.engines.flujo.jobs) -------------------------------------------------

    @property
    def resave_column(self) -> str:
        """The ``workflow_state`` column that changes whenever the application re-saves a row, so that
        a guarded delete can tell "still as read".  SQLite's ``INSERT OR REPLACE`` re-stamps
        ``created_at`` (and gives a new rowid); flujo's Postgres upsert leaves ``created_at`` out of
        its ``DO UPDATE`` list and only moves ``updated_at``."""
        return "created_at" if self.has_rowid else "updated_at"

    def same_as(self, column: str) -> str:
        """``column`` equal to a parameter, NULL equal to NULL (``IS`` on SQLite; Postgres's ``IS``
        only takes NULL/TRUE/FALSE)."""
        return f"{column} IS ?" if self.has_rowid else f"{column} IS NOT DISTINCT FROM ?"

    def still_as_read(self, key: str, column: str, rows: Sequence[tuple[object, object]]) -> tuple[str, list[object]]:
        """A condition (and its parameters) matching the rows ``(key, column value)`` still as read.
        SQLite keeps its two set-based ``IN`` lists (a replaced row has a new rowid, a value nobody
        read before); Postgres matches the pairs exactly, its key being the run_id that a re-save
        keeps."""
        if self.has_rowid:
            marks = ", ".join("?" * len(rows))
            return f"{key} IN ({marks}) AND {column} IN ({marks})", [k for k, _ in rows] + [v for _, v in rows]
        pairs = ", ".join(["(?, ?)"] * len(rows))
        return f"({key}, {column}) IN ({pairs})", [item for row in rows for item in row]

    @property
    def skip_locked(self) -> str:
        """A suffix for the write jobs' ``SELECT`` of the rows they are about to change.  On Postgres
        the rows are locked, and rows the application is writing right now are skipped (retried at
        the next run) instead of waited for; SQLite's ``BEGIN IMMEDIATE`` already excludes every
        other writer."""
        return "" if self.has_rowid else " FOR UPDATE SKIP LOCKED"

    def timestamp(self, instant: datetime) -> object:
        """A parameter writing ``instant`` into a timestamp column: the aware UTC ISO text flujo 0.6
        writes on SQLite, the instant itself for a Postgres ``TIMESTAMPTZ``."""
        return iso_utc(instant) if self.has_rowid else instant


SQLITE = Dialect("sqlite")
POSTGRES = Dialect("postgres")
