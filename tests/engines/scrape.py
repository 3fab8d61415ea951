"""An engine's file refreshed and rendered in-process, exactly as the daemon's /metrics renders it."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, tzinfo
from pathlib import Path

from prometheus_client import CollectorRegistry
from support import parse_exposition

from exporter.clock import ManualClock
from exporter.collectors import View, build_registry
from exporter.config import MetricsConfig
from exporter.engines import AUTO
from exporter.exposition import CachedExposition
from exporter.reader import StateReader
from exporter.refresh import Refresher

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class ScrapedDaemon:
    """One reader, refresher and registry, kept across refreshes (the engine's caches and cursors
    with them) at a clock the test moves."""

    def __init__(
        self,
        db: Path,
        now: datetime,
        settings: MetricsConfig | None = None,
        *,
        tz: tzinfo = UTC,
        engine: str = AUTO,
    ) -> None:
        self.settings = settings or MetricsConfig()
        self.clock = ManualClock(now)
        reader = StateReader(db, naive_timezone=tz, engine=engine)
        self.refresher = Refresher(reader, lambda: self.settings, self.clock)
        self.live = CollectorRegistry(auto_describe=False)
        self.registry = build_registry(
            View(lambda: self.refresher.state, lambda: self.settings, self.clock), live=self.live
        )

    def expose(self) -> Samples:
        """Every tier refreshed (each must succeed), then rendered."""
        state = self.refresher.refresh(force_all=True)
        assert state.problem is None, state.problem
        assert all(phase.success for phase in state.phases.values()), state.failing_phases()
        body, _ = CachedExposition(self.registry, self.live, lambda: (self.refresher.state,)).render("text/plain")
        return parse_exposition(body.decode())


def expose(
    db: Path,
    now: datetime,
    settings: MetricsConfig | None = None,
    *,
    tz: tzinfo = UTC,
    engine: str = AUTO,
) -> Samples:
    return ScrapedDaemon(db, now, settings, tz=tz, engine=engine).expose()


def family(samples: Samples, name: str, **match: str) -> dict[frozenset[tuple[str, str]], float]:
    """The samples of ``name`` whose labels include ``match``, keyed by their other labels."""
    found = {}
    for (sample, labels), value in samples.items():
        as_dict = dict(labels)
        if sample == name and all(as_dict.get(k) == v for k, v in match.items()):
            found[frozenset((k, v) for k, v in labels if k not in match)] = value
    return found


def by(samples: Samples, name: str, label: str, **match: str) -> Counter[str]:
    """``name``'s values summed by ``label``."""
    found: Counter[str] = Counter()
    for labels, value in family(samples, name, **match).items():
        found[dict(labels)[label]] += value
    return found
