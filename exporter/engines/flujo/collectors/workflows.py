"""Top-level workflows (``workflow_state`` rows that are not background tasks)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.collectors.base import gauge_from
from exporter.engines.flujo.collectors.base import FlujoCollector
from exporter.engines.flujo.statuses import ACTIVE_STATUSES, WORKFLOW_STATUSES
from exporter.engines.flujo.stuck import ActiveSummary
from exporter.labels import OTHER, cap_statuses, fold, fold_statuses, top_values


def status_samples(counts: Counter[str], limit: int) -> list[tuple[tuple[str], float]]:
    """Every known status always present; at most ``limit`` unknown ones, the rest under 'other'."""
    return [((s,), float(n)) for s, n in cap_statuses(counts, WORKFLOW_STATUSES, limit).items()]


class WorkflowCollector(FlujoCollector):
    def collect(self) -> Iterator[Metric]:
        state = self.flujo_state()
        settings = self.view.settings()
        counts = state.counts
        if counts is not None:
            yield gauge_from(
                "flujo_workflows",
                self.counted("Top-level workflows by status (workflow_state rows that are not background tasks)"),
                ["status"],
                status_samples(counts.workflows_by_status, settings.max_statuses),
            )
            failed = GaugeMetricFamily(
                "flujo_workflows_failed_last_24h",
                self.counted("Top-level workflows with status failed updated within the last 24 h"),
            )
            failed.add_metric([], counts.failed_24h.top_level)
            yield failed
        fast = state.fast
        if fast is not None:
            created = GaugeMetricFamily(
                "flujo_workflows_created_last_24h",
                self.cached("Top-level workflows whose created_at is within the last 24 h (real instants)"),
            )
            created.add_metric([], fast.created_24h.top_level)
            yield created
            yield from self._active(fast.active)
        aggregates = state.aggregates
        if aggregates is not None:
            limit = settings.max_pipelines
            statuses = fold_statuses(
                aggregates.workflows_by_pipeline_status.items(), WORKFLOW_STATUSES, settings.max_statuses
            )
            yield gauge_from(
                "flujo_workflows_by_pipeline",
                self.aggregated(f"Top-level workflows by pipeline and status; pipelines past {limit} are 'other'"),
                ["pipeline", "status"],
                [(k, float(n)) for k, n in fold(statuses.items(), limit).items()],
            )

    def _active(self, summary: ActiveSummary) -> Iterator[Metric]:
        settings = self.view.settings()
        groups = {(p, s): g for (p, s, background), g in summary.items() if not background}
        kept = top_values(Counter({p: g.count for (p, _), g in groups.items()}), settings.max_pipelines)
        count: Counter[tuple[str, str]] = Counter()
        stuck: Counter[tuple[str, str]] = Counter()
        oldest: dict[tuple[str, str], float] = {}
        for (pipeline, status), group in groups.items():
            key = (pipeline if pipeline in kept else OTHER, status)
            count[key] += group.count
            stuck[key] += group.stuck
            if group.oldest_update is not None:
                oldest[key] = min(oldest.get(key, group.oldest_update), group.oldest_update)
        pipelines = {p for p, _ in count}
        yield gauge_from(
            "flujo_workflows_active",
            self.cached("Top-level workflows running or paused, by pipeline"),
            ["pipeline", "status"],
            [((p, s), float(count[(p, s)])) for p in pipelines for s in ACTIVE_STATUSES],
        )
        judged = ["running"] + (["paused"] if settings.stuck.paused_after is not None else [])
        yield gauge_from(
            "flujo_workflows_stuck",
            self.cached(
                "Top-level workflows not updated for longer than their threshold (running; paused only "
                "when metrics.stuck.paused_after is set)"
            ),
            ["pipeline", "status"],
            [((p, s), float(stuck[(p, s)])) for p in pipelines for s in judged],
        )
        yield gauge_from(
            "flujo_workflows_oldest_update_timestamp_seconds",
            self.cached("Last update (Unix time) of the longest-idle running or paused workflow, by pipeline"),
            ["pipeline", "status"],
            list(oldest.items()),
        )
