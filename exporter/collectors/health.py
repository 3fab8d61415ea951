"""The exporter's own health: build, refresh phases, snapshot age, errors."""

from __future__ import annotations

import platform
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from exporter import __version__
from exporter.collectors.base import ViewCollector
from exporter.reader import Problem
from exporter.refresh import PHASES


class HealthCollector(ViewCollector):
    def collect(self) -> Iterator[Metric]:
        state = self.view.state()
        build = GaugeMetricFamily(
            "state_exporter_build_info",
            "Exporter version and Python runtime",
            labels=["version", "python_version"],
        )
        build.add_metric([__version__, platform.python_version()], 1)
        yield build
        success = GaugeMetricFamily(
            "state_exporter_collector_success",
            "1 when the collector's last refresh succeeded; on 0 its metrics are the last good values",
            labels=["collector"],
        )
        duration = GaugeMetricFamily(
            "state_exporter_collector_duration_seconds",
            "Duration of the collector's last refresh",
            labels=["collector"],
        )
        last = GaugeMetricFamily(
            "state_exporter_collector_last_success_timestamp_seconds",
            "Unix time of the collector's last successful refresh",
            labels=["collector"],
        )
        for phase in PHASES:
            health = state.phases[phase]
            success.add_metric([phase], 1 if health.success else 0)
            duration.add_metric([phase], health.duration_s)
            if health.last_success is not None:
                last.add_metric([phase], health.last_success.timestamp())
        yield from (success, duration, last)
        taken = GaugeMetricFamily(
            "state_exporter_snapshot_timestamp_seconds", "Unix time the served snapshot was taken"
        )
        if state.fast is not None:
            taken.add_metric([], state.fast.taken_at.timestamp())
        yield taken
        ready = GaugeMetricFamily(
            "state_exporter_db_ready", "1 when the last refresh could read the DB and recognised its layout"
        )
        ready.add_metric([], 0 if state.problem is not None or state.schema is None else 1)
        yield ready
        if state.schema is not None:
            engine = GaugeMetricFamily(
                "state_exporter_engine_info",
                "The engine that wrote the DB and its layout, recognised from the tables and columns present",
                labels=["engine", "layout"],
            )
            engine.add_metric([state.schema.engine, str(state.schema.layout)], 1)
            yield engine
        errors = CounterMetricFamily("state_exporter_query_errors", "Failed DB reads by reason", labels=["reason"])
        for problem in Problem:
            errors.add_metric([problem.value], state.errors.get(problem, 0))
        yield errors
        bad = CounterMetricFamily(
            "state_exporter_bad_values",
            "Stored values the exporter could not interpret (logged with their run_id), by table and column",
            labels=["table", "column"],
        )
        for (table, column), n in sorted(state.bad_values.items()):
            bad.add_metric([table, column], n)
        yield bad


class SnapshotAgeCollector(ViewCollector):
    """Computed at scrape time, so it lives outside the cached snapshot exposition."""

    def collect(self) -> Iterator[Metric]:
        state = self.view.state()
        age = GaugeMetricFamily(
            "state_exporter_snapshot_age_seconds", "Seconds since the served snapshot was taken (at scrape time)"
        )
        if state.fast is not None:
            age.add_metric([], max((self.view.clock() - state.fast.taken_at).total_seconds(), 0.0))
        yield age
