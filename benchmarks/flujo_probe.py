"""Measure flujo 0.4.35's own PrometheusCollector; runs INSIDE benchmarks/.venv-flujo.

    benchmarks/.venv-flujo/bin/python benchmarks/flujo_probe.py --db benchmarks/.data/flujo0435-N.flujo-copy.db

flujo's ``SQLiteBackend`` migrates and writes the file on first use (``_init_db``), so this must
only ever be pointed at a throw-away copy of the generated DB, never at the DB our daemon reads.

Protocol: one command per line on stdin, one JSON object per line on stdout (everything flujo or
its libraries print goes to stderr instead):

* ``collect K`` -> ``{"collect_s": [K durations], "samples": {...}}``: ``list(collector.collect())``
  K times, sequentially (each runs ``get_workflow_stats()`` in a new event loop, as on a scrape);
  the very first ``collect`` also reports ``first_collect_s`` (includes ``_init_db`` on the file).
* ``serve`` -> ``{"port": P}``: ``flujo.telemetry.start_prometheus_server(0, backend)`` (global
  registry, prometheus_client's threaded WSGI server); the parent then scrapes ``/metrics``.
* ``quit`` (or EOF) -> exit.

The first line written is ``{"ready": true, "pid": ..., "versions": {...}}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO


def _protocol_stream() -> TextIO:
    """Keep the real stdout for JSON lines; route everything else that prints to stderr."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return proto


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for dist in ("flujo", "prometheus-client", "aiosqlite"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = "missing"
    return found


def _samples(families: list[Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in families:
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = float(sample.value)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", type=Path, required=True, help="flujo's OWN copy of the generated DB")
    args = parser.parse_args()
    proto = _protocol_stream()

    from flujo.state.backends.sqlite import SQLiteBackend
    from flujo.telemetry.prometheus import PrometheusCollector, start_prometheus_server

    def reply(payload: dict[str, Any]) -> None:
        proto.write(json.dumps(payload) + "\n")
        proto.flush()

    backend = SQLiteBackend(args.db)
    collector = PrometheusCollector(backend)
    first = True
    reply({"ready": True, "pid": os.getpid(), "versions": _versions()})
    for line in sys.stdin:
        command, *rest = line.split() or [""]
        try:
            if command == "collect":
                payload: dict[str, Any] = {}
                if first:
                    started = time.perf_counter()
                    list(collector.collect())
                    payload["first_collect_s"] = time.perf_counter() - started
                    first = False
                times, families = [], []
                for _ in range(int(rest[0]) if rest else 1):
                    started = time.perf_counter()
                    families = list(collector.collect())
                    times.append(time.perf_counter() - started)
                reply({**payload, "collect_s": times, "samples": _samples(families)})
            elif command == "serve":
                wait_ready, port = start_prometheus_server(0, backend)
                reply({"port": port, "ready": bool(wait_ready())})
            elif command in ("quit", ""):
                break
            else:
                reply({"error": f"unknown command {command!r}"})
        except Exception as exc:  # report to the parent instead of dying silently
            reply({"error": f"{type(exc).__name__}: {exc}"})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
