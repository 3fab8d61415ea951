"""``state-exporter demo``: the daemon on a DB that a simulated app keeps writing (Flujo by default,
pynenc with ``--engine pynenc``, a Marianne conductor's workspace with ``--engine marianne``, a seeknal
project's ``DatabaseStateBackend`` DB with ``--engine seeknal``)."""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
from collections.abc import Callable, Coroutine
from pathlib import Path

from exporter import logs
from exporter.config import Config, load_config
from exporter.daemon import Daemon

log = logging.getLogger(__name__)

DEMO_ENGINES = ("flujo", "pynenc", "marianne", "seeknal")
DEMO_FILES = {
    "flujo": "flujo_ops.db",
    "pynenc": "pynenc_demo.db",
    "marianne": "marianne-workspace/.marianne-state.db",
    "seeknal": "seeknal-project/state.db",
}
# The Marianne demo's conductor also keeps its registry here (a second daemon can watch it).
MARIANNE_REGISTRY = "marianne-conductor/daemon-state.db"
# The demo's pynenc app overrides pynenc's stuck thresholds (as apps may) so that its dead runners'
# invocations turn stuck within the demo's first minute rather than after pynenc's 10 minutes.
PYNENC_DEMO_CONFIG = {"runner_considered_dead_after_minutes": 0.5, "max_pending_seconds": 5.0}


def demo_config_overrides(db: Path, listen: str, engine: str = "flujo") -> dict[str, object]:
    return {
        "db": {"path": str(db), "writer_timezone": "UTC", "engine": engine},
        "web": {"listen_address": listen},
        "metrics": {
            "refresh_interval": "2s",
            "counts_interval": "2s",
            "aggregate_interval": "10s",
            "stuck": {"running_after": "20s", "paused_after": "1m"},
        },
    }


def run_demo(directory: Path, listen: str, engine: str = "flujo") -> int:
    if engine not in DEMO_ENGINES:
        raise ValueError(f"no demo for engine {engine!r}")
    directory.mkdir(parents=True, exist_ok=True)
    db = directory / DEMO_FILES[engine]
    config = load_config(None, env=os.environ, overrides=demo_config_overrides(db, listen, engine))
    logs.configure(config.logging.level, config.logging.format)
    demo = {"flujo": _flujo_demo, "pynenc": _pynenc_demo, "marianne": _marianne_demo, "seeknal": _seeknal_demo}[engine]
    return asyncio.run(demo(config, db))


async def _serve_while(
    config: Config,
    db: Path,
    what: str,
    app: Callable[[asyncio.Event], Coroutine[object, object, None]],
    close: Callable[[], object],
) -> int:
    """The daemon, while the simulated ``app`` keeps writing until the daemon stops; then ``close``
    (a coroutine function or a plain one) releases the app's DB handles."""
    daemon = Daemon(config)
    stop = asyncio.Event()
    writing = asyncio.create_task(app(stop))
    _announce(config, what, db)
    try:
        return await daemon.run()
    finally:
        stop.set()
        await writing
        closed = close()
        if inspect.isawaitable(closed):
            await closed


def _announce(config: Config, what: str, db: Path) -> None:
    host, _, port = config.web.listen_address.rpartition(":")
    print(f"demo: simulated {what} writing {db}; metrics at http://{host or 'localhost'}:{port}/metrics")


async def _flujo_demo(config: Config, db: Path) -> int:
    from exporter.engines.flujo.simulator import Simulator
    from exporter.state import SQLiteBackend

    backend = SQLiteBackend(db)
    simulator = Simulator(backend)
    await simulator.run_one()  # the DB exists with a first run before the daemon starts
    return await _serve_while(config, db, "Flujo app", simulator.run_forever, backend.shutdown)


async def _pynenc_demo(config: Config, db: Path) -> int:
    from exporter.engines.pynenc.simulator import DEMO_APP, PynencWriter, Simulator

    writer = PynencWriter(db, DEMO_APP, config_values=PYNENC_DEMO_CONFIG)
    simulator = Simulator(writer)
    await simulator.run_one()  # the app's tables hold a finished call before the daemon starts
    return await _serve_while(config, db, f"pynenc app {DEMO_APP!r}", simulator.run_forever, writer.close)


async def _marianne_demo(config: Config, db: Path) -> int:
    from exporter.engines.marianne.simulator import Conductor, RegistryWriter, WorkspaceWriter

    workspace = WorkspaceWriter(db.parent)
    registry = RegistryWriter(db.parent.parent / MARIANNE_REGISTRY)
    conductor = Conductor([workspace], registry)
    await conductor.run_one("clean")  # the workspace holds a finished job before the daemon starts
    what = f"Marianne conductor (registry {registry.path})"
    return await _serve_while(config, db, what, conductor.run_forever, registry.close)


async def _seeknal_demo(config: Config, db: Path) -> int:
    from exporter.engines.seeknal.simulator import Project, SeeknalWriter
    from exporter.timeparse import resolve_timezone

    writer = SeeknalWriter(db)
    # The project writes naive local times in the zone the daemon is told they are in.
    project = Project(writer, tz=resolve_timezone(config.db.writer_timezone))
    await project.run_one("clean")  # the DB holds a finished run before the daemon starts
    return await _serve_while(config, db, "seeknal project (DatabaseStateBackend)", project.run_forever, writer.close)
