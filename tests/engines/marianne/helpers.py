"""The Marianne fixtures (a workspace job DB and a conductor registry written by Marianne 0.1.0),
their oracle values, pid liveness as the manifest recorded it, and the real refresh + exposition
path (as tests/engines/test_contract.py ``expose``)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from engines import scrape
from engines.cases import MARIANNE_REGISTRY, MARIANNE_WORKSPACE, marianne_expected
from engines.scrape import Samples as Samples
from engines.scrape import by as by
from engines.scrape import family as family
from support import FIXTURES

from exporter.config import MarianneConfig, MetricsConfig
from exporter.engines.marianne import pids

WORKSPACE, REGISTRY = MARIANNE_WORKSPACE, MARIANNE_REGISTRY
PID_CHECK = MetricsConfig(marianne=MarianneConfig(same_host_pid_check=True))


def expected() -> dict[str, Any]:
    return marianne_expected()


def manifest() -> dict[str, Any]:
    with (FIXTURES / f"{WORKSPACE}.manifest.json").open() as handle:
        data: dict[str, Any] = json.load(handle)
    return data


def computed_at() -> datetime:
    return datetime.fromisoformat(expected()["computed_at_utc"])


class UnexpectedPid(AssertionError):
    pass


@contextmanager
def liveness_from_manifest() -> Iterator[list[int]]:
    """Every pid the manifest knows answers as it did on the writer's host at generation; any other
    question fails the test (this machine's pids are never probed).  Yields the pids asked."""
    alive = {entry["pid"]: entry["alive_at_generation"] for entry in manifest()["zombie_pids"].values()}
    asked: list[int] = []

    def probe(pid: int) -> bool:
        asked.append(pid)
        if pid not in alive:
            raise UnexpectedPid(f"pid {pid} is not in the manifest")
        return bool(alive[pid])

    with pids.injected(probe):
        yield asked


def expose(db: Path, settings: MetricsConfig | None = None, now: datetime | None = None) -> Samples:
    return scrape.expose(db, now or computed_at(), settings)


def single(samples: Samples, name: str) -> float:
    [value] = family(samples, name).values()
    return value


def execute(db: Path, *statements: str) -> None:
    conn = sqlite3.connect(db)
    try:
        for statement in statements:
            conn.execute(statement)
        conn.commit()
    finally:
        conn.close()
