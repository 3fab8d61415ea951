"""pynenc's own metric families (``pynenc_*``), per app, read from the snapshot only."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.collectors.base import View, ViewCollector, gauge_from, printable
from exporter.engines.pynenc.snapshot import ALIVE, DEAD, STUCK_REASONS, AppCounts, Counts, Queue, Snapshot
from exporter.engines.pynenc.statuses import FINAL_STATUSES
from exporter.engines.pynenc.tracking import FinishedTotals
from exporter.labels import OTHER, cap_statuses, top_values
from exporter.model import Histogram

Sample = tuple[tuple[str, ...], float]


def pynenc_collectors(view: View) -> Sequence[Collector]:
    return (PynencCollector(view),)


class PynencCollector(ViewCollector):
    def collect(self) -> Iterator[Metric]:
        state = self.view.state()
        if isinstance(state.fast, Snapshot):
            yield from self._snapshot(state.fast)
        if isinstance(state.counts, Counts):
            yield from self._counts(state.counts)
        if isinstance(state.finished, FinishedTotals) and state.finished.seeded:
            apps = [app.app for app in state.fast.apps] if isinstance(state.fast, Snapshot) else []
            yield from _finished(state.finished, apps)

    def _snapshot(self, snapshot: Snapshot) -> Iterator[Metric]:
        limit = self.view.settings().max_statuses
        yield gauge_from(
            "pynenc_app_info",
            "pynenc apps in the file (one per table prefix) and the layout of their tables",
            ["app", "layout"],
            [((app.app, app.layout), 1.0) for app in snapshot.apps],
        )
        yield gauge_from(
            "pynenc_invocations_stuck",
            self.cached(
                "Invocations pynenc's recovery services would recover: runner_dead (running, owner's heartbeat "
                "missing or older than runner_considered_dead_after_minutes), pending_timeout (pending longer "
                "than max_pending_seconds)"
            ),
            ["app", "reason"],
            [((app.app, reason.value), float(app.stuck[reason])) for app in snapshot.apps for reason in STUCK_REASONS],
        )
        yield gauge_from(
            "pynenc_runners",
            self.cached("Runners with a heartbeat row, alive (heartbeat within the app's threshold) or dead"),
            ["app", "state"],
            [((app.app, state), float(app.runners[state])) for app in snapshot.apps for state in (ALIVE, DEAD)],
        )
        heartbeats: list[Sample] = []
        for app in snapshot.apps:
            heartbeats += [((app.app, cls), ts) for cls, ts in _cap_latest(app.last_heartbeat, limit).items()]
        yield gauge_from(
            "pynenc_runner_last_heartbeat_timestamp_seconds",
            self.cached("Latest heartbeat (Unix time) of the runners of each class"),
            ["app", "runner_cls"],
            heartbeats,
        )
        depth: list[Sample] = []
        oldest: list[Sample] = []
        for app in snapshot.apps:
            for name, queue in _cap_queues(app.queues, limit).items():
                depth.append(((app.app, name), float(queue.depth)))
                if queue.oldest is not None:
                    oldest.append(((app.app, name), queue.oldest))
        yield gauge_from(
            "pynenc_broker_queue_depth",
            self.cached("Routed messages not yet picked up by a runner"),
            ["app", "queue"],
            depth,
        )
        yield gauge_from(
            "pynenc_broker_oldest_message_timestamp_seconds",
            self.cached("When (Unix time) the oldest message still in the queue was routed"),
            ["app", "queue"],
            oldest,
        )

    def _counts(self, counts: Counts) -> Iterator[Metric]:
        settings = self.view.settings()
        invocations: list[Sample] = []
        runs: list[Sample] = []
        for app in counts.apps:
            invocations += _by_task(app, settings.max_pipelines, settings.max_statuses)
            capped = cap_statuses(app.runs_by_status, app.statuses, settings.max_statuses)
            runs += [((app.app, status), float(n)) for status, n in capped.items()]
        yield gauge_from(
            "pynenc_invocations",
            self.counted(
                f"Invocations by task and current status; every status of the app's layout per task, tasks past "
                f"{settings.max_pipelines} are 'other'"
            ),
            ["app", "task", "status"],
            invocations,
        )
        yield gauge_from(
            "pynenc_runs",
            self.counted("Top-level invocations (no parent invocation) by current status: what workflow_runs counts"),
            ["app", "status"],
            runs,
        )


def _by_task(app: AppCounts, max_tasks: int, max_statuses: int) -> list[Sample]:
    weights: Counter[str] = Counter()
    unknown: Counter[str] = Counter()
    for (task, status), n in app.by_task_status.items():
        weights[task] += n
        if status not in app.statuses:
            unknown[status] += n
    tasks = top_values(weights, max_tasks)
    statuses = top_values(unknown, max_statuses)
    folded: Counter[tuple[str, str]] = Counter()
    for task in {t if t in tasks else OTHER for t in weights}:
        for status in app.statuses:
            folded[(task, status)] += 0
    for (task, status), n in app.by_task_status.items():
        key_status = status if status in app.statuses or status in statuses else OTHER
        folded[(task if task in tasks else OTHER, key_status)] += n
    return [((app.app, task, status), float(n)) for (task, status), n in folded.items()]


def _cap_latest(latest: dict[str, float], limit: int) -> dict[str, float]:
    kept = set(sorted(latest)[:limit])
    capped: dict[str, float] = {}
    for cls, ts in latest.items():
        key = cls if cls in kept else OTHER
        capped[key] = max(capped.get(key, ts), ts)
    return capped


def _cap_queues(queues: dict[str, Queue], limit: int) -> dict[str, Queue]:
    kept = top_values({name: q.depth for name, q in queues.items()}, limit)
    capped: dict[str, Queue] = {}
    for name, queue in queues.items():
        key = name if name in kept else OTHER
        before = capped.get(key)
        if before is None:
            capped[key] = queue
            continue
        times = [t for t in (before.oldest, queue.oldest) if t is not None]
        capped[key] = Queue(before.depth + queue.depth, min(times) if times else None)
    return capped


def _finished(totals: FinishedTotals, apps: list[str]) -> Iterator[Metric]:
    invocations = CounterMetricFamily(
        "pynenc_invocations_finished",
        "Invocations seen reaching a final status, by task (a cursor over the append-only history; "
        "seeded from the rows present at start)",
        labels=["app", "task", "status"],
    )
    for (app, task, status), n in sorted(totals.invocations.items()):
        invocations.add_metric([printable(app), printable(task), status], n)
    yield invocations
    runs = CounterMetricFamily(
        "pynenc_runs_finished",
        "Top-level invocations seen reaching a final status (what workflow_runs_finished_total counts)",
        labels=["app", "status"],
    )
    counted = Counter(totals.runs)
    for app in apps:
        for status in FINAL_STATUSES:
            counted[(app, status)] += 0
    for (app, status), n in sorted(counted.items()):
        runs.add_metric([printable(app), status], n)
    yield runs
    retries = CounterMetricFamily(
        "pynenc_invocation_retries", "Retries (history rows with status retry) by task", labels=["app", "task"]
    )
    for (app, task), n in sorted(totals.retries.items()):
        retries.add_metric([printable(app), printable(task)], n)
    yield retries
    failures = CounterMetricFamily(
        "pynenc_invocation_failures",
        "Invocations that finished failed, by task and exception class name (unknown: no exception stored)",
        labels=["app", "task", "error"],
    )
    for (app, task, error), n in sorted(totals.failures.items()):
        failures.add_metric([printable(app), printable(task), printable(error)], n)
    yield failures
    yield _histograms(
        "pynenc_invocation_run_duration_seconds",
        "First running to final status, by task (invocations finishing since start, plus those that finished "
        "within metrics.run_duration_window before it)",
        totals.run_durations,
    )
    yield _histograms(
        "pynenc_invocation_queue_wait_seconds",
        "First registered to first running, by task, of the same invocations",
        totals.queue_waits,
    )
    top = HistogramMetricFamily(
        "pynenc_run_duration_seconds",
        "Run durations of top-level invocations (what workflow_run_duration_seconds sums)",
        labels=["app"],
    )
    for app, histogram in sorted(totals.top_level_durations.items()):
        top.add_metric([printable(app)], histogram.buckets(), histogram.total)
    yield top


def _histograms(name: str, documentation: str, histograms: dict[tuple[str, str], Histogram]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=["app", "task"])
    for (app, task), histogram in sorted(histograms.items()):
        family.add_metric([printable(app), printable(task)], histogram.buckets(), histogram.total)
    return family
