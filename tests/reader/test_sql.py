"""in_chunks: an IN (...) list of any length within SQLite's host-parameter limit."""

from __future__ import annotations

import sqlite3

import pytest

from exporter.reader.sql import IN_CLAUSE_LIMIT, in_chunks


def test_slices_with_matching_placeholders() -> None:
    chunks = list(in_chunks(list(range(7)), size=3))
    assert chunks == [("?,?,?", (0, 1, 2)), ("?,?,?", (3, 4, 5)), ("?", (6,))]


def test_no_values_no_statement() -> None:
    assert list(in_chunks([])) == []  # IN () would be a syntax error


def test_rejects_a_size_below_one() -> None:
    with pytest.raises(ValueError, match="positive"):
        list(in_chunks([1], size=0))


def test_stays_within_the_oldest_sqlite_default_limit() -> None:
    """SQLite before 3.32 allowed 999 host parameters: one IN list of 1200 ids fails there, chunks do not."""
    conn = sqlite3.connect(":memory:")
    conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
    conn.execute("CREATE TABLE runs (run_id TEXT PRIMARY KEY)")
    ids = [f"run_{n:04d}" for n in range(1200)]
    conn.executemany("INSERT INTO runs VALUES (?)", [(i,) for i in ids[::2]])
    with pytest.raises(sqlite3.OperationalError, match="too many SQL variables"):
        conn.execute(f"SELECT run_id FROM runs WHERE run_id IN ({','.join('?' * len(ids))})", ids)
    found = [
        row[0]
        for marks, chunk in in_chunks(ids)
        for row in conn.execute(f"SELECT run_id FROM runs WHERE run_id IN ({marks})", chunk)
    ]
    assert sorted(found) == ids[::2]
    assert max(len(chunk) for _, chunk in in_chunks(ids)) == IN_CLAUSE_LIMIT < 999
