"""The engine-neutral model every engine maps its own state to: no SQL, no engine names.

An engine keeps its raw status vocabulary in its own metrics; the overview metrics
(``workflow_*``) speak only in canonical :class:`Phase` values and stuck :class:`StuckReason` values,
so one dashboard and one alert group serve every engine.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

# Run durations from seconds to a day: the same buckets for every engine, so the overview
# histogram of several targets can be summed.
RUN_DURATION_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)


class Phase(StrEnum):
    """Where a run is in its life, whatever the engine calls it."""

    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"

    @property
    def is_final(self) -> bool:
        return self in FINAL_PHASES


FINAL_PHASES = frozenset({Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELLED, Phase.SKIPPED})
ACTIVE_PHASES = frozenset({Phase.QUEUED, Phase.RUNNING, Phase.PAUSED})


class StuckReason(StrEnum):
    """Why an active run counts as stuck; each engine judges the reasons its state can show."""

    IDLE = "idle"  # running, not updated for longer than its threshold
    PAUSED_TOO_LONG = "paused_too_long"  # paused (waiting for a human) past its threshold
    RUNNER_DEAD = "runner_dead"  # its runner's heartbeat stopped
    PID_DEAD = "pid_dead"  # the process that owns it is gone
    PENDING_TIMEOUT = "pending_timeout"  # queued for longer than the engine allows


@dataclass(frozen=True, slots=True)
class StuckRun:
    """One run the engine's stuck rule judges stuck, for the stuck-run alerts.

    ``run_id`` goes into alerts and logs only, never into a metric label.  ``group`` is what the
    engine groups runs by (Flujo: the pipeline name); ``status`` the engine's raw status.  The run
    counts as stuck from ``updated_at + threshold`` on."""

    run_id: str
    group: str
    status: str
    phase: Phase
    reason: StuckReason
    updated_at: datetime  # the run's last update (timezone-aware)
    threshold: timedelta  # how long the rule allowed for this run without an update

    @property
    def stuck_since(self) -> datetime:
        return self.updated_at + self.threshold


@dataclass(frozen=True)
class PhaseMap:
    """An engine's raw statuses and the phase each one means.  A status the engine does not define
    (a newer version, a corrupt row) has no phase: the overview leaves it out rather than guess,
    while the engine's own metrics still show it under its raw name."""

    phases: Mapping[str, Phase]

    def phase_of(self, status: str) -> Phase | None:
        return self.phases.get(status)

    @property
    def statuses(self) -> tuple[str, ...]:
        return tuple(self.phases)

    def fold(self, by_status: Iterable[tuple[str, float]]) -> Counter[Phase]:
        """Counts by raw status -> counts by phase; every phase present (0 when none)."""
        folded: Counter[Phase] = Counter(dict.fromkeys(Phase, 0))
        for status, count in by_status:
            phase = self.phases.get(status)
            if phase is not None:
                folded[phase] += int(count)
        return folded


@dataclass
class Histogram:
    """Bucket counts of observed durations (seconds), merged across label sets for the overview."""

    bounds: tuple[float, ...] = RUN_DURATION_BUCKETS
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.total += value
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1
                return
        self.counts[-1] += 1

    def merge(self, other: Histogram) -> None:
        if other.bounds != self.bounds:
            raise ValueError(f"cannot merge histograms with buckets {other.bounds} into {self.bounds}")
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.total += other.total

    @property
    def count(self) -> int:
        return sum(self.counts)

    def buckets(self) -> list[tuple[str, float]]:
        """``(le, cumulative count)`` pairs in the shape prometheus_client's HistogramMetricFamily wants."""
        cumulative, out = 0, []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            cumulative += count
            out.append(("+Inf" if bound == float("inf") else repr(float(bound)), float(cumulative)))
        return out

    @classmethod
    def merged(cls, histograms: Iterable[Histogram]) -> Histogram:
        """One histogram of every observation of ``histograms`` (the overview's, over label sets)."""
        total = cls()
        for histogram in histograms:
            total.merge(histogram)
        return total

    def copy(self) -> Histogram:
        return Histogram(self.bounds, list(self.counts), self.total)


@dataclass(frozen=True)
class Overview:
    """One engine's state in canonical terms, built from the engine's own snapshot tiers.

    ``None`` for a part means "not known": its tier has not run yet, or the file's layout cannot show
    it (Flujo 0.4.32 has no finished runs to follow).  The overview collector leaves that family out
    instead of reporting zeros it does not know."""

    engine: str
    runs: Counter[Phase] | None = None  # current runs by phase (top-level runs only)
    # Every reason this engine judges, 0 when none; counted as the engine's own stuck rule counts
    # (Flujo: top-level runs; pynenc: every invocation its recovery services would pick up).
    stuck: Counter[StuckReason] | None = None
    oldest_active_update: float | None = None  # Unix time of the longest-idle active run
    finished: Counter[Phase] | None = None  # runs seen finishing since the daemon started following
    durations: Histogram | None = None
