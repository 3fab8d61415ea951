"""Stored values the reader could not interpret: reported and counted, never fatal.

One bad row must never stop a refresh, a job or a scrape: the row is skipped, counted in
``bad_values_total{table,column}`` and logged (a few per refresh), and everything else is served.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BadValue:
    """A stored value the reader could not interpret.  ``run_id`` is for logs only, never a label.

    ``count`` > 1 stands for a whole group of a ``GROUP BY`` query (``count`` rows holding the same
    value, no single run_id), so that a million bad rows cost one object."""

    table: str
    column: str
    run_id: str
    value: str
    count: int = 1

    def describe(self) -> str:
        if self.count != 1 or not self.run_id:
            return f"{self.table}.{self.column} of {self.count} row(s): cannot interpret {self.value!r}"
        return f"{self.table}.{self.column} of run_id {self.run_id!r}: cannot interpret {self.value!r}"


def shown(raw: object, limit: int = 80) -> str:
    """A bounded, printable rendering of a stored value for logs and errors."""
    text = repr(raw)
    return text if len(text) <= limit else f"{text[:limit]}…({len(text)} chars)"
