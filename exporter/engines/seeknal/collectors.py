"""seeknal's own metric families (``seeknal_*``), read from the refresh tiers only.

``node`` labels: the first ``metrics.max_steps`` node ids by first execution keep their own label,
later ones are ``other`` (a new node never pushes an older one out, so counters only grow).
Error texts (``metadata_json.error``) are never read into a label.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.collectors.base import View, ViewCollector, gauge_from, printable
from exporter.engines.seeknal.snapshot import NODE_DURATION_BUCKETS, Aggregates, Counts, Snapshot
from exporter.engines.seeknal.statuses import FINISHED_NODE_STATUSES, NODE_STATUSES, RUN_STATUSES
from exporter.labels import OTHER, top_values
from exporter.model import Histogram

Sample = tuple[tuple[str, ...], float]


def seeknal_collectors(view: View) -> Sequence[Collector]:
    return (SeeknalCollector(view),)


class NodeLabels:
    """The first ``limit`` node ids by first execution keep their label; a node the last aggregate
    has not seen yet (a first run) keeps its own while there is room."""

    def __init__(self, order: Sequence[str], limit: int) -> None:
        self._kept = frozenset(order[:limit])
        self._room = len(self._kept) < limit

    def __call__(self, node: str) -> str:
        return node if node in self._kept or self._room else OTHER


class SeeknalCollector(ViewCollector):
    def collect(self) -> Iterator[Metric]:
        state = self.view.state()
        aggregates = state.aggregates if isinstance(state.aggregates, Aggregates) else None
        label = NodeLabels(aggregates.node_order if aggregates else (), self.view.settings().max_steps)
        if isinstance(state.fast, Snapshot):
            yield from self._snapshot(state.fast, label)
        if isinstance(state.counts, Counts):
            yield from self._counts(state.counts)
        if aggregates is not None:
            yield from self._aggregates(aggregates, label)

    def _snapshot(self, snapshot: Snapshot, label: NodeLabels) -> Iterator[Metric]:
        yield gauge_from(
            "seeknal_nodes_stuck",
            self.cached(
                "Nodes running with no write for longer than their threshold (metrics.stuck.per_pipeline by "
                "node id, else metrics.stuck.running_after when set, else 30m)"
            ),
            [],
            [((), float(len(snapshot.stuck)))],
        )
        since: dict[str, float] = {}
        for node in snapshot.running:
            key = label(node.node_id)
            since[key] = min(since.get(key, node.since), node.since)
        yield gauge_from(
            "seeknal_node_running_since_timestamp_seconds",
            self.cached("When (Unix time) each running node started: last_run minus duration_ms"),
            ["node"],
            [((node,), at) for node, at in since.items()],
        )
        yield gauge_from(
            "seeknal_locks_held",
            self.cached("Rows in backend_locks (released only explicitly; 0 in the file layout, which has none)"),
            [],
            [((), float(snapshot.locks_held))],
        )
        yield gauge_from(
            "seeknal_lock_oldest_timestamp_seconds",
            self.cached("When (Unix time, locked_at in UTC) the oldest held lock was taken"),
            [],
            [] if snapshot.oldest_lock is None else [((), snapshot.oldest_lock)],
        )

    def _counts(self, counts: Counts) -> Iterator[Metric]:
        settings = self.view.settings()
        runs: Counter[str] = Counter(dict.fromkeys(RUN_STATUSES, 0))
        runs.update(counts.runs_by_status)
        yield gauge_from(
            "seeknal_runs",
            self.counted(
                "Runs by status derived from their nodes: failed if any failed, else running if any running or "
                "pending, else success"
            ),
            ["status"],
            [((status,), float(runs.get(status, 0))) for status in sorted({*RUN_STATUSES, *runs})],
        )
        kinds = top_values(Counter(kind for kind, _ in counts.latest_nodes.elements()), settings.max_pipelines)
        nodes: Counter[tuple[str, str]] = Counter()
        for kind in {k if k in kinds else OTHER for k, _ in counts.latest_nodes}:
            for status in NODE_STATUSES:
                nodes[(kind, status)] += 0
        for (kind, status), n in counts.latest_nodes.items():
            nodes[(kind if kind in kinds else OTHER, status)] += n
        yield gauge_from(
            "seeknal_nodes",
            self.counted("Nodes of the latest run (by last_run) by kind (node id before the dot) and status"),
            ["kind", "status"],
            [(key, float(n)) for key, n in nodes.items()],
        )

    def _aggregates(self, aggregates: Aggregates, label: NodeLabels) -> Iterator[Metric]:
        executions = CounterMetricFamily(
            "seeknal_node_executions",
            self.aggregated(
                "Finished node executions, one per (node_id, last_run): rows carried over into later runs count once"
            ),
            labels=["node", "status"],
        )
        folded: Counter[tuple[str, str]] = Counter()
        for node in {label(n) for n in aggregates.node_order}:
            for status in FINISHED_NODE_STATUSES:
                folded[(node, status)] += 0
        for (node, status), n in aggregates.executions.items():
            folded[(label(node), status)] += n
        for (node, status), n in sorted(folded.items()):
            executions.add_metric([printable(node), status], n)
        yield executions
        durations: dict[str, Histogram] = {}
        for node, histogram in aggregates.durations.items():
            durations.setdefault(label(node), Histogram(NODE_DURATION_BUCKETS)).merge(histogram)
        family = HistogramMetricFamily(
            "seeknal_node_duration_seconds",
            self.aggregated("duration_ms of the same finished executions"),
            labels=["node"],
        )
        for node, histogram in sorted(durations.items()):
            family.add_metric([printable(node)], histogram.buckets(), histogram.total)
        yield family
        yield gauge_from(
            "seeknal_node_last_success_timestamp_seconds",
            self.aggregated("Latest last_run (Unix time) of a success row of each node"),
            ["node"],
            _folded(aggregates.last_success, label, max),
        )
        yield gauge_from(
            "seeknal_node_rows_processed",
            self.aggregated("row_count of each node's latest finished execution"),
            ["node"],
            _folded(aggregates.rows_processed, label, _sum),
        )
        yield gauge_from(
            "seeknal_node_completed_intervals",
            self.aggregated("Entries in completed_intervals_json of each node's latest row"),
            ["node"],
            _folded({n: float(v) for n, v in aggregates.completed_intervals.items()}, label, _sum),
        )
        yield gauge_from(
            "seeknal_node_restatement_intervals_pending",
            self.aggregated("Entries in restatement_intervals_json of each node's latest row"),
            ["node"],
            _folded({n: float(v) for n, v in aggregates.restatement_pending.items()}, label, _sum),
        )


def _sum(a: float, b: float) -> float:
    return a + b


def _folded(values: Mapping[str, float], label: NodeLabels, combine: Callable[[float, float], float]) -> list[Sample]:
    out: dict[str, float] = {}
    for node, value in values.items():
        key = label(node)
        out[key] = value if key not in out else combine(out[key], value)
    return [((node,), value) for node, value in out.items()]
