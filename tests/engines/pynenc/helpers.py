"""The pynenc fixtures (real DBs written by pynenc 0.4.0, 0.1.1, 0.1.0), their oracle values and
the real refresh + exposition path (as tests/engines/test_contract.py ``expose``), with settings."""

from __future__ import annotations

import sqlite3
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engines.cases import PYNENC_FIXTURES, pynenc_expected
from prometheus_client import CollectorRegistry
from support import parse_exposition

from exporter.clock import ManualClock
from exporter.collectors import View, build_registry
from exporter.config import MetricsConfig
from exporter.exposition import CachedExposition
from exporter.reader import StateReader
from exporter.refresh import Refresher

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
FIXTURES = tuple(PYNENC_FIXTURES)
# The oracle's names for the layouts -> ours (the oracle calls 0.2.4+ "0.2+").
ORACLE_LAYOUTS = {"0.2+-prefixed": "0.2.4+", "0.1.1-prefixed": "0.1.1-0.2.3", "0.1.0-unprefixed": "0.1.0"}


def expected(fixture: str) -> dict[str, Any]:
    return pynenc_expected(fixture)


def computed_at(fixture: str) -> datetime:
    return datetime.fromisoformat(expected(fixture)["computed_at_utc"])


class Daemon:
    """One refresher over ``db`` with a pinned clock, as the daemon runs it."""

    def __init__(self, db: Path, now: datetime, settings: MetricsConfig | None = None) -> None:
        self.settings = settings or MetricsConfig()
        self.clock = ManualClock(now)
        self.refresher = Refresher(StateReader(db, naive_timezone=UTC), lambda: self.settings, self.clock)
        self.live = CollectorRegistry(auto_describe=False)
        self.registry = build_registry(
            View(lambda: self.refresher.state, lambda: self.settings, self.clock), live=self.live
        )

    def expose(self) -> Samples:
        state = self.refresher.refresh(force_all=True)
        assert state.problem is None, state.problem
        assert all(phase.success for phase in state.phases.values()), state.failing_phases()
        body, _ = CachedExposition(self.registry, self.live, lambda: (self.refresher.state,)).render("text/plain")
        return parse_exposition(body.decode())


def expose(db: Path, now: datetime, settings: MetricsConfig | None = None) -> Samples:
    return Daemon(db, now, settings).expose()


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


def execute(db: Path, *statements: str, params: tuple[object, ...] = ()) -> None:
    conn = sqlite3.connect(db)
    try:
        for statement in statements:
            conn.execute(statement, params if statement.count("?") else ())
        conn.commit()
    finally:
        conn.close()
