"""The seeknal-shaped writer (exporter/engines/seeknal/simulator.py): seeknal 2.13.0's exact schema, rows
with the properties of the rows seeknal wrote in the fixture, and the exporter (metrics and traces)
reading them as plain SQL says."""

from __future__ import annotations

import asyncio
import json
import math
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from engines import scrape
from engines.cases import SEEKNAL_FIXTURE
from support import FIXTURES, query
from traces.conftest import make_config
from traces.receiver import Receiver

from exporter.engines.seeknal.simulator import DAG, SCENARIOS, Project, SeeknalWriter
from exporter.reader import StateReader
from exporter.traces import replay

BERLIN = ZoneInfo("Europe/Berlin")
START = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)


class SteppingClock:
    """The writer's clock: 250 ms later at every reading (the runs are written without pausing)."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=250)
        return self.now


def simulate(tmp_path: Path, runs: int) -> tuple[Path, SteppingClock]:
    db = tmp_path / "state.db"
    writer = SeeknalWriter(db, durable=False)
    clock = SteppingClock()
    project = Project(writer, tz=BERLIN, seed=7, speed=math.inf, clock=clock)

    async def drive() -> None:
        for _ in range(runs):
            await project.run_one()
        for scenario, _ in SCENARIOS:  # every scenario at least once, whatever the seed drew
            await project.run_one(scenario)

    asyncio.run(drive())
    writer.close()
    return db, clock


def master(db: Path) -> list[tuple[Any, ...]]:
    """The catalogue, sorted: the fixture was VACUUMed (which puts every table before the indexes), the
    simulator's is in _init_schema's order."""
    return sorted(query(db, "SELECT type, name, tbl_name, COALESCE(sql, '') FROM sqlite_master"))


def test_tables_are_exactly_seeknals(tmp_path: Path) -> None:
    db, _ = simulate(tmp_path, 0)
    assert master(db) == master(FIXTURES / SEEKNAL_FIXTURE)
    assert query(db, "PRAGMA journal_mode") == [("delete",)]


def test_rows_have_seeknals_properties(tmp_path: Path) -> None:
    db, _ = simulate(tmp_path, 30)
    runs = dict(query(db, "SELECT run_id, last_run FROM run_state"))
    assert len(runs) == 30 + len(SCENARIOS)
    rows = query(db, "SELECT run_id, node_id, last_run, status, hash, metadata_json, fingerprint_json FROM node_state")
    assert {node for _, node, *_ in rows} == set(DAG)
    statuses = Counter(status for *_, status, _, _, _ in rows)
    assert set(statuses) == {"success", "failed", "skipped", "running", "pending"}
    # Naive local text (no offset), runs' ids their start in the writer's zone.
    for run_id, last_run in runs.items():
        started = datetime.fromisoformat(last_run)
        assert started.tzinfo is None and run_id.startswith(started.strftime("%Y%m%d_%H%M%S"))
    carried = [r for r in rows if r[3] in ("success", "failed") and r[2] < runs[r[0]]]
    assert carried, "unchanged nodes keep their row from an earlier run"
    for run_id, node, last_run, status, node_hash, metadata, fingerprint in rows:
        if status == "failed":
            assert json.loads(metadata)["error"].startswith(f"Execution failed for {node}")
        if status == "skipped":
            assert json.loads(metadata) == {"reason": "upstream failed"}
        if status == "pending":
            assert (last_run, node_hash, metadata) == ("", "", None)
        if status == "success" and last_run >= runs[run_id]:
            assert json.loads(fingerprint)["content_hash"] == node_hash
    # The crashed run: its node running, its lock never released; every other lock released.
    running = query(db, "SELECT run_id || ':' || node_id FROM node_state WHERE status = 'running'")
    assert running and sorted(query(db, "SELECT lock_key FROM backend_locks")) == sorted(running)


def test_the_exporter_reads_what_sql_says(tmp_path: Path) -> None:
    db, clock = simulate(tmp_path, 30)
    samples = scrape.expose(db, clock.now, tz=BERLIN)
    runs = query(db, "SELECT run_id FROM run_state")
    assert sum(scrape.by(samples, "seeknal_runs", "status").values()) == len(runs)
    crashed = query(db, "SELECT COUNT(DISTINCT run_id) FROM node_state WHERE status = 'running'")[0][0]
    assert scrape.by(samples, "seeknal_runs", "status")["running"] == crashed >= 1
    executions = query(
        db, "SELECT COUNT(DISTINCT node_id || '|' || last_run) FROM node_state WHERE status IN ('success', 'failed')"
    )[0][0]
    assert sum(scrape.by(samples, "seeknal_node_executions_total", "node").values()) == executions
    assert samples[("seeknal_locks_held", frozenset())] == crashed  # each crashed run's


def test_every_run_is_a_trace(tmp_path: Path) -> None:
    db, _ = simulate(tmp_path, 10)
    with Receiver() as receiver:
        result = replay(make_config(receiver), StateReader(db, naive_timezone=BERLIN), tmp_path / "replay.sqlite")
        assert result.complete and result.spans_dead_lettered == 0
        runs = query(db, "SELECT COUNT(*) FROM run_state")[0][0]
        assert result.runs == runs
        roots = [s for s in receiver.spans if not s.parent_span_id]
        assert len(roots) == len({s.trace_id for s in receiver.spans}) == runs
        failed = [s for s in receiver.spans if s.status_code == 2 and s.parent_span_id]
        assert failed and all(s.status_message.startswith(f"Execution failed for {s.name}") for s in failed)
        assert set(receiver.keys.values()) == {1}
