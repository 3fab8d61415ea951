"""Time flujo 0.6.11's own ``PostgresBackend.get_workflow_stats()``; runs INSIDE benchmarks/.venv-flujo06.

    benchmarks/.venv-flujo06/bin/python benchmarks/flujo06_pg_probe.py --url postgresql://... --repeats 10

``get_workflow_stats()`` is what flujo's own Prometheus collector calls on every scrape.  The backend is opened with
``auto_migrate=False`` (flujo's migration 003 needs pgvector, and the benchmark's database holds flujo's schema
already), its pool warmed by one untimed call, then the call is timed ``--repeats`` times in one event loop.  One
JSON object on stdout: ``{"stats_s": [...], "stats": {...}, "versions": {...}}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import time
from importlib import metadata
from typing import Any


async def measure(url: str, repeats: int) -> dict[str, Any]:
    from flujo.state.backends.postgres import PostgresBackend

    backend = PostgresBackend(url, auto_migrate=False)
    stats = await backend.get_workflow_stats()  # pool set-up and first connection: not timed
    took = []
    for _ in range(repeats):
        start = time.perf_counter()
        stats = await backend.get_workflow_stats()
        took.append(time.perf_counter() - start)
    shutdown = getattr(backend, "shutdown", None)
    if shutdown is not None:
        await shutdown()
    versions = {"python": platform.python_version()}
    for dist in ("flujo", "asyncpg"):
        versions[dist] = metadata.version(dist)
    return {"stats_s": took, "stats": stats, "versions": versions}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args.url, args.repeats)), default=str))


if __name__ == "__main__":
    main()
