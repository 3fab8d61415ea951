"""What Flujo's queries must say differently on SQLite and on Postgres; everything else is shared.

flujo writes the same tables on both backends (same names, columns and indexes), but with real types
on Postgres (``tests/fixtures/flujo-postgres/README.md``): ``TIMESTAMPTZ`` instead of ISO text,
``BOOLEAN is_background_task`` instead of 0/1, and no ``rowid``.  So one set of queries serves both
and only these fragments differ; the placeholder style (``?``) is the connection adapter's business
(:class:`exporter.reader.postgres.PostgresConnection`).  Every fragment is built from fixed names
chosen here, never from config or data.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from exporter.timeparse import text_lower_bound, text_upper_bound

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


SQLITE = Dialect("sqlite")
POSTGRES = Dialect("postgres")
