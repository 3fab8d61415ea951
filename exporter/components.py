"""Optional features of the daemon (span export, jobs) as uniform background components."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)
DEFAULT_STATE_DIR = Path("var/state")


@dataclass(frozen=True)
class Health:
    """Whether a component can do its work; ``reason`` is short and names no path (shown by /readyz)."""

    ok: bool
    reason: str


class Service(Protocol):
    async def run(self, stop: asyncio.Event) -> None: ...

    def collector(self) -> Collector: ...

    def health(self) -> Health:
        """Shown by /readyz and ``component_up``."""
        ...


def state_directory() -> Path:
    """The daemon's own state: systemd's ``$STATE_DIRECTORY`` (first entry), else ``./var/state``."""
    configured = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(configured) if configured else DEFAULT_STATE_DIR


RESTART_BACKOFF_S = (1.0, 5.0, 30.0, 60.0)


@dataclass
class Component:
    """A service running as a supervised task, its metrics registered while it runs.

    The supervisor is the service's watchdog: if its loop ends with an exception it is logged (the
    traceback once per kind of error), counted in ``restarts``, shown by :meth:`health`, and the
    loop is started again after a backoff, until the daemon stops."""

    name: str
    service: Service
    registry: CollectorRegistry
    restarts: int = 0
    backoff: tuple[float, ...] = RESTART_BACKOFF_S
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None
    _collector: Collector | None = None
    _crash: str | None = None
    _logged: set[str] = field(default_factory=set)

    def start(self) -> None:
        self._collector = self.service.collector()
        self.registry.register(self._collector)
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._supervise(), name=self.name)

    async def stop(self, grace: float) -> None:
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._task, grace)
            self._task = None
        if self._collector is not None:
            self.registry.unregister(self._collector)
            self._collector = None

    def health(self) -> Health:
        if self._crash is not None:
            return Health(False, f"{self.name} stopped unexpectedly ({self._crash}) and is being restarted")
        try:
            return self.service.health()
        except Exception as exc:  # a broken health check must not break /readyz
            return Health(False, f"{self.name} health check failed: {type(exc).__name__}: {exc}")

    async def _supervise(self) -> None:
        while not self._stop.is_set():
            try:
                await self.service.run(self._stop)
                self._crash = None
                return
            except Exception as exc:
                self._crash = f"{type(exc).__name__}: {exc}"
                self.restarts += 1
                first = type(exc).__name__ not in self._logged
                self._logged.add(type(exc).__name__)
                log.error(
                    "%s stopped unexpectedly: %s; restarting", self.name, self._crash, exc_info=exc if first else None
                )
            delay = self.backoff[min(self.restarts - 1, len(self.backoff) - 1)]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
            self._crash = None  # restarted: healthy again unless it fails again


COMPONENT_NAMES = ("traces", "jobs")


class ComponentsCollector(Collector):
    """Each optional component's health and restarts, all known names present."""

    def __init__(self, components: Callable[[], Mapping[str, Component]]) -> None:
        self._components = components

    def collect(self) -> Iterator[Metric]:
        running = self._components()
        up = GaugeMetricFamily(
            "state_exporter_component_up",
            "1 when the component is enabled and working, 0 when it is failing or not enabled",
            labels=["component"],
        )
        restarts = CounterMetricFamily(
            "state_exporter_component_restarts",
            "Times the component's loop ended with an unexpected error and was restarted",
            labels=["component"],
        )
        for name in sorted({*COMPONENT_NAMES, *running}):
            component = running.get(name)
            up.add_metric([name], 1 if component is not None and component.health().ok else 0)
            restarts.add_metric([name], component.restarts if component is not None else 0)
        yield up
        yield restarts
