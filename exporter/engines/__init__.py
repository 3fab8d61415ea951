"""The engines the daemon understands, and which of them wrote a given file.

Each engine is one package, ``exporter/engines/<name>/``, whose ``engine`` module's ``ENGINE`` is
an :class:`~exporter.engines.base.Engine`.  This module imports them only when first asked, so that
configuration can name the engines without importing any of their code.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from exporter.engines.base import Catalogue, Engine, EngineSchema

# Detection order: the first engine that recognises a file serves it.
ENGINE_NAMES: tuple[str, ...] = ("flujo", "pynenc", "seeknal", "marianne")
AUTO = "auto"


@cache
def engine(name: str) -> Engine:
    if name not in ENGINE_NAMES:
        raise KeyError(f"unknown engine {name!r} (known: {', '.join(ENGINE_NAMES)})")
    found: Engine = importlib.import_module(f"exporter.engines.{name}.engine").ENGINE
    return found


def engines() -> tuple[Engine, ...]:
    return tuple(engine(name) for name in ENGINE_NAMES)


def detect(catalogue: Catalogue, path: Path, wanted: str = AUTO) -> EngineSchema:
    """The schema of the engine that wrote the file whose tables and columns are ``catalogue``.

    ``wanted`` is ``auto`` (try every engine in :data:`ENGINE_NAMES` order) or one engine's name.
    A file nobody recognises raises :class:`DatabaseUnavailable` naming the file and, per engine,
    what it missed."""
    # Imported here: configuration reads ENGINE_NAMES without loading the reader.
    from exporter.reader.errors import DatabaseUnavailable, Problem

    candidates = engines() if wanted == AUTO else (engine(wanted),)
    missing: dict[str, str] = {}
    for candidate in candidates:
        recognised = candidate.recognise(catalogue)
        if not isinstance(recognised, str):
            return recognised
        missing[candidate.title] = recognised
    raise DatabaseUnavailable(Problem.UNKNOWN_LAYOUT, unrecognised_message(path, catalogue, missing, wanted))


def unrecognised_message(path: Path, catalogue: Catalogue, missing: Mapping[str, str], wanted: str) -> str:
    """``missing``: per engine title, what the file lacks to be that engine's."""
    tables = ", ".join(sorted(catalogue)) or "none"
    if wanted != AUTO:
        [(title, why)] = missing.items()
        return f"{path}: not a {title} state DB: {why} (tables: {tables})"
    reasons = "; ".join(f"{title}: {why}" for title, why in missing.items())
    return f"{path}: no supported engine recognises this file ({reasons}) (tables: {tables})"
