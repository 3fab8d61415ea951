import sqlite3
from pathlib import Path

import pytest
from support import FIXTURES, LEGACY, SMALL, SMALL06, make_hybrid

from exporter.engines.flujo.layout import Capability, Layout
from exporter.reader import DatabaseUnavailable, Problem, StateReader
from exporter.timeparse import UTC


def reader(path: Path) -> StateReader:
    return StateReader(path, naive_timezone=UTC)


@pytest.mark.parametrize(
    ("name", "layout", "capabilities"),
    [
        (LEGACY, Layout.LEGACY_0432, set()),
        (SMALL, Layout.V0435, {Capability.RUNS, Capability.STEPS, Capability.SPANS}),
        (
            SMALL06,
            Layout.V06,
            {
                Capability.RUNS,
                Capability.STEPS,
                Capability.SPANS,
                Capability.BACKGROUND_TASKS,
                Capability.TRACES,
                Capability.EVALUATIONS,
                Capability.SYSTEM_STATE,
            },
        ),
    ],
)
def test_fixture_layouts(fixture_copy, name: str, layout: Layout, capabilities: set[Capability]) -> None:
    schema = reader(fixture_copy(name)).schema()
    assert schema.layout is layout
    assert schema.capabilities == capabilities


def test_hybrid_left_by_06_on_a_0435_file(fixture_copy) -> None:
    db = fixture_copy(SMALL)
    make_hybrid(db)
    schema = reader(db).schema()
    assert schema.layout is Layout.HYBRID
    assert Capability.BACKGROUND_TASKS in schema.capabilities
    assert "COALESCE" in schema.run_start_expr  # both columns exist: the first non-empty one wins


def _starts(db: Path, schema_sql: str) -> list[tuple[object, object, object]]:
    """(start_time or None, created_at or None, the shared run-start expression) per run."""
    conn = sqlite3.connect(db)
    try:
        cols = {row[1] for row in conn.execute("PRAGMA table_info(runs)")}
        pick = [c if c in cols else "NULL" for c in ("start_time", "created_at")]
        return conn.execute(f"SELECT {pick[0]}, {pick[1]}, {schema_sql} FROM runs r ORDER BY rowid").fetchall()
    finally:
        conn.close()


def test_run_start_order_on_real_files(fixture_copy) -> None:
    """Why start_time comes first: in the hybrid 0.6 leaves, every row 0.4.35 wrote keeps its real start
    in start_time while the appended created_at holds '' (never back-filled); 0.6 files have created_at
    only, 0.4.35 files start_time only.  One definition gives the real start on all three."""
    small = fixture_copy(SMALL)
    plain = _starts(small, reader(small).schema().run_start_sql("r"))
    make_hybrid(small)
    schema = reader(small).schema()
    assert schema.run_start_columns == ("start_time", "created_at")
    hybrid = _starts(small, schema.run_start_sql("r"))
    assert len(hybrid) == 60
    assert {created for _, created, _ in hybrid} == {""}  # what the hybrid holds in created_at
    assert all(isinstance(start, str) and start.startswith("20") for start, _, _ in hybrid)
    assert [expr for _, _, expr in hybrid] == [start for start, _, _ in hybrid] == [e for _, _, e in plain]
    small06 = fixture_copy(SMALL06)
    schema06 = reader(small06).schema()
    assert schema06.run_start_columns == ("created_at",)
    rows06 = _starts(small06, schema06.run_start_sql("r"))
    assert rows06 and all(expr == created and created for _, created, expr in rows06)


def test_schema_dumps_from_real_flujo(tmp_path: Path) -> None:
    """Every .schema dump shipped with the fixtures is classified (legacy migrated by 0.4.35 too)."""
    expected = {
        "v0.4.32-legacy.sql": Layout.LEGACY_0432,
        "v0.4.32-migrated-by-v0.4.35.sql": Layout.V0435,
        "v0.4.35.sql": Layout.V0435,
        "v0.6.11-github-fresh.sql": Layout.V06,
        "v0.6.11-github-upgraded-from-v0.4.35.sql": Layout.HYBRID,
    }
    for dump, layout in expected.items():
        db = tmp_path / f"{dump}.db"
        conn = sqlite3.connect(db)
        conn.executescript(
            (FIXTURES / "schemas" / dump).read_text().replace("CREATE TABLE sqlite_sequence(name,seq);", "")
        )
        conn.close()
        assert reader(db).schema().layout is layout, dump


def test_sqlite_file_of_another_application(tmp_path: Path) -> None:
    db = tmp_path / "other.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
    conn.close()
    with pytest.raises(DatabaseUnavailable) as info:
        reader(db).schema()
    assert info.value.problem is Problem.UNKNOWN_LAYOUT
    assert str(db) in info.value.message and "invoices" in info.value.message


def test_workflow_state_missing_required_columns(tmp_path: Path) -> None:
    db = tmp_path / "odd.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE workflow_state (run_id TEXT, status TEXT)")
    conn.close()
    with pytest.raises(DatabaseUnavailable, match=r"lacks column.*created_at"):
        reader(db).schema()
