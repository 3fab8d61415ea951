"""Background tasks (0.6.x ``workflow_state`` rows with is_background_task): absent, not zero, elsewhere."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.collectors.base import ViewCollector, gauge_from
from exporter.collectors.workflows import status_samples


class BackgroundTaskCollector(ViewCollector):
    def collect(self) -> Iterator[Metric]:
        fast = self.view.state().fast
        if fast is None or fast.background_by_status is None:
            return
        yield gauge_from(
            "flujo_background_tasks",
            self.cached("Background tasks by status"),
            ["status"],
            status_samples(fast.background_by_status),
        )
        failed = GaugeMetricFamily(
            "flujo_background_tasks_failed_last_24h",
            self.cached("Background tasks with status failed updated within the last 24 h"),
        )
        failed.add_metric([], fast.failed_24h.background)
        yield failed
        running = [a.updated_at for a in fast.active if a.is_background and a.status == "running" and a.updated_at]
        oldest = GaugeMetricFamily(
            "flujo_background_tasks_oldest_running_update_timestamp_seconds",
            self.cached("Last update (Unix time) of the longest-idle running background task; absent when none"),
        )
        if running:
            oldest.add_metric([], min(running).timestamp())
        yield oldest
