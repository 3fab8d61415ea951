"""Multi-target mode at run time: one refresher, snapshot and registry per configured target.

``/probe?target=NAME`` serves that target's engine and overview families, rendered from its own last
snapshot (like ``/metrics`` in single-target mode: no DB read at scrape time).  The exporter's own
``state_exporter_*`` families of every target are on ``/metrics``, each sample with a ``target`` label
(names come from the configuration only, so the label is bounded); ``state_exporter_build_info`` once,
without it.  The exporter adds no ``instance`` label: Prometheus' relabelling sets it from the target.

With ``traces.enabled`` every target runs its own span export (a supervised component of its own):
the top-level ``traces`` section, the target's name as ``id_namespace`` (so two targets holding the
same run ids give different traces, each resource naming its target in ``state_exporter.source``) and
a state file of its own, ``traces-target-NAME.sqlite`` in the state directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from exporter.clock import Clock
from exporter.collectors import EngineCollector, View
from exporter.collectors.health import HealthCollector, SnapshotAgeCollector
from exporter.collectors.overview import OverviewCollector
from exporter.components import Component, ComponentsCollector, state_directory
from exporter.config import ConfigError, DatabaseConfig
from exporter.exposition import CachedExposition
from exporter.reader import DatabaseUnavailable, Reader, StateReader
from exporter.readiness import Readiness, component_failing
from exporter.refresh import Refresher
from exporter.targets.config import TargetConfig
from exporter.timeparse import resolve_timezone
from exporter.traces.config import TracesConfig, apply_otel_env

log = logging.getLogger(__name__)

TARGET_LABEL = "target"
_UNLABELLED = frozenset({"state_exporter_build_info"})  # the process's, not a target's
_STOP_GRACE_S = 2.0


def db_reader(db: DatabaseConfig, halt: threading.Event | None = None) -> Reader:
    """The reader of ``db``: Postgres for ``db.url``, else the SQLite/plain-file reader of ``db.path``;
    ``halt`` ends waits when the daemon stops.  The one place the daemon and every target make theirs."""
    if db.url is not None:
        from exporter.reader.postgres import PostgresReader  # psycopg: only when a URL is configured

        return PostgresReader(
            db.url,
            password_file=db.password_file,
            engine=db.engine,
            query_timeout=db.query_timeout.total_seconds(),
            halt=halt,
        )
    if db.path is None:
        raise ConfigError("db.path: required (set it in the config file, STATE_EXPORTER_DB__PATH or --db)")
    return sqlite_reader(db, db.path, halt)


def sqlite_reader(db: DatabaseConfig, path: Path, halt: threading.Event | None = None) -> StateReader:
    """The SQLite/plain-file reader of ``db`` at ``path``."""
    return StateReader(
        path,
        naive_timezone=resolve_timezone(db.writer_timezone),
        engine=db.engine,
        busy_timeout=db.busy_timeout.total_seconds(),
        query_timeout=db.query_timeout.total_seconds(),
        halt=halt,
    )


def target_traces(traces: TracesConfig, name: str) -> TracesConfig:
    """Target ``name``'s span export settings: ``traces`` with the name as id namespace and a state file
    of the target's own (``target_problems`` refuses both keys at the top level with targets)."""
    return traces.model_copy(update={"id_namespace": name, "state_file": target_state_file(name)})


def target_state_file(name: str) -> Path:
    return state_directory() / f"traces-target-{name}.sqlite"


class Target:
    """One configured DB: its refresher, the cached exposition of its snapshot, its own metrics (health,
    components) and, with ``traces``, its span export."""

    def __init__(
        self,
        name: str,
        config: TargetConfig,
        clock: Clock,
        halt: threading.Event,
        traces: TracesConfig | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.traces = traces  # this target's span export settings (None: off)
        self._clock, self._halt = clock, halt
        self.refresher = Refresher(db_reader(config.db, halt), lambda: self.config.metrics, clock)
        view = View(lambda: self.refresher.state, lambda: self.config.metrics, clock)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(EngineCollector(view))
        registry.register(OverviewCollector(view))
        # Nothing of a target is rendered at scrape time: its live part is empty.
        self._exposition = CachedExposition(
            registry, CollectorRegistry(auto_describe=False), lambda: (self.refresher.state, self.config)
        )
        self.components: dict[str, Component] = {}
        # The exporter's own metrics of this target, served on /metrics with its name as label.
        self.own = CollectorRegistry(auto_describe=False)
        for collector in (
            HealthCollector(view),
            SnapshotAgeCollector(view),
            ComponentsCollector(lambda: self.components),
        ):
            self.own.register(collector)
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def render(self, accept: str) -> tuple[bytes, str]:
        return self._exposition.render(accept)

    def checks(self, now: datetime) -> list[Readiness]:
        """The single-target daemon's readiness checks, each detail naming the target (``/readyz``
        shows details only when asked to)."""
        refresher = self.refresher
        if refresher.state.refreshed_at is None:  # before the first refresh: open the DB once for the reason
            try:
                refresher.reader.schema()
            except DatabaseUnavailable as exc:
                return [Readiness(False, exc.problem.value, f"target {self.name}: {exc.message}")]
        checks = [refresher.ready(now)]
        for name, component in self.components.items():
            health = component.health()
            checks.append(Readiness(health.ok, component_failing(name), health.reason))
        return [replace(check, detail=f"target {self.name}: {check.detail or check.reason}") for check in checks]

    def start(self) -> None:
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self.refresher.run(self._stop), name=f"refresh {self.name}")
        self._start_traces()

    async def stop(self, grace: float) -> None:
        self._stop.set()
        components = [component.stop(grace) for component in self.components.values()]
        self.components = {}
        await asyncio.gather(*components, self._stop_refresh(grace))

    async def replace_traces(self, traces: TracesConfig | None, grace: float) -> None:
        """A reload changed this target's span export: the old one stops, then the new one starts."""
        old = self.components.pop("traces", None)
        if old is not None:
            await old.stop(grace)
        self.traces = traces
        self._start_traces()

    def _start_traces(self) -> None:
        if self.traces is None:
            return
        from exporter.traces.tailer import SpanTailer  # the transports: only when span export is on

        traces = apply_otel_env(self.traces)
        state = traces.state_file or target_state_file(self.name)
        state.parent.mkdir(parents=True, exist_ok=True)
        reader = db_reader(self.config.db, self._halt)
        component = Component("traces", SpanTailer(traces, reader, state, clock=self._clock), self.own)
        component.start()
        self.components["traces"] = component

    async def _stop_refresh(self, grace: float) -> None:
        if self._task is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._task, grace)
            self._task = None


