"""Shared fixtures: copies of the real Flujo DBs (the originals are never opened for writing)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from support import FIXTURES


@pytest.fixture
def fixture_copy(tmp_path: Path) -> Callable[[str], Path]:
    def copy(name: str) -> Path:
        target = tmp_path / name
        shutil.copyfile(FIXTURES / name, target)
        return target

    return copy
