"""The seed's SQL-injection section, plus argument validation: every malicious input either raises
TypeError/ValueError or yields a safe result, and the table is intact afterwards."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from exporter.state import SQLiteBackend

MakeState = Callable[..., dict[str, Any]]

MALICIOUS_INPUTS = [
    "'; DROP TABLE workflow_state; --",
    "' OR '1'='1",
    "' UNION SELECT * FROM workflow_state --",
    "'; INSERT INTO workflow_state VALUES ('hacked', 'hacked', 'hacked', 'hacked', 0, '{}', NULL, "
    "'running', datetime('now'), datetime('now'), 0, NULL, NULL, NULL); --",
]


def _table_state(db_path: Path) -> tuple[int, list[str]]:
    conn = sqlite3.connect(db_path)
    try:
        count = conn.execute("SELECT COUNT(*) FROM workflow_state").fetchone()[0]
        tables = sorted(r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))
        return int(count), tables
    finally:
        conn.close()


@pytest.fixture
async def populated(backend: SQLiteBackend, make_state: MakeState, db_path: Path) -> tuple[int, list[str]]:
    for i in range(5):
        await backend.save_state(f"r{i}", make_state(f"r{i}", status="failed" if i % 2 else "completed"))
    await backend.save_run_start({"run_id": "r0", "pipeline_name": "p"})
    return _table_state(db_path)


@pytest.mark.parametrize("malicious_input", MALICIOUS_INPUTS)
async def test_seed_malicious_inputs(
    backend: SQLiteBackend, populated: tuple[int, list[str]], db_path: Path, malicious_input: str
) -> None:
    # Exactly the seed's loop: each call either raises TypeError/ValueError or returns a safe value.
    with pytest.raises(TypeError):
        await backend.get_failed_workflows(hours_back=malicious_input)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await backend.cleanup_old_workflows(days_old=malicious_input)  # type: ignore[arg-type]
    assert await backend.list_workflows(status=malicious_input) == []
    assert _table_state(db_path) == populated


@pytest.mark.parametrize("malicious_input", MALICIOUS_INPUTS)
async def test_malicious_strings_are_bound_everywhere(
    backend: SQLiteBackend, populated: tuple[int, list[str]], db_path: Path, malicious_input: str
) -> None:
    m = malicious_input
    assert await backend.list_workflows(pipeline_id=m) == []
    assert await backend.list_workflows(status=m, pipeline_id=m, limit=5, offset=1) == []
    assert await backend.list_states(status=m) == []
    assert await backend.load_state(m) is None
    await backend.delete_state(m)
    assert await backend.list_background_tasks(parent_run_id=m, status=m) == []
    assert await backend.get_failed_background_tasks(parent_run_id=m) == []
    assert await backend.list_runs(status=m) == []
    assert await backend.list_runs(pipeline_name=m) == []
    assert await backend.list_runs(metadata_filter={"key": m}) == []
    assert await backend.get_run_details(m) is None
    assert await backend.list_run_steps(m) == []
    assert await backend.get_spans(m, status=m, name=m) == []
    assert await backend.get_trace(m) is None
    assert (await backend.get_span_statistics(pipeline_name=m))["total_spans"] == 0
    assert await backend.get_system_state(m) is None
    assert await backend.list_evaluations(run_id=m) == []
    await backend.delete_run(m)
    assert _table_state(db_path) == populated
    # a malicious run_id / key is stored verbatim, as data
    await backend.set_system_state(m, {"v": m})
    assert (await backend.get_system_state(m) or {})["value"] == {"v": m}
    count, tables = _table_state(db_path)
    assert (count, tables) == populated


@pytest.mark.parametrize("bad", ["24", True, False, None, [24], 1j, "1; DROP TABLE x"])
async def test_numeric_arguments_reject_wrong_types(backend: SQLiteBackend, bad: Any) -> None:
    with pytest.raises(TypeError):
        await backend.get_failed_workflows(hours_back=bad)
    with pytest.raises(TypeError):
        await backend.cleanup_old_workflows(days_old=bad)
    with pytest.raises(TypeError):
        await backend.get_failed_background_tasks(hours_back=bad)
    with pytest.raises(TypeError):
        await backend.cleanup_stale_background_tasks(stale_hours=bad)
    with pytest.raises(TypeError):
        await backend.list_workflows(offset=bad)
    with pytest.raises(TypeError):
        await backend.list_background_tasks(offset=bad)
    with pytest.raises(TypeError):
        await backend.list_runs(offset=bad)
    if bad is not None:  # limit=None means "all"
        with pytest.raises(TypeError):
            await backend.list_workflows(limit=bad)
        with pytest.raises(TypeError):
            await backend.list_runs(limit=bad)
        with pytest.raises(TypeError):
            await backend.list_evaluations(limit=bad)


@pytest.mark.parametrize("bad", [-1, -0.5, float("nan")])
async def test_numeric_arguments_reject_negative_values(backend: SQLiteBackend, bad: float) -> None:
    with pytest.raises(ValueError):
        await backend.get_failed_workflows(hours_back=bad)
    with pytest.raises(ValueError):
        await backend.cleanup_old_workflows(days_old=bad)
    with pytest.raises(ValueError):
        await backend.get_failed_background_tasks(hours_back=bad)
    with pytest.raises(ValueError):
        await backend.cleanup_stale_background_tasks(stale_hours=bad)


async def test_negative_or_float_limits(backend: SQLiteBackend) -> None:
    with pytest.raises(ValueError):
        await backend.list_workflows(limit=-1)
    with pytest.raises(ValueError):
        await backend.list_workflows(offset=-5)
    with pytest.raises(TypeError):
        await backend.list_workflows(limit=2.5)  # type: ignore[arg-type]


async def test_huge_windows_do_not_overflow(backend: SQLiteBackend, make_state: MakeState) -> None:
    await backend.save_state("r", make_state("r", status="failed"))
    assert len(await backend.get_failed_workflows(hours_back=1e300)) == 1
    assert await backend.cleanup_old_workflows(days_old=1e300) == 0
    assert len(await backend.get_failed_workflows(hours_back=float("inf"))) == 1
    assert len(await backend.list_workflows()) == 1


async def test_status_filters_must_be_strings(backend: SQLiteBackend) -> None:
    with pytest.raises(TypeError):
        await backend.list_workflows(status=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await backend.list_runs(pipeline_name=["x"])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "key",
    ["a b", "x') OR 1=1 --", "$.x", "", "a..b", ".a", "a.", "k'", 'k"', "ключ"],
)
async def test_metadata_filter_rejects_bad_keys(backend: SQLiteBackend, key: str) -> None:
    with pytest.raises(ValueError):
        await backend.list_runs(metadata_filter={key: 1})


@pytest.mark.parametrize("value", [{"a": 1}, [1, 2], object()])
async def test_metadata_filter_rejects_non_scalars(backend: SQLiteBackend, value: Any) -> None:
    with pytest.raises(TypeError):
        await backend.list_runs(metadata_filter={"k": value})
