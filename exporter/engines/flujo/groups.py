"""``GROUP BY`` counts whose groups become label values: only valid text reaches the collectors.

A group whose value is NULL, a BLOB, a number or invalid UTF-8 is left out and counted as one bad
value per row (one :class:`BadValue` with ``count`` = the group's size, however many rows it holds).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from exporter.labels import label_text
from exporter.reader.badvalues import BadValue, shown
from exporter.reader.sql import Connection


def group_labels(
    values: Sequence[object], table: str, columns: Sequence[str], rows: int, bad: list[BadValue]
) -> tuple[str, ...] | None:
    """The group's label values, or ``None`` when any of them cannot be a label (each bad column
    is then recorded with the group's ``rows``)."""
    labels: list[str] = []
    for raw, column in zip(values, columns, strict=True):
        text = label_text(raw)
        if text is None:
            bad.append(BadValue(table, column, "", shown(raw), rows))
        else:
            labels.append(text)
    return tuple(labels) if len(labels) == len(columns) else None


def grouped_counts(
    conn: Connection, table: str, columns: Sequence[str], bad: list[BadValue], where: str = ""
) -> Counter[tuple[str, ...]]:
    """Rows of ``table`` per distinct ``columns`` (names come from code, never from the DB)."""
    selected = ", ".join(columns)
    positions = ", ".join(str(i) for i in range(1, len(columns) + 1))
    sql = f"SELECT {selected}, COUNT(*) FROM {table}{where} GROUP BY {positions}"
    counts: Counter[tuple[str, ...]] = Counter()
    for *values, n in conn.execute(sql):
        labels = group_labels(values, table, columns, int(n), bad)
        if labels is not None:
            counts[labels] += int(n)
    return counts


def value_counts(conn: Connection, table: str, column: str, bad: list[BadValue], where: str = "") -> Counter[str]:
    """Rows of ``table`` per distinct value of one column."""
    return Counter({value: n for (value,), n in grouped_counts(conn, table, (column,), bad, where).items()})
