"""``state-exporter demo``: the daemon on a DB that a simulated Flujo app keeps writing."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from exporter import logs
from exporter.config import Config, load_config
from exporter.daemon import Daemon
from exporter.engines.flujo.simulator import Simulator
from exporter.state import SQLiteBackend

log = logging.getLogger(__name__)


def demo_config_overrides(db: Path, listen: str) -> dict[str, object]:
    return {
        "db": {"path": str(db), "writer_timezone": "UTC"},
        "web": {"listen_address": listen},
        "metrics": {
            "refresh_interval": "2s",
            "counts_interval": "2s",
            "aggregate_interval": "10s",
            "stuck": {"running_after": "20s", "paused_after": "1m"},
        },
    }


def run_demo(directory: Path, listen: str) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    db = directory / "flujo_ops.db"
    config = load_config(None, env=os.environ, overrides=demo_config_overrides(db, listen))
    logs.configure(config.logging.level, config.logging.format)
    return asyncio.run(_demo(config, db))


async def _demo(config: Config, db: Path) -> int:
    backend = SQLiteBackend(db)
    simulator = Simulator(backend)
    await simulator.run_one()  # the DB exists with a first run before the daemon starts
    daemon = Daemon(config)
    stop = asyncio.Event()
    writer = asyncio.create_task(simulator.run_forever(stop))
    host, _, port = config.web.listen_address.rpartition(":")
    print(f"demo: simulated Flujo app writing {db}; metrics at http://{host or 'localhost'}:{port}/metrics")
    try:
        return await daemon.run()
    finally:
        stop.set()
        await writer
        await backend.shutdown()
