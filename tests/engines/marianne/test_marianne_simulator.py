"""The Marianne-shaped writer (exporter/engines/marianne/simulator.py): Marianne's exact schema v4 and
registry tables, rows with the properties of the rows Marianne wrote in the fixtures, and the exporter
reading them as plain SQL says."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from engines.marianne.helpers import REGISTRY, WORKSPACE, by, expose, family
from support import FIXTURES, query

from exporter.engines.marianne.simulator import (
    REGISTRY_DB,
    SCENARIOS,
    Conductor,
    RegistryWriter,
    WorkspaceWriter,
)


def master(db: Path) -> list[tuple[Any, ...]]:
    return query(db, "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY rowid")


def conduct(tmp_path: Path, jobs: int, seed: int = 5) -> Conductor:
    conductor = Conductor(
        [WorkspaceWriter(tmp_path / "ws-a"), WorkspaceWriter(tmp_path / "ws-b")],
        RegistryWriter(tmp_path / "conductor" / REGISTRY_DB),
        seed=seed,
        speed=math.inf,
    )

    async def drive() -> None:
        for _ in range(jobs):
            await conductor.run_one()
        for scenario, _ in SCENARIOS:  # every scenario at least once, whatever the seed drew
            await conductor.run_one(scenario)

    asyncio.run(drive())
    assert conductor.registry is not None
    conductor.registry.close()
    return conductor


def test_tables_are_exactly_mariannes(tmp_path: Path) -> None:
    workspace = WorkspaceWriter(tmp_path / "ws")
    registry = RegistryWriter(tmp_path / REGISTRY_DB)
    registry.close()
    assert master(workspace.path) == master(FIXTURES / WORKSPACE)
    assert master(registry.path) == master(FIXTURES / REGISTRY)
    assert [v for v, _ in query(workspace.path, "SELECT * FROM schema_version")] == [1, 2, 3, 4]
    # SQLiteStateBackend keeps SQLite's rollback journal; JobRegistry.open() switches to WAL.
    assert query(workspace.path, "PRAGMA journal_mode") == [("delete",)]
    assert query(registry.path, "PRAGMA journal_mode") == [("wal",)]


def test_reopening_keeps_rows_and_migrates_nothing_twice(tmp_path: Path) -> None:
    conductor = conduct(tmp_path, 5)
    db = conductor.workspaces[0].path
    before = query(db, "SELECT * FROM jobs ORDER BY id"), query(db, "SELECT * FROM schema_version")
    WorkspaceWriter(tmp_path / "ws-a")
    RegistryWriter(tmp_path / "conductor" / REGISTRY_DB).close()
    assert (query(db, "SELECT * FROM jobs ORDER BY id"), query(db, "SELECT * FROM schema_version")) == before
    assert master(db) == master(FIXTURES / WORKSPACE)


def aware_utc(text: object) -> bool:
    return isinstance(text, str) and datetime.fromisoformat(text).utcoffset() == UTC.utcoffset(None)


def test_simulated_rows_are_shaped_like_mariannes(tmp_path: Path) -> None:
    conductor = conduct(tmp_path, 80)
    registry = tmp_path / "conductor" / REGISTRY_DB
    listed = {
        (job_id, workspace, status)
        for job_id, workspace, status in query(registry, "SELECT job_id, workspace, status FROM jobs")
    }
    assert {workspace for _, workspace, _ in listed} == {str(w.workspace) for w in conductor.workspaces}
    for workspace in conductor.workspaces:
        db = workspace.path
        times = query(db, "SELECT created_at, updated_at, started_at, completed_at FROM jobs")
        times += query(db, "SELECT started_at, completed_at, NULL, NULL FROM sheets")
        times += query(db, "SELECT executed_at, NULL, NULL, NULL FROM execution_history")
        assert all(aware_utc(t) for row in times for t in row if t is not None)
        # The registry lists every job of the workspace, saying queued where the workspace says pending.
        jobs = dict(query(db, "SELECT id, status FROM jobs"))
        assert {(j, s) for j, w, s in listed if w == str(workspace.workspace)} == {
            (j, "queued" if s == "pending" else s) for j, s in jobs.items()
        }
        # Every attempt a sheet counts is one execution_history row, except a lost job's unfinished one.
        sheets = query(db, "SELECT job_id, sheet_num, status, attempt_count FROM sheets")
        history = Counter((j, n) for j, n in query(db, "SELECT job_id, sheet_num FROM execution_history"))
        for job_id, n, status, count in sheets:
            unfinished = 1 if status == "in_progress" else 0  # a lost job's attempt never ends
            assert history[(job_id, n)] == count - unfinished, (job_id, n)
        assert query(db, "SELECT COUNT(*) FROM jobs WHERE status = 'running' AND pid IS NOT NULL") == [(0,)]
    statuses = Counter(s for _, _, s in listed)
    assert set(statuses) == {"completed", "failed", "paused", "cancelled", "running"}
    [(epochs,)] = query(registry, "SELECT COUNT(*) FROM jobs WHERE typeof(submitted_at) != 'real'")
    assert epochs == 0
    # Gate on status: a retried sheet that completed keeps its error category; exit code 0 can be a failure.
    db_rows = [
        row
        for w in conductor.workspaces
        for row in query(w.path, "SELECT status, error_category, exit_code FROM sheets")
    ]
    assert ("completed", "transient", 0) in db_rows
    assert ("failed", "validation", 0) in db_rows


def test_the_exporter_reads_the_simulated_workspace(tmp_path: Path) -> None:
    conductor = conduct(tmp_path, 40, seed=9)
    db = conductor.workspaces[1].path
    samples = expose(db, now=datetime.now(UTC))
    assert family(samples, "state_exporter_engine_info", engine="marianne", layout="workspace-v4") == {frozenset(): 1}
    jobs = by(samples, "marianne_jobs", "status")
    assert +jobs == Counter(dict(query(db, "SELECT status, COUNT(*) FROM jobs GROUP BY 1")))
    sheets = by(samples, "marianne_sheets", "status")
    assert +sheets == Counter(dict(query(db, "SELECT status, COUNT(*) FROM sheets GROUP BY 1")))
    [(retries,)] = query(db, "SELECT SUM(total_retry_count) FROM jobs")
    assert family(samples, "marianne_job_retries_total") == {frozenset(): retries}
    [(rows,)] = query(db, "SELECT COUNT(*) FROM execution_history")
    assert sum(by(samples, "marianne_execution_attempts_total", "outcome").values()) == rows


@pytest.mark.parametrize("seed", [1, 2])
def test_the_exporter_reads_the_simulated_registry(tmp_path: Path, seed: int) -> None:
    conduct(tmp_path, 30, seed=seed)
    db = tmp_path / "conductor" / REGISTRY_DB
    samples = expose(db, now=datetime.now(UTC))
    assert +by(samples, "marianne_conductor_jobs", "status") == Counter(
        dict(query(db, "SELECT status, COUNT(*) FROM jobs GROUP BY 1"))
    )
    [(orphans,)] = query(db, "SELECT COUNT(*) FROM jobs WHERE status IN ('queued', 'running')")
    assert family(samples, "marianne_conductor_orphaned_jobs") == {frozenset(): orphans}
    assert orphans > 0  # the lost jobs
