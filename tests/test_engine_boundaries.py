"""An engine is one folder: no Flujo table names in SQL outside ``exporter/engines/flujo/`` and the
Flujo backend ``exporter/state/``; the framework names no engine's tables, columns or statuses."""

from __future__ import annotations

import ast
import re
import sqlite3
from pathlib import Path

from support import ALL_FIXTURES, FIXTURES

ROOT = Path(__file__).parent.parent / "exporter"
FLUJO_HOMES = (ROOT / "engines" / "flujo", ROOT / "state")
SQL_TABLE = re.compile(r"\b(?:FROM|JOIN|INTO|UPDATE|TABLE)\s+([A-Za-z_][A-Za-z0-9_]*)", re.I)


def flujo_tables() -> set[str]:
    """The tables real flujo writes, read from the real fixtures (not from our own code)."""
    tables: set[str] = set()
    for name in ALL_FIXTURES:
        conn = sqlite3.connect(f"file:{FIXTURES / name}?mode=ro&immutable=1", uri=True)  # a pristine copy-only fixture
        try:
            tables |= {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            conn.close()
    return {t for t in tables if not t.startswith("sqlite_")}


def framework_modules() -> list[Path]:
    return [p for p in sorted(ROOT.rglob("*.py")) if not any(p.is_relative_to(home) for home in FLUJO_HOMES)]


def string_constants(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]


def test_fixture_tables_are_known() -> None:
    assert {"workflow_state", "runs", "steps", "spans"} <= flujo_tables()


def test_no_flujo_table_in_framework_sql() -> None:
    tables = flujo_tables()
    found = [
        f"{path.relative_to(ROOT.parent)}:{line}: {table}"
        for path in framework_modules()
        for line, text in string_constants(path)
        for table in SQL_TABLE.findall(text)
        if table in tables
    ]
    assert found == []


def test_no_flujo_only_identifier_in_framework_code() -> None:
    """Table and column names only Flujo uses (``workflow_state``, ``is_background_task``…) appear
    nowhere in the framework's code, not even in a string: docs name them in the Flujo package."""
    distinctive = {t for t in flujo_tables() if "_" in t} | {"is_background_task", "pipeline_name"}
    found = [
        f"{path.relative_to(ROOT.parent)}:{n}: {name}"
        for path in framework_modules()
        for n, line in enumerate(path.read_text().splitlines(), 1)
        for name in distinctive
        if re.search(rf"\b{name}\b", line)
    ]
    assert found == []
