"""Fixtures for the state backend tests: real SQLite files under tmp_path, never the originals."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import support

from exporter.state import SQLiteBackend


@pytest.fixture
def expected() -> Callable[[str], dict[str, Any]]:
    return support.expected


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


@pytest.fixture
async def backend(db_path: Path) -> AsyncIterator[SQLiteBackend]:
    b = SQLiteBackend(db_path, naive_timezone="UTC")
    try:
        yield b
    finally:
        await b.shutdown()


@pytest.fixture
def make_state() -> Callable[..., dict[str, Any]]:
    """A state dict shaped like the seed's examples; keyword overrides."""

    def make(run_id: str, **overrides: Any) -> dict[str, Any]:
        now = datetime.utcnow().replace(microsecond=0)  # the seed passes utcnow()
        state: dict[str, Any] = {
            "run_id": run_id,
            "pipeline_id": "test_pipeline",
            "pipeline_name": "Test Pipeline",
            "pipeline_version": "1.0",
            "current_step_index": 0,
            "pipeline_context": {"test": "data"},
            "last_step_output": "test_output",
            "status": "completed",
            "created_at": now,
            "updated_at": now,
            "total_steps": 5,
            "error_message": None,
            "execution_time_ms": 1000,
            "memory_usage_mb": 10.0,
        }
        state.update(overrides)
        return state

    return make
