"""Per engine: its fixture DBs (written by the engine's own code) and where its own metrics live.

The contract suite (test_contract.py) runs the same checks over every case; adding an engine means
adding its cases here.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from support import FIXTURES, LEGACY, SMALL, SMALL06, computed_at


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


PYNENC_FIXTURES = {  # fixture -> (layout, its table prefix)
    "pynenc/pynenc-0.4.0-sample.db": ("0.2.4+", "seed_app_d000b1ab__"),
    "pynenc/pynenc-0.1.1-sample.db": ("0.1.1-0.2.3", "seed_app_d000b1ab__"),
    "pynenc/pynenc-0.1.0-sample.db": ("0.1.0", ""),
}


def pynenc_expected(fixture: str) -> dict[str, Any]:
    with (FIXTURES / f"{fixture}.expected.json").open() as handle:
        data: dict[str, Any] = json.load(handle)
    return data


def _pynenc_bad_status(prefix: str) -> Callable[[Path], tuple[str, str]]:
    def corrupt(db: Path) -> tuple[str, str]:
        """A BLOB where pynenc writes the status of a top-level invocation (one no row names as parent)."""
        table = f"{prefix}orchestrator_invocations"
        conn = sqlite3.connect(db)
        try:
            conn.execute(
                f"UPDATE \"{table}\" SET status = X'FF00' WHERE invocation_id = (SELECT MIN(i.invocation_id) "
                f'FROM "{table}" i JOIN "{prefix}state_backend_invocations" s ON s.invocation_id = i.invocation_id '
                "WHERE s.parent_invocation_id IS NULL)"
            )
            conn.commit()
        finally:
            conn.close()
        return table, "status"

    return corrupt


def _pynenc(fixture: str) -> Case:
    layout, prefix = PYNENC_FIXTURES[fixture]
    return Case(
        engine="pynenc",
        fixture=fixture,
        now=datetime.fromisoformat(pynenc_expected(fixture)["computed_at_utc"]),
        layout=layout,
        runs_family="pynenc_runs",
        status_label="status",
        stuck_family="pynenc_invocations_stuck",
        finished_family="pynenc_runs_finished_total",
        duration_family="pynenc_run_duration_seconds",
        corrupt=_pynenc_bad_status(prefix),
        has_spans=True,  # rebuilt from the history
    )


SEEKNAL_FIXTURE = "seeknal/seeknal-2.13.0-sample.db"


def _seeknal_bad_status(db: Path) -> tuple[str, str]:
    """A BLOB where seeknal writes a node's status: its run's status can no longer be derived."""
    conn = sqlite3.connect(db)
    try:
        conn.execute("UPDATE node_state SET status = X'FF00' WHERE id = (SELECT MIN(id) FROM node_state)")
        conn.commit()
    finally:
        conn.close()
    return "node_state", "status"


def _seeknal(fixture: str) -> Case:
    return Case(
        engine="seeknal",
        fixture=fixture,
        now=datetime.fromisoformat(pynenc_expected(fixture)["computed_at_utc"]),
        layout="database",
        runs_family="seeknal_runs",
        status_label="status",
        stuck_family="seeknal_nodes_stuck",
        finished_family=None,  # executions are counted from the table; no finished-run cursor
        duration_family=None,
        corrupt=_seeknal_bad_status,
        has_spans=True,  # rebuilt from the node rows
    )


MARIANNE_WORKSPACE = "marianne/marianne-state-sample.db"
MARIANNE_REGISTRY = "marianne/marianne-daemon-state-sample.db"


def marianne_expected() -> dict[str, Any]:
    """The oracle's values for both Marianne files (one JSON, ``workspace`` and ``registry``)."""
    with (FIXTURES / f"{MARIANNE_WORKSPACE}.expected.json").open() as handle:
        data: dict[str, Any] = json.load(handle)
    return data


def _marianne_bad_status(db: Path) -> tuple[str, str]:
    """A BLOB where Marianne writes a job's status (either file's ``jobs`` table)."""
    conn = sqlite3.connect(db)
    try:
        conn.execute("UPDATE jobs SET status = X'FF00' WHERE rowid = (SELECT MIN(rowid) FROM jobs)")
        conn.commit()
    finally:
        conn.close()
    return "jobs", "status"


def _marianne(
    fixture: str, layout: str, runs_family: str, stuck_family: str, *, followed: bool, has_spans: bool
) -> Case:
    """``followed``: jobs seen finishing are followed in the workspace DBs read (the registry
    fixture names a workspace that is not on this machine)."""
    return Case(
        engine="marianne",
        fixture=fixture,
        now=datetime.fromisoformat(marianne_expected()["computed_at_utc"]),
        layout=layout,
        runs_family=runs_family,
        status_label="status",
        stuck_family=stuck_family,
        finished_family="marianne_jobs_finished_total" if followed else None,
        duration_family="marianne_job_duration_seconds" if followed else None,
        corrupt=_marianne_bad_status,
        has_spans=has_spans,  # rebuilt from a workspace's jobs, sheets and attempts; the registry has none
    )


CASES = (
    _flujo(SMALL, computed_at(SMALL), "0.4.35", runs_table=True),
    _flujo(SMALL06, computed_at(SMALL06), "0.6", runs_table=True),
    _flujo(LEGACY, computed_at(SMALL), "0.4.32-legacy", runs_table=False),
    *(_pynenc(fixture) for fixture in PYNENC_FIXTURES),
    _seeknal(SEEKNAL_FIXTURE),
    _marianne(
        MARIANNE_WORKSPACE, "workspace-v4", "marianne_jobs", "marianne_jobs_stuck", followed=True, has_spans=True
    ),
    _marianne(
        MARIANNE_REGISTRY,
        "registry",
        "marianne_conductor_jobs",
        "marianne_conductor_jobs_stuck",
        followed=False,
        has_spans=False,
    ),
)
