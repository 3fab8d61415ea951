"""Optional components run supervised: a crashed loop is logged, counted, shown and restarted."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import astuple

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.registry import Collector
from support import parse_exposition, sample

from exporter.components import Component, ComponentsCollector, Health


class EmptyCollector(Collector):
    def collect(self):  # type: ignore[no-untyped-def]
        return iter(())


class CrashingService:
    """Its loop raises the first ``crashes`` times it is started, then runs until stopped."""

    def __init__(self, crashes: int) -> None:
        self.crashes = crashes
        self.starts = 0
        self.running = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        self.starts += 1
        if self.starts <= self.crashes:
            raise ValueError(f"crash number {self.starts}")
        self.running.set()
        await stop.wait()

    def collector(self) -> Collector:
        return EmptyCollector()

    def health(self) -> Health:
        return Health(True, "ok")


async def test_a_crashing_loop_is_restarted_counted_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry(auto_describe=False)
    service = CrashingService(crashes=3)
    component = Component("traces", service, registry, backoff=(0.01,))
    components = {"traces": component}
    registry.register(ComponentsCollector(lambda: components))
    with caplog.at_level(logging.ERROR, logger="exporter.components"):
        component.start()
        await asyncio.wait_for(service.running.wait(), 5)
    assert service.starts == 4 and component.restarts == 3
    assert component.health() == Health(True, "ok")
    assert sum(1 for r in caplog.records if r.exc_info) == 1  # one traceback for one kind of error
    assert sum(1 for r in caplog.records if "stopped unexpectedly" in r.getMessage()) == 3
    m = parse_exposition(generate_latest(registry).decode())
    assert sample(m, "state_exporter_component_restarts_total", component="traces") == 3
    assert sample(m, "state_exporter_component_up", component="traces") == 1
    assert sample(m, "state_exporter_component_up", component="jobs") == 0  # known, not enabled
    await component.stop(1)


async def test_health_shows_the_crash_until_the_restart() -> None:
    service = CrashingService(crashes=1)
    component = Component("jobs", service, CollectorRegistry(auto_describe=False), backoff=(30.0,))
    component.start()
    while component.restarts == 0:
        await asyncio.sleep(0.01)
    working, reason = astuple(component.health())
    assert not working and "crash number 1" in reason and "jobs" in reason
    await component.stop(1)  # stopping during the backoff ends it at once
    assert service.starts == 1
