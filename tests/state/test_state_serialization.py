"""JSON encoding of state values and the custom serializer registry."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from pydantic import BaseModel

from exporter.state import SQLiteBackend, register_custom_serializer, unregister_custom_serializer
from exporter.state.serialization import dumps, loads_or_raw, to_jsonable


class Color(Enum):
    RED = "red"


class Level(int, Enum):
    HIGH = 3


@dataclasses.dataclass
class Point:
    x: int
    y: int
    when: datetime


class Inner(BaseModel):
    at: datetime
    tags: set[str]


class Outer(BaseModel):
    inner: Inner
    color: Color


class Money:
    def __init__(self, cents: int) -> None:
        self.cents = cents


class Euro(Money):
    pass


def test_builtin_conversions() -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    value = {
        "dt": at,
        "date": date(2026, 1, 2),
        "delta": timedelta(minutes=1, milliseconds=500),
        "enum": Color.RED,
        "int_enum": Level.HIGH,
        "set": {3, 1, 2},
        "frozen": frozenset({"b", "a"}),
        "tuple": (1, "a"),
        "bytes": b"\x00\xff",
        "decimal": Decimal("1.10"),
        "uuid": UUID(int=1),
        "path": Path("/tmp/x"),
        "dataclass": Point(1, 2, at),
        "model": Outer(inner=Inner(at=at, tags={"t"}), color=Color.RED),
        1: "int key",
        None: "none key",
        Color.RED: "enum key",
    }
    assert to_jsonable(value) == {
        "dt": "2026-01-02T03:04:05+00:00",
        "date": "2026-01-02",
        "delta": 60.5,
        "enum": "red",
        "int_enum": 3,
        "set": [1, 2, 3],
        "frozen": ["a", "b"],
        "tuple": [1, "a"],
        "bytes": "AP8=",
        "decimal": "1.10",
        "uuid": "00000000-0000-0000-0000-000000000001",
        "path": "/tmp/x",
        "dataclass": {"x": 1, "y": 2, "when": "2026-01-02T03:04:05+00:00"},
        "model": {"inner": {"at": "2026-01-02T03:04:05+00:00", "tags": ["t"]}, "color": "red"},
        "1": "int key",
        "null": "none key",
        "red": "enum key",
    }
    assert json.loads(dumps(value))["set"] == [1, 2, 3]


def test_registry_applies_to_subclasses_and_wins_over_builtins() -> None:
    register_custom_serializer(Money, lambda m: {"cents": m.cents})
    register_custom_serializer(Color, lambda c: f"color:{c.name}")
    try:
        assert to_jsonable([Euro(5), Color.RED]) == [{"cents": 5}, "color:RED"]
    finally:
        unregister_custom_serializer(Money)
        unregister_custom_serializer(Color)
    with pytest.raises(TypeError, match="Euro"):
        to_jsonable(Euro(5))
    assert to_jsonable(Color.RED) == "red"


def test_register_validates_arguments() -> None:
    with pytest.raises(TypeError):
        register_custom_serializer("Money", str)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        register_custom_serializer(Money, "not callable")  # type: ignore[arg-type]


def test_circular_values_are_rejected() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="nested deeper"):
        dumps(loop)


def test_loads_or_raw() -> None:
    assert loads_or_raw('{"a": 1}') == {"a": 1}
    assert loads_or_raw("old_output") == "old_output"
    assert loads_or_raw(None) is None
    assert loads_or_raw(5) == 5


async def test_state_with_rich_values_round_trips(backend: SQLiteBackend, db_path: Path) -> None:
    at = datetime(2026, 1, 2, tzinfo=UTC)
    await backend.save_state(
        "rich",
        {
            "pipeline_id": "p",
            "pipeline_context": Outer(inner=Inner(at=at, tags={"b", "a"}), color=Color.RED),
            "last_step_output": Point(1, 2, at),
            "step_history": [{"name": "s", "output": (1, 2)}],
            "metadata": {"is_background_task": True, "task_id": "bg_1", "parent_run_id": "parent"},
            "status": "running",
        },
    )
    loaded = await backend.load_state("rich")
    assert loaded is not None
    assert loaded["pipeline_context"] == {"inner": {"at": at.isoformat(), "tags": ["a", "b"]}, "color": "red"}
    assert loaded["last_step_output"] == {"x": 1, "y": 2, "when": at.isoformat()}
    assert loaded["step_history"] == [{"name": "s", "output": [1, 2]}]
    # background fields taken from metadata, like flujo 0.6
    assert (loaded["is_background_task"], loaded["task_id"], loaded["parent_run_id"]) == (
        True,
        "bg_1",
        "parent",
    )
    assert [t["run_id"] for t in await backend.list_background_tasks(parent_run_id="parent")] == ["rich"]
    conn = sqlite3.connect(db_path)
    try:
        raw = conn.execute("SELECT pipeline_context FROM workflow_state").fetchone()[0]
    finally:
        conn.close()
    assert json.loads(raw)["color"] == "red"