class Targets:
    """Every configured target; :meth:`reload` applies a new ``targets`` section while running."""

    def __init__(
        self,
        configs: Mapping[str, TargetConfig],
        clock: Clock,
        halt: threading.Event,
        traces: TracesConfig | None = None,
    ) -> None:
        """``traces``: the top-level span export settings when enabled (each target gets its own)."""
        self._clock = clock
        self._halt = halt
        self.by_name: dict[str, Target] = {
            name: Target(name, c, clock, halt, _traces_of(traces, name)) for name, c in configs.items()
        }

    def names(self) -> list[str]:
        return list(self.by_name)

    def render(self, name: str, accept: str) -> tuple[bytes, str] | None:
        """The exposition of target ``name`` (``None``: no such target)."""
        target = self.by_name.get(name)
        return None if target is None else target.render(accept)

    def readiness(self) -> Readiness:
        now = self._clock()
        return Readiness.combined(check for target in self.by_name.values() for check in target.checks(now))

    def start(self) -> None:
        for target in self.by_name.values():
            target.start()

    async def stop(self, grace: float) -> None:
        await asyncio.gather(*(target.stop(grace) for target in self.by_name.values()))

    def reload(
        self, configs: Mapping[str, TargetConfig], traces: TracesConfig | None = None
    ) -> list[asyncio.Task[None]]:
        """Targets whose ``db`` changed start over (a new DB invalidates every watermark); a change of
        ``metrics`` alone is picked up by the running refresher, one of ``traces`` restarts the span
        export alone.  Returns the tasks still stopping old parts."""
        stopping: list[asyncio.Task[None]] = []
        current = self.by_name
        self.by_name = {}
        for name, config in configs.items():
            old = current.pop(name, None)
            wanted = _traces_of(traces, name)
            if old is not None and old.config.db == config.db:
                old.config = config
                if old.traces != wanted:
                    stopping.append(asyncio.create_task(old.replace_traces(wanted, _STOP_GRACE_S)))
                self.by_name[name] = old
                continue
            target = Target(name, config, self._clock, self._halt, wanted)
            self.by_name[name] = target
            if old is None:
                log.info("target %s added", name)
                target.start()
            else:  # the old one lets go of the state file before the new one opens it
                log.info("target %s restarted: its db settings changed", name)
                stopping.append(asyncio.create_task(self._replace(old, target)))
        for name, old in current.items():
            log.info("target %s removed", name)
            stopping.append(asyncio.create_task(old.stop(_STOP_GRACE_S)))
        return stopping

    async def _replace(self, old: Target, new: Target) -> None:
        await old.stop(_STOP_GRACE_S)
        if not self._halt.is_set():  # the daemon is not stopping meanwhile
            new.start()

    def collector(self) -> Collector:
        return _TargetHealth(lambda: self.by_name)


class _TargetHealth(Collector):
    """Every target's ``state_exporter_*`` families merged, each sample labelled with its target."""

    def __init__(self, targets: Callable[[], Mapping[str, Target]]) -> None:
        self._targets = targets

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        unlabelled: dict[str, Metric] = {}
        for name, target in self._targets().items():
            for family in target.own.collect():
                if family.name in _UNLABELLED:
                    unlabelled.setdefault(family.name, family)
                    continue
                into = merged.get(family.name)
                if into is None:
                    into = merged[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
                into.samples.extend(s._replace(labels={TARGET_LABEL: name, **s.labels}) for s in family.samples)
        yield from unlabelled.values()
        yield from merged.values()


def _traces_of(traces: TracesConfig | None, name: str) -> TracesConfig | None:
    return None if traces is None else target_traces(traces, name)
