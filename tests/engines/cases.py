"""Per engine: its fixture DBs (written by the engine's own code) and where its own metrics live.

The contract suite (test_contract.py) runs the same checks over every case; adding an engine means
adding its cases here.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from support import LEGACY, SMALL, SMALL06, computed_at


@dataclass(frozen=True)
class Case:
    engine: str
    fixture: str  # file name in tests/fixtures
    now: datetime  # the clock the fixture's expected values were computed at
    layout: str  # what detection must say
    runs_family: str  # the engine's own gauge of top-level runs by raw status
    status_label: str
    stuck_family: str  # the engine's own gauge of stuck runs
    finished_family: str | None  # the engine's own counter of finished runs by raw status (None: none)
    duration_family: str | None  # the engine's own run-duration histogram
    corrupt: Callable[[Path], tuple[str, str]]  # spoils one row's status; returns (table, column)
    has_spans: bool  # the engine stores (or rebuilds) spans in this layout

    @property
    def id(self) -> str:
        return f"{self.engine}:{self.fixture}"


def _flujo_bad_status(db: Path) -> tuple[str, str]:
    """A BLOB where flujo writes a status word: what a foreign tool or a torn write could leave."""
    conn = sqlite3.connect(db)
    try:
        conn.execute("PRAGMA ignore_check_constraints = ON")  # flujo's CHECK would refuse it, a torn page not
        conn.execute("UPDATE workflow_state SET status = X'FF00' WHERE rowid = (SELECT MIN(rowid) FROM workflow_state)")
        conn.commit()
    finally:
        conn.close()
    return "workflow_state", "status"


def _flujo(fixture: str, now: datetime, layout: str, *, runs_table: bool) -> Case:
    return Case(
        engine="flujo",
        fixture=fixture,
        now=now,
        layout=layout,
        runs_family="flujo_workflows",
        status_label="status",
        stuck_family="flujo_workflows_stuck",
        finished_family="flujo_runs_finished_total" if runs_table else None,
        duration_family="flujo_run_duration_seconds" if runs_table else None,
        corrupt=_flujo_bad_status,
        has_spans=runs_table,
    )


CASES = (
    _flujo(SMALL, computed_at(SMALL), "0.4.35", runs_table=True),
    _flujo(SMALL06, computed_at(SMALL06), "0.6", runs_table=True),
    _flujo(LEGACY, computed_at(SMALL), "0.4.32-legacy", runs_table=False),
)
