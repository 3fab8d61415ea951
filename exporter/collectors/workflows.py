"""Top-level workflows (``workflow_state`` rows that are not background tasks)."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import datetime

from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.collectors.base import ViewCollector, gauge_from
from exporter.config import StuckConfig
from exporter.labels import OTHER, fold, top_values
from exporter.reader.workflows import ACTIVE_STATUSES, WORKFLOW_STATUSES, ActiveWorkflow
from exporter.stuck import StuckPolicy, stuck_workflows


def status_samples(counts: Counter[str]) -> list[tuple[tuple[str], float]]:
    """Every known status always present; an unknown status keeps its own series."""
    statuses = set(WORKFLOW_STATUSES) | set(counts)
    return [((s,), float(counts.get(s, 0))) for s in statuses]


def stuck_policy(config: StuckConfig) -> StuckPolicy:
    return StuckPolicy(config.running_after, config.per_pipeline, config.paused_after)


class WorkflowCollector(ViewCollector):
    def collect(self) -> Iterator[Metric]:
        state = self.view.state()
        fast = state.fast
        if fast is None:
            return
        yield gauge_from(
            "flujo_workflows",
            self.cached("Top-level workflows by status (workflow_state rows that are not background tasks)"),
            ["status"],
            status_samples(fast.workflows_by_status),
        )
        created = GaugeMetricFamily(
            "flujo_workflows_created_last_24h",
            self.cached("Top-level workflows whose created_at is within the last 24 h (real instants)"),
        )
        created.add_metric([], fast.created_24h.top_level)
        yield created
        failed = GaugeMetricFamily(
            "flujo_workflows_failed_last_24h",
            self.cached("Top-level workflows with status failed updated within the last 24 h"),
        )
        failed.add_metric([], fast.failed_24h.top_level)
        yield failed
        yield from self._active([a for a in fast.active if not a.is_background], fast.taken_at)
        aggregates = state.aggregates
        if aggregates is not None:
            limit = self.view.settings().max_pipelines
            yield gauge_from(
                "flujo_workflows_by_pipeline",
                self.aggregated(f"Top-level workflows by pipeline and status; pipelines past {limit} are 'other'"),
                ["pipeline", "status"],
                [(k, float(n)) for k, n in fold(aggregates.workflows_by_pipeline_status.items(), limit).items()],
            )

    def _active(self, active: list[ActiveWorkflow], taken_at: datetime) -> Iterator[Metric]:
        settings = self.view.settings()
        weights = Counter(a.pipeline for a in active)
        kept = top_values(weights, settings.max_pipelines)
        count: Counter[tuple[str, str]] = Counter()
        oldest: dict[tuple[str, str], float] = {}
        for run in active:
            key = (run.pipeline if run.pipeline in kept else OTHER, run.status)
            count[key] += 1
            if run.updated_at is not None:
                ts = run.updated_at.timestamp()
                oldest[key] = min(oldest.get(key, ts), ts)
        stuck: Counter[tuple[str, str]] = Counter()
        for run in stuck_workflows(active, taken_at, stuck_policy(settings.stuck)):
            stuck[(run.pipeline if run.pipeline in kept else OTHER, run.status)] += 1
        pipelines = {p for p, _ in count} | {p for p, _ in stuck}
        every = defaultdict(float, {k: float(v) for k, v in count.items()})
        yield gauge_from(
            "flujo_workflows_active",
            self.cached("Top-level workflows running or paused, by pipeline"),
            ["pipeline", "status"],
            [((p, s), every[(p, s)]) for p in pipelines for s in ACTIVE_STATUSES],
        )
        stuck_all = defaultdict(float, {k: float(v) for k, v in stuck.items()})
        paused_judged = settings.stuck.paused_after is not None
        yield gauge_from(
            "flujo_workflows_stuck",
            self.cached(
                "Top-level workflows not updated for longer than their threshold (running; paused only "
                "when metrics.stuck.paused_after is set)"
            ),
            ["pipeline", "status"],
            [
                ((p, s), stuck_all[(p, s)])
                for p in pipelines
                for s in ACTIVE_STATUSES
                if s == "running" or paused_judged
            ],
        )
        yield gauge_from(
            "flujo_workflows_oldest_update_timestamp_seconds",
            self.cached("Last update (Unix time) of the longest-idle running or paused workflow, by pipeline"),
            ["pipeline", "status"],
            list(oldest.items()),
        )
