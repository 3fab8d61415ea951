"""Benchmark of the state backend (exporter.state.SQLiteBackend).

    .venv/bin/python benchmarks/bench_backend.py [--sizes 100000,1000000] [--repeat 5] [--rebuild]

Measures (median of ``--repeat`` warm runs, after one warm-up call):

* ``list_workflows()`` over 5000 workflows (the seed's bar: < 2 s; our aim: <= 50 ms),
* ``get_workflow_stats_sync()`` (the Prometheus collector path) and a few other admin queries on DBs
  of each size, built with ``save_states`` batches and cached in ``benchmarks/.data/`` (git-ignored),
  keyed by size and generator version.

Rows are realistic: ~10 pipelines, 5 statuses (mostly completed/failed), ``created_at`` spread over
365 days before the build time, JSON contexts of a few hundred bytes, ~3 % background tasks and
``execution_time_ms`` on ~10 % of the rows (resumed runs).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from exporter.state import SQLiteBackend  # noqa: E402

DATA_DIR = Path(__file__).resolve().parent / ".data"
GENERATOR_VERSION = 1
BATCH = 20_000

PIPELINES = [
    ("etl_daily", "1.4.0"),
    ("llm_summarize", "2.1.0"),
    ("approval_flow", "0.9.2"),
    ("doc_ingest", "1.0.3"),
    ("long_job", "3.0.0"),
    ("adhoc_query", "latest"),
    ("healthcheck_ping", "1.0.0"),
    ("classify_tickets", "0.4.1"),
    ("report_weekly", "2.2.0"),
    ("sync_crm", "1.7.5"),
]
STATUSES = ["completed", "failed", "running", "paused", "cancelled"]
STATUS_WEIGHTS = [0.62, 0.25, 0.05, 0.05, 0.03]


def stats_target(size: int) -> float:
    """Our target for the collector path (index-only scans): 10 ms + 15 ms per 100k rows
    (25 ms at 100k, 160 ms at 1M)."""
    return 0.010 + 0.015 * size / 100_000


def generate_states(count: int, seed: int, now: datetime, prefix: str = "run") -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    span = timedelta(days=365).total_seconds()
    for i in range(count):
        pipeline, version = PIPELINES[rng.randrange(len(PIPELINES))]
        status = rng.choices(STATUSES, STATUS_WEIGHTS)[0]
        created = now - timedelta(seconds=rng.random() * span)
        updated = created + timedelta(seconds=rng.randint(1, 3600))
        background = rng.random() < 0.03
        run_id = f"{prefix}_{seed:02d}_{i:08d}_{rng.getrandbits(48):012x}"
        if background:
            run_id += "_bg"
        steps = rng.randint(1, 5)
        yield {
            "run_id": run_id,
            "pipeline_id": pipeline,
            "pipeline_name": pipeline,
            "pipeline_version": version,
            "current_step_index": rng.randint(0, steps),
            "pipeline_context": {
                "run_id": run_id,
                "initial_prompt": f"{pipeline} job #{rng.randint(0, 99999):05d}",
                "scratchpad": {"status": status, "records": rng.randint(0, 5000)},
                "hitl_history": [],
                "command_log": [],
                "pipeline_name": pipeline,
                "pipeline_version": version,
                "total_steps": steps,
            },
            "last_step_output": {"step": f"step_{steps - 1}", "records": rng.randint(0, 2000)},
            "step_history": [
                {"name": f"step_{s}", "success": True, "attempts": 1, "latency_s": round(rng.random() * 5, 3)}
                for s in range(min(steps, 2))
            ],
            "status": status,
            "created_at": created,
            "updated_at": updated,
            "total_steps": steps,
            "error_message": "step failed: upstream timeout" if status == "failed" else None,
            "execution_time_ms": rng.randint(500, 3_600_000) if rng.random() < 0.10 else None,
            "memory_usage_mb": 7.62939453125e-05,
            "is_background_task": background,
            "parent_run_id": run_id[: -len("_bg")] if background else None,
            "task_id": f"bg_{rng.getrandbits(64):016x}" if background else None,
            "metadata": {"is_background_task": background} if background else None,
        }


async def build_db(path: Path, size: int, seed: int) -> float:
    """Create ``path`` with ``size`` workflows (written to a temp file, renamed when complete)."""
    tmp = path.with_name(path.name + ".building")
    for suffix in ("", "-wal", "-shm"):
        Path(str(tmp) + suffix).unlink(missing_ok=True)
    started = time.perf_counter()
    backend = SQLiteBackend(tmp)
    try:
        batch: list[dict[str, Any]] = []
        done = 0
        for state in generate_states(size, seed, datetime.now(UTC)):
            batch.append(state)
            if len(batch) == BATCH:
                done += await backend.save_states(batch)
                batch.clear()
                print(f"\r  building {path.name}: {done:,}/{size:,}", end="", file=sys.stderr, flush=True)
        if batch:
            done += await backend.save_states(batch)
    finally:
        await backend.shutdown()
    os.replace(tmp, path)
    elapsed = time.perf_counter() - started
    print(f"\r  built {path.name}: {done:,} rows in {elapsed:.1f} s" + " " * 20, file=sys.stderr)
    return elapsed


async def ensure_db(size: int, rebuild: bool) -> Path:
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    path = DATA_DIR / f"workflows-{size}-v{GENERATOR_VERSION}.db"
    if rebuild or not path.exists():
        path.unlink(missing_ok=True)
        await build_db(path, size, seed=size % 97)
    return path


async def measure_async(fn: Callable[[], Awaitable[Any]], repeat: int) -> list[float]:
    await fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        await fn()
        times.append(time.perf_counter() - t0)
    return times


def measure_sync(fn: Callable[[], Any], repeat: int) -> list[float]:
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def fmt(seconds: float) -> str:
    return f"{seconds * 1000:9.2f} ms"


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated DB sizes (rows)")
    parser.add_argument("--repeat", type=int, default=5, help="measured runs per benchmark (median reported)")
    parser.add_argument("--rebuild", action="store_true", help="rebuild cached DBs")
    args = parser.parse_args()
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    rows: list[tuple[str, str, list[float], float]] = []

    # list_workflows over 5000 workflows (seed's "Large Dataset Handling")
    path5k = await ensure_db(5000, args.rebuild)
    backend = SQLiteBackend(path5k)
    try:
        count = len(await backend.list_workflows())
        assert count == 5000, count
        times = await measure_async(backend.list_workflows, args.repeat)
        rows.append(("list_workflows()", "5,000", times, 0.050))
    finally:
        await backend.shutdown()

    for size in sizes:
        path = await ensure_db(size, args.rebuild)
        backend = SQLiteBackend(path)
        try:
            label = f"{size:,}"
            rows.append(
                (
                    "get_workflow_stats_sync()",
                    label,
                    measure_sync(backend.get_workflow_stats_sync, args.repeat),
                    stats_target(size),
                )
            )
            rows.append(
                (
                    "get_workflow_stats()",
                    label,
                    await measure_async(backend.get_workflow_stats, args.repeat),
                    stats_target(size),
                )
            )
            rows.append(
                (
                    "get_failed_workflows(24)",
                    label,
                    await measure_async(functools.partial(backend.get_failed_workflows, 24), args.repeat),
                    0.100,
                )
            )
            rows.append(
                (
                    "list_workflows(limit=25, offset=5000)",
                    label,
                    await measure_async(functools.partial(backend.list_workflows, limit=25, offset=5000), args.repeat),
                    0.050,
                )
            )
            stats = backend.get_workflow_stats_sync()
            print(
                f"  {label} rows: total={stats['total_workflows']:,} recent_24h={stats['recent_workflows_24h']:,} "
                f"background={sum(stats['background_status_counts'].values()):,} "
                f"db={path.stat().st_size / 2**20:.0f} MiB",
                file=sys.stderr,
            )
        finally:
            await backend.shutdown()

    print()
    header = f"{'benchmark':40} {'rows':>10} {'median':>12} {'min':>12} {'target':>12}  ok"
    print(header)
    print("-" * len(header))
    all_ok = True
    for name, label, times, target in rows:
        median = statistics.median(times)
        ok = median <= target
        all_ok &= ok
        print(
            f"{name:40} {label:>10} {fmt(median):>12} {fmt(min(times)):>12} {'<=' + fmt(target).strip():>12}  "
            f"{'yes' if ok else 'NO'}"
        )
    print(f"\nrepeat={args.repeat}; list_workflows() seed bar: < 2 s for 5000 workflows")
    return 0 if all_ok else 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
