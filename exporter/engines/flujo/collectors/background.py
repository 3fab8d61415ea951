"""Background tasks (0.6.x ``workflow_state`` rows with is_background_task): absent, not zero, elsewhere."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.collectors.base import gauge_from
from exporter.engines.flujo.collectors.base import FlujoCollector
from exporter.engines.flujo.collectors.workflows import status_samples


class BackgroundTaskCollector(FlujoCollector):
    def collect(self) -> Iterator[Metric]:
        state = self.flujo_state()
        counts = state.counts
        if counts is None or counts.background_by_status is None:
            return
        yield gauge_from(
            "flujo_background_tasks",
            self.counted("Background tasks by status"),
            ["status"],
            status_samples(counts.background_by_status, self.view.settings().max_statuses),
        )
        failed = GaugeMetricFamily(
            "flujo_background_tasks_failed_last_24h",
            self.counted("Background tasks with status failed updated within the last 24 h"),
        )
        failed.add_metric([], counts.failed_24h.background)
        yield failed
        oldest = GaugeMetricFamily(
            "flujo_background_tasks_oldest_running_update_timestamp_seconds",
            self.cached("Last update (Unix time) of the longest-idle running background task; absent when none"),
        )
        if state.fast is not None:
            updates = [
                g.oldest_update
                for (_, status, background), g in state.fast.active.items()
                if background and status == "running" and g.oldest_update is not None
            ]
            if updates:
                oldest.add_metric([], min(updates))
        yield oldest
