"""The pynenc-shaped writer (exporter/engines/pynenc/simulator.py): pynenc 0.4.0's exact tables, and
rows with every property of the rows pynenc itself wrote in the fixtures."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime
from pathlib import Path

import pytest
from engines.cases import PYNENC_FIXTURES
from engines.pynenc.helpers import by, current_statuses, expose, invariants, master, nonzero, query
from support import FIXTURES

from exporter.engines.pynenc.layout import table_prefix
from exporter.engines.pynenc.simulator import PynencWriter, Simulator

V040 = "pynenc/pynenc-0.4.0-sample.db"


def simulate(db: Path, app_id: str, calls: int, seed: int = 7) -> Simulator:
    simulator = Simulator(PynencWriter(db, app_id), seed=seed, speed=math.inf)

    async def drive() -> None:
        for _ in range(calls):
            await simulator.run_one()

    asyncio.run(drive())
    simulator.writer.close()
    return simulator


@pytest.mark.parametrize("app_id", ["seed_app", "billing-prod", "2nd.reports"])
def test_tables_are_exactly_pynenc_040s(tmp_path: Path, app_id: str) -> None:
    db = tmp_path / "app.db"
    PynencWriter(db, app_id).close()
    assert table_prefix(app_id) in {"seed_app_d000b1ab__", "billing_prod_5ec36bb9__", "_2nd_reports_8ba25a6c__"}
    assert master(db, table_prefix(app_id)) == master(FIXTURES / V040, PYNENC_FIXTURES[V040][1])


def test_reopening_an_app_keeps_its_rows(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    simulate(db, "seed_app", 5)
    before = query(db, 'SELECT COUNT(*) FROM "seed_app_d000b1ab__state_backend_history"')
    PynencWriter(db, "seed_app").close()
    assert query(db, 'SELECT COUNT(*) FROM "seed_app_d000b1ab__state_backend_history"') == before


@pytest.mark.parametrize("fixture", sorted(f for f, (layout, _) in PYNENC_FIXTURES.items() if layout != "0.1.0"))
def test_the_invariants_hold_on_what_pynenc_wrote(fixture: str) -> None:
    assert invariants(FIXTURES / fixture, PYNENC_FIXTURES[fixture][1]) == []


def test_simulated_rows_are_shaped_like_pynencs(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    simulator = simulate(db, "seed_app", 300)
    prefix = "seed_app_d000b1ab__"
    assert invariants(db, prefix) == []
    statuses = {status for _, status in current_statuses(db, prefix)}
    history = {row[0] for row in query(db, f'SELECT DISTINCT history_status FROM "{prefix}state_backend_history"')}
    assert {"success", "failed", "running", "pending"} <= statuses
    assert {"registered", "pending", "running", "retry", "success", "failed"} == history
    # Children: fan-out children have no workflow (0.4.0); a sub-workflow's child is in it.
    [(children, sub)] = query(
        db,
        f"""SELECT COUNT(*), SUM(workflow_id IS NOT NULL AND parent_workflow_id IS NOT NULL)
        FROM "{prefix}state_backend_invocations" WHERE parent_invocation_id IS NOT NULL""",
    )
    assert children > 0 and sub > 0
    [(runners,)] = query(db, f'SELECT COUNT(*) FROM "{prefix}orchestrator_runner_heartbeats"')
    assert runners >= len(simulator.runners)


def test_the_exporter_reads_the_simulated_app(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    simulate(db, "billing-prod", 120)
    samples = expose(db, datetime.now(UTC))
    assert by(samples, "pynenc_app_info", "layout") == {"0.2.4+": 1}
    shown = {
        (dict(labels)["task"], dict(labels)["status"]): v
        for (name, labels), v in samples.items()
        if name == "pynenc_invocations" and v
    }
    assert shown == nonzero(current_statuses(db, "billing_prod_5ec36bb9__"))
