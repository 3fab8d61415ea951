"""The ``runs`` and ``steps`` tables: current states and watermark-fed counters and histograms."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

from exporter.collectors.base import View, gauge_from, printable
from exporter.engines.flujo.collectors.base import FlujoCollector
from exporter.engines.flujo.statuses import FINISHED_STATUSES, RUNNING, STEP_STATUSES
from exporter.labels import LabelCap, cap_statuses, fold, fold_statuses
from exporter.model import Histogram

RUN_STATUSES = (RUNNING, *FINISHED_STATUSES)


class RunCollector(FlujoCollector):
    def __init__(self, view: View) -> None:
        super().__init__(view)
        # Counters fold statuses with a stable allocation, so that no series ever goes down.
        limit = view.settings().max_statuses
        self._finished_statuses = LabelCap(limit, FINISHED_STATUSES)
        self._step_statuses = LabelCap(limit, STEP_STATUSES)

    def collect(self) -> Iterator[Metric]:
        state = self.flujo_state()
        settings = self.view.settings()
        counts = state.counts
        if counts is None or counts.runs_by_status is None:
            return
        by_status = cap_statuses(counts.runs_by_status, RUN_STATUSES, settings.max_statuses)
        yield gauge_from(
            "flujo_runs",
            self.counted("Rows of the runs table by status"),
            ["status"],
            [((s,), float(n)) for s, n in by_status.items()],
        )
        aggregates = state.aggregates
        if aggregates is not None and aggregates.runs_by_pipeline_status is not None:
            limit = settings.max_pipelines
            statuses = fold_statuses(aggregates.runs_by_pipeline_status.items(), RUN_STATUSES, settings.max_statuses)
            yield gauge_from(
                "flujo_runs_by_pipeline",
                self.aggregated(f"Rows of the runs table by pipeline and status; pipelines past {limit} are 'other'"),
                ["pipeline", "status"],
                [(k, float(n)) for k, n in fold(statuses.items(), limit).items()],
            )
        finished = state.finished
        if not finished.seeded:
            return
        runs_total = CounterMetricFamily(
            "flujo_runs_finished",
            "Runs seen finishing, by pipeline and final status (fed by a rowid watermark: cleanup never "
            "lowers it; seeded from the rows present at start)",
            labels=["pipeline", "status"],
        )
        for (pipeline, status), n in sorted(_fold_counter(finished.runs, self._finished_statuses).items()):
            runs_total.add_metric([pipeline, status], n)
        yield runs_total
        yield _histogram(
            "flujo_run_duration_seconds",
            "Duration of finished runs by pipeline (runs finishing since start, plus those that finished "
            "within metrics.run_duration_window before it)",
            "pipeline",
            finished.run_durations,
        )
        steps_total = CounterMetricFamily(
            "flujo_steps_finished",
            "Recorded step results by step name and status (failed = step failures); names past "
            f"{self.view.settings().max_steps} are 'other'",
            labels=["step", "status"],
        )
        for (step, status), n in sorted(_fold_counter(finished.steps, self._step_statuses).items()):
            steps_total.add_metric([step, status], n)
        yield steps_total
        yield _histogram(
            "flujo_step_duration_seconds",
            "Duration of recorded steps by step name (0.6.x DBs record none)",
            "step",
            finished.step_durations,
        )


def _histogram(name: str, documentation: str, label: str, histograms: dict[str, Histogram]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=[label])
    for value, histogram in sorted(histograms.items(), key=lambda item: printable(item[0])):
        family.add_metric([printable(value)], histogram.buckets(), histogram.total)
    return family


def _fold_counter(counts: Counter[tuple[str, str]], statuses: LabelCap) -> Counter[tuple[str, str]]:
    """Statuses past the cap under 'other'; labels as printable text (see :func:`gauge_from`)."""
    texts = [((printable(name), printable(status)), n) for (name, status), n in counts.items()]
    folded: Counter[tuple[str, str]] = Counter()
    for (name, status), n in sorted(texts):
        folded[(name, statuses.label(status))] += n
    return folded
