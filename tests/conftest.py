"""Shared fixtures: copies of the real Flujo DBs (the originals are never opened for writing)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import FIXTURES

# The throwaway PostgreSQL (session) and a fresh database per test: see tests/postgres.py.
pytest_plugins = ("postgres",)


@pytest.fixture
def fixture_copy(tmp_path: Path) -> Callable[[str], Path]:
    def copy(name: str) -> Path:
        target = tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)  # engine fixtures live in per-engine folders
        shutil.copyfile(FIXTURES / name, target)
        return target

    return copy


@pytest.fixture(scope="session", autouse=True)
def fixtures_stay_pristine() -> Iterator[None]:
    """The real Flujo fixtures are only ever copied: nothing may open them in a way that leaves files."""
    before = {p.name for p in FIXTURES.iterdir()}
    yield
    leftovers = sorted({p.name for p in FIXTURES.iterdir()} - before)
    assert leftovers == [], f"a test opened a fixture in place and left {leftovers} in {FIXTURES}"
