"""The Marianne fixtures (a workspace job DB and a conductor registry written by Marianne 0.1.0),
their oracle values, pid liveness as the manifest recorded it, and the real refresh + exposition
path (as tests/engines/test_contract.py ``expose``)."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engines.cases import MARIANNE_REGISTRY, MARIANNE_WORKSPACE, marianne_expected
from prometheus_client import CollectorRegistry
from support import FIXTURES, parse_exposition

from exporter.clock import ManualClock
from exporter.collectors import View, build_registry
from exporter.config import MarianneConfig, MetricsConfig
from exporter.engines.marianne import pids
from exporter.exposition import CachedExposition
from exporter.reader import StateReader
from exporter.refresh import Refresher

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
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
    metrics = settings or MetricsConfig()
    clock = ManualClock(now or computed_at())
    refresher = Refresher(StateReader(db, naive_timezone=UTC), lambda: metrics, clock)
    live = CollectorRegistry(auto_describe=False)
    registry = build_registry(View(lambda: refresher.state, lambda: metrics, clock), live=live)
    state = refresher.refresh(force_all=True)
    assert state.problem is None, state.problem
    assert all(phase.success for phase in state.phases.values()), state.failing_phases()
    body, _ = CachedExposition(registry, live, lambda: (refresher.state,)).render("text/plain")
    return parse_exposition(body.decode())


def family(samples: Samples, name: str, **match: str) -> dict[frozenset[tuple[str, str]], float]:
    """The samples of ``name`` whose labels include ``match``, keyed by their other labels."""
    found = {}
    for (sample, labels), value in samples.items():
        as_dict = dict(labels)
        if sample == name and all(as_dict.get(k) == v for k, v in match.items()):
            found[frozenset((k, v) for k, v in labels if k not in match)] = value
    return found


def by(samples: Samples, name: str, label: str, **match: str) -> Counter[str]:
    found: Counter[str] = Counter()
    for labels, value in family(samples, name, **match).items():
        found[dict(labels)[label]] += value
    return found


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
