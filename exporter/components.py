"""Optional features of the daemon (span export, jobs) as uniform background components."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)
DEFAULT_STATE_DIR = Path("var/state")


class Service(Protocol):
    async def run(self, stop: asyncio.Event) -> None: ...

    def collector(self) -> Collector: ...


def state_directory() -> Path:
    """The daemon's own state: systemd's ``$STATE_DIRECTORY`` (first entry), else ``./var/state``."""
    configured = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(configured) if configured else DEFAULT_STATE_DIR


@dataclass
class Component:
    """A service running as a task, its metrics registered while it runs."""

    name: str
    service: Service
    registry: CollectorRegistry
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None
    _collector: Collector | None = None

    def start(self) -> None:
        self._collector = self.service.collector()
        self.registry.register(self._collector)
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self.service.run(self._stop), name=self.name)
        self._task.add_done_callback(self._report_crash)

    async def stop(self, grace: float) -> None:
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._task, grace)
            self._task = None
        if self._collector is not None:
            self.registry.unregister(self._collector)
            self._collector = None

    def _report_crash(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("%s stopped unexpectedly", self.name, exc_info=task.exception())
