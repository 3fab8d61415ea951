"""The long-running process: refresh loop, HTTP server, signals (TERM/INT stop, HUP reloads)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from exporter import __version__, logs
from exporter.clock import Clock, system_clock
from exporter.collectors import View, build_registry
from exporter.components import Component, ComponentsCollector, Service, state_directory
from exporter.config import Config, ConfigError, MetricsConfig, load_config, require_db_path
from exporter.exposition import CachedExposition
from exporter.reader import DatabaseUnavailable, Reader, StateReader
from exporter.readiness import Readiness, component_failing
from exporter.refresh import Refresher
from exporter.targets.serve import Targets, db_reader, sqlite_reader
from exporter.timeparse import resolve_timezone
from exporter.traces.config import TracesConfig, apply_otel_env, default_state_file
from exporter.web import bound_port, build_app, start_server

if TYPE_CHECKING:
    from exporter.engines.flujo.jobs.cleanup import ExportedFn
    from exporter.jobs.pg import PostgresTarget
    from exporter.traces.tailer import SpanTailer

log = logging.getLogger(__name__)
STOP_GRACE_S = 4.0


def traces_state_file(config: Config) -> Path:
    return config.traces.state_file or default_state_file(state_directory())


def make_tailer(config: Config, clock: Clock, halt: threading.Event | None = None) -> SpanTailer:
    from exporter.traces.tailer import SpanTailer

    traces = apply_otel_env(config.traces)
    state = traces_state_file(config)
    state.parent.mkdir(parents=True, exist_ok=True)
    return SpanTailer(traces, make_metrics_reader(config, halt), state, clock=clock)


def enabled(traces: TracesConfig) -> TracesConfig | None:
    return traces if traces.enabled else None


def any_job_enabled(config: Config) -> bool:
    jobs = config.jobs
    return jobs.cleanup.enabled or jobs.stale_background_tasks.enabled or jobs.stuck_alerts.enabled


def make_job_runner(
    config: Config,
    clock: Clock,
    exported: ExportedFn | None,
    previous: Service | None = None,
    halt: threading.Event | None = None,
    settings: Callable[[], MetricsConfig] | None = None,
) -> Service:
    """``settings``: the current ``metrics`` section (default: ``config``'s); the stuck-run alerts read
    ``metrics.stuck`` from it at every run, so a reload changing it alone needs no restart."""
    from exporter.jobs.runner import JobRunner

    if config.db.url is not None:
        return JobRunner(
            config.jobs,
            make_postgres_target(config),
            resolve_timezone(config.db.writer_timezone),
            make_metrics_reader(config, halt),  # the stuck-run alerts read through the Postgres reader
            clock,
            exported,
            settings=settings or (lambda: config.metrics),
            previous=previous if isinstance(previous, JobRunner) else None,
        )
    return JobRunner(
        config.jobs,
        require_db_path(config),
        resolve_timezone(config.db.writer_timezone),
        make_reader(config, halt),
        clock,
        exported,
        settings=settings or (lambda: config.metrics),
        previous=previous if isinstance(previous, JobRunner) else None,
    )


def make_postgres_target(config: Config) -> PostgresTarget:
    """The write jobs' own role (``jobs.postgres``); a dry-run cleanup alone only reads and may use
    ``db.url``'s read role (config_checks requires jobs.postgres.url for every job that writes)."""
    from exporter.jobs.pg import PostgresTarget

    pg = config.jobs.postgres
    url, password_file = (pg.url, pg.password_file) if pg.url is not None else (config.db.url, config.db.password_file)
    if url is None:
        raise ConfigError("jobs.postgres.url: required for the write jobs on db.url")
    return PostgresTarget(
        url,
        password_file,
        lock_timeout=config.jobs.write_busy_timeout.total_seconds(),
        statement_timeout=pg.statement_timeout.total_seconds(),
    )


def make_reader(config: Config, halt: threading.Event | None = None) -> StateReader:
    """The SQLite reader of ``db.path`` (the stuck-run alerts read SQLite only); ``halt``: set when the
    daemon stops, so that no read waits out its busy or query timeout."""
    return sqlite_reader(config.db, require_db_path(config), halt)


def make_metrics_reader(config: Config, halt: threading.Event | None = None) -> Reader:
    """The refresher's and span export's reader: Postgres for ``db.url``, else SQLite/plain files."""
    return db_reader(config.db, halt)


class Daemon:
    def __init__(
        self,
        config: Config,
        *,
        config_path: Path | None = None,
        overrides: Mapping[str, Any] | None = None,
        clock: Clock = system_clock,
    ) -> None:
        self.config = config
        self._config_path = config_path
        self._overrides = dict(overrides or {})
        self._clock = clock
        self.halt = threading.Event()
        # Snapshot metrics are rendered once per refresh; scrape-time and component metrics are live.
        self.live_registry = CollectorRegistry(auto_describe=False)
        # Multi-target mode: each target refreshes, renders and exports its spans on its own; /metrics has
        # the live part only, the targets' component families labelled by target.
        self.targets = Targets(config.targets, clock, self.halt, enabled(config.traces)) if config.targets else None
        if self.targets is not None:
            self.live_registry.register(self.targets.collector())
            self.registry = self.live_registry
            self.exposition = CachedExposition(CollectorRegistry(auto_describe=False), self.live_registry, tuple)
        else:
            self.live_registry.register(ComponentsCollector(lambda: self.components))
            self.refresher = Refresher(make_metrics_reader(config, self.halt), lambda: self.config.metrics, clock)
            self.registry = build_registry(
                View(lambda: self.refresher.state, lambda: self.config.metrics, clock), live=self.live_registry
            )
            self.exposition = CachedExposition(
                self.registry, self.live_registry, lambda: (self.refresher.state, self.config)
            )
        self.port: int | None = None
        self._stop = asyncio.Event()
        self._refresh_stop = asyncio.Event()
        self._refresh_task: asyncio.Task[None] | None = None
        self.components: dict[str, Component] = {}
        self._pending_restart: asyncio.Task[None] | None = None
        self._pending_stops: list[asyncio.Task[None]] = []  # targets replaced by a reload
        self._tailer: SpanTailer | None = None

    def readiness(self) -> Readiness:
        """From the last refresh (never a read of its own, except before the first refresh ended:
        then the DB is opened once to give the real reason) and from every component's health."""
        if self.targets is not None:
            checks = [self.targets.readiness()]
        else:
            refresher = self.refresher
            if refresher.state.refreshed_at is None:
                try:
                    refresher.reader.schema()
                except DatabaseUnavailable as exc:
                    return Readiness(False, exc.problem.value, exc.message)
            checks = [refresher.ready(self._clock())]
        for name, component in self.components.items():
            health = component.health()
            checks.append(Readiness(health.ok, component_failing(name), health.reason))
        return Readiness.combined(checks)

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> int:
        app = build_app(
            registry=self.registry,
            readiness=self.readiness,
            web_config=self.config.web,
            version=__version__,
            render=self.exposition.render,
            http_registry=self.live_registry,
            probes=self.targets,
        )
        runner = await start_server(app, self.config.web)
        self.port = bound_port(runner)
        address = self.config.web.listen_address.rsplit(":", 1)[0] + f":{self.port}"
        if self.targets is not None:
            names = ", ".join(self.targets.names())
            log.info("state-exporter %s serving targets %s on %s (at /probe?target=NAME)", __version__, names, address)
        else:
            log.info(
                "state-exporter %s serving %s on %s (metrics at /metrics)",
                __version__,
                self.refresher.reader.path,
                address,
            )
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stop)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        self._start_refreshing()
        self._start_components()
        try:
            await self._stop.wait()
            log.info("stopping")
        finally:
            self.halt.set()  # reads waiting for a lock or running a long query end now
            # Everything stops at once, so the whole stop fits in STOP_GRACE_S (SIGTERM: within 5 s).
            stopping = [component.stop(STOP_GRACE_S / 2) for component in self.components.values()]
            await asyncio.gather(*stopping, *self._pending_stops, self._stop_refreshing())
            await asyncio.wait_for(runner.cleanup(), STOP_GRACE_S / 2)
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(signum)
        return 0

    def _start_components(self, only: set[str] | None = None, previous: Mapping[str, Service] | None = None) -> None:
        """Span export first: the cleanup job asks it which runs were exported.  ``previous``: the
        services being replaced after a reload, whose counters the new ones carry on."""
        previous = previous or {}
        if only is None or "traces" in only:
            traced = self.config.traces.enabled and self.targets is None  # targets export their own
            self._tailer = make_tailer(self.config, self._clock, self.halt) if traced else None
            if self._tailer is not None:
                self._start("traces", self._tailer)
        if any_job_enabled(self.config) and (only is None or "jobs" in only):
            exported = self._tailer.exported_run_ids if self._tailer is not None else None
            runner = make_job_runner(
                self.config, self._clock, exported, previous.get("jobs"), self.halt, lambda: self.config.metrics
            )
            self._start("jobs", runner)

    def _start(self, name: str, service: Service) -> None:
        component = Component(name, service, self.live_registry)
        component.start()
        self.components[name] = component

    async def _restart_components(self, names: set[str]) -> None:
        previous: dict[str, Service] = {}
        for name in names:
            component = self.components.pop(name, None)
            if component is not None:
                await component.stop(STOP_GRACE_S / 2)
                previous[name] = component.service
        self._start_components(names, previous)

    def _start_refreshing(self) -> None:
        if self.targets is not None:
            self.targets.start()
            return
        self._refresh_stop = asyncio.Event()
        self._refresh_task = asyncio.create_task(self.refresher.run(self._refresh_stop))

    async def _stop_refreshing(self) -> None:
        if self.targets is not None:
            await self.targets.stop(STOP_GRACE_S / 2)
            return
        self._refresh_stop.set()
        task = self._refresh_task
        if task is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(task, STOP_GRACE_S / 2)

    def reload(self) -> None:
        """SIGHUP: re-read the config; a bad one is logged and the running one kept."""
        try:
            new = load_config(self._config_path, env=os.environ, overrides=self._overrides)
            if bool(new.targets) != (self.targets is not None):
                raise ConfigError("targets: switching between one DB and targets takes a restart")
            new_db = self.targets is None and new.db != self.config.db
            reader = make_metrics_reader(new, self.halt) if new_db else None
        except (ConfigError, ValueError) as exc:
            log.error("config reload rejected, keeping the running config:\n%s", exc)
            return
        if self.targets is not None:
            self._pending_stops = self.targets.reload(new.targets, enabled(new.traces))
        if new.web != self.config.web:
            log.warning("web settings changed: they take effect after a restart")
        logs.configure(new.logging.level, new.logging.format)
        changed = set()
        if new.traces != self.config.traces or reader is not None:
            changed |= {"traces", "jobs"}  # jobs hold the tailer's exported_run_ids
        if new.jobs != self.config.jobs or new.db != self.config.db:
            changed.add("jobs")
        self.config = new
        if changed:
            self._pending_restart = asyncio.create_task(self._restart_components(changed))
        if reader is not None:
            # A new DB or time zone invalidates every watermark: start over with a fresh refresher.
            self._refresh_stop.set()
            self.refresher = Refresher(reader, lambda: self.config.metrics, self._clock)
            self._start_refreshing()
        log.info("config reloaded from %s", self._config_path)
