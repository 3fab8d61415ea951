"""Benchmark: does the cleanup job stall the application that writes the Flujo DB?

    .venv/bin/python benchmarks/bench_cleanup.py [--rows 1000000] [--delete-runs] [--baseline 10]
        [--batch-size 500] [--pause 0.02] [--max-transaction 0.02] [--persistent-writer] [--rebuild] [--dir DIR]

* Builds (once, cached in ``benchmarks/.data/``, git-ignored) a 0.4.35-layout DB in WAL mode with
  ``--rows`` workflow_state rows created 31..60 days before an anchor time (all deletable with
  ``days_old=30``) plus 10 000 recent ones; with ``--delete-runs`` also one ``runs`` row and two
  ``steps`` rows per workflow.  Each benchmark run works on a fresh copy.
* Starts an application writer in a separate process that commits one small ``INSERT OR REPLACE``
  into ``workflow_state`` every 10 ms, like flujo 0.4.35's ``save_state`` (a new connection per call,
  Python's default 5 s busy timeout; ``--persistent-writer`` keeps one connection).  It measures
  every call's latency and counts ``SQLITE_BUSY``/"database is locked" errors that reach it.
* Runs the writer alone for ``--baseline`` seconds, then the cleanup job (the daemon's code, with
  the given batch settings) to completion, and prints the writer's p50/p99/max latency with and
  without the cleanup, the number of stalls over 50 ms, BUSY errors, and cleanup rows/s.

Goal (jobs issue): no writer stall over 50 ms and no SQLITE_BUSY reaching the writer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import exporter.engines.flujo.jobs.cleanup as cleanup_module  # noqa: E402
from exporter.clock import ManualClock  # noqa: E402
from exporter.engines.flujo.jobs.cleanup import CleanupJob  # noqa: E402
from exporter.engines.flujo.jobs.config import CleanupConfig  # noqa: E402
from exporter.jobs.db import JobConnection, Target  # noqa: E402
from exporter.jobs.metrics import JobMetrics  # noqa: E402

DATA_DIR = Path(__file__).resolve().parent / ".data"
SCHEMA = ROOT / "tests" / "fixtures" / "schemas" / "v0.4.35.sql"
GENERATOR_VERSION = 1
RECENT = 10_000
WRITE_PERIOD = 0.010
STALL = 0.050
CONTEXT = json.dumps(
    {
        "run_id": "x",
        "initial_prompt": "summarise the attached quarterly report for the board",
        "scratchpad": {"status": "completed", "notes": "ok"},
        "hitl_history": [],
        "command_log": [],
    }
)


# -- the DB ---------------------------------------------------------------------------------------


def template_path(rows: int, with_runs: bool) -> Path:
    return DATA_DIR / f"cleanup-v{GENERATOR_VERSION}-{rows}{'-runs' if with_runs else ''}.db"


def build(path: Path, rows: int, with_runs: bool) -> datetime:
    anchor = datetime.now(UTC).replace(microsecond=0)
    tmp = path.with_suffix(".building")
    tmp.unlink(missing_ok=True)
    conn = sqlite3.connect(tmp, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = OFF")
    conn.executescript(SCHEMA.read_text())
    started = time.perf_counter()
    chunk = 50_000
    total = rows + RECENT
    for first in range(0, total, chunk):
        conn.execute("BEGIN")
        states, runs, steps = [], [], []
        for i in range(first, min(first + chunk, total)):
            if i < rows:  # 31..60 days old, spread evenly
                created = anchor - timedelta(days=60) + timedelta(days=29) * (i / max(rows, 1))
            else:
                created = anchor - timedelta(hours=1) + timedelta(seconds=(i - rows) * 0.3)
            run_id = f"run_{i:032x}"
            ts = created.replace(tzinfo=None).isoformat()  # local naive, writer in UTC
            status = "completed" if i % 4 else "failed"
            pipeline = f"bench_pipeline_{i % 10}"
            states.append((run_id, pipeline, pipeline, "latest", 3, CONTEXT, '"done"', "[]", status, ts, ts, 3))
            if with_runs:
                runs.append((run_id, pipeline, "latest", status, ts, ts, 0.0))
                for step in range(2):
                    steps.append((f"{run_id}:{step}", run_id, f"step_{step}", step, "completed", ts, ts, 12))
        conn.executemany(
            "INSERT INTO workflow_state (run_id, pipeline_id, pipeline_name, pipeline_version, current_step_index,"
            " pipeline_context, last_step_output, step_history, status, created_at, updated_at, total_steps)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            states,
        )
        if with_runs:
            conn.executemany(
                "INSERT INTO runs (run_id, pipeline_name, pipeline_version, status, start_time, end_time, total_cost)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                runs,
            )
            conn.executemany(
                "INSERT INTO steps (step_run_id, run_id, step_name, step_index, status, start_time, end_time,"
                " duration_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                steps,
            )
        conn.execute("COMMIT")
        print(f"  built {min(first + chunk, total):,}/{total:,} rows", end="\r", flush=True)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    tmp.rename(path)
    path.with_suffix(".json").write_text(json.dumps({"anchor": anchor.isoformat(), "rows": rows}))
    print(f"\n  built {path.name} in {time.perf_counter() - started:.1f}s ({path.stat().st_size / 2**20:.0f} MiB)")
    return anchor


def prepared(rows: int, with_runs: bool, rebuild: bool, workdir: Path) -> tuple[Path, datetime]:
    DATA_DIR.mkdir(exist_ok=True)
    template = template_path(rows, with_runs)
    if rebuild or not template.exists():
        anchor = build(template, rows, with_runs)
    else:
        anchor = datetime.fromisoformat(json.loads(template.with_suffix(".json").read_text())["anchor"])
    workdir.mkdir(parents=True, exist_ok=True)
    work = workdir / f"cleanup-work-{os.getpid()}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{work}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(template, work)
    return work, anchor


# -- the application writer (a separate process) -----------------------------------------------------


def writer_main(db: Path, out: Path, stop: Path, persistent: bool) -> None:
    """Commit one small save_state-like upsert every 10 ms until ``stop`` exists; dump the samples."""
    samples: list[tuple[float, float, bool]] = []  # (start wall time, latency s, busy error)
    conn = sqlite3.connect(db) if persistent else None
    sql = (
        "INSERT OR REPLACE INTO workflow_state (run_id, pipeline_id, pipeline_name, pipeline_version,"
        " current_step_index, pipeline_context, status, created_at, updated_at, total_steps)"
        " VALUES (?, 'app', 'app', 'latest', ?, ?, 'running', ?, ?, 3)"
    )
    i = 0
    max_wal = 0
    next_at = time.perf_counter()
    while not stop.exists():
        now = datetime.now(UTC).replace(tzinfo=None).isoformat()
        started_wall = time.time()
        t0 = time.perf_counter()
        busy = False
        try:
            c = conn or sqlite3.connect(db)  # flujo 0.4.35: a new connection per call, timeout 5 s
            try:
                c.execute(sql, (f"run_app_{i % 1000:04d}", i % 3, CONTEXT, now, now))
                c.commit()
            finally:
                if conn is None:
                    c.close()
        except sqlite3.OperationalError as exc:
            busy = "locked" in str(exc) or "busy" in str(exc)
            if not busy:
                raise
        samples.append((started_wall, time.perf_counter() - t0, busy))
        if i % 10 == 0:
            with suppress(OSError):
                max_wal = max(max_wal, os.stat(f"{db}-wal").st_size)
        i += 1
        next_at += WRITE_PERIOD
        delay = next_at - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        else:
            next_at = time.perf_counter()  # fell behind (a stall): do not burst to catch up
    out.write_text(json.dumps({"samples": samples, "max_wal": max_wal}))


# -- measuring ----------------------------------------------------------------------------------------


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered), max(1, math.ceil(pct / 100 * len(ordered)))) - 1]


def describe(name: str, samples: list[tuple[float, float, bool]]) -> str:
    latencies = [lat for _, lat, _ in samples]
    stalls = sum(1 for lat in latencies if lat > STALL)
    busy = sum(1 for *_, b in samples if b)
    return (
        f"{name:<16} writes {len(samples):>6}  p50 {percentile(latencies, 50) * 1000:7.2f} ms  "
        f"p99 {percentile(latencies, 99) * 1000:7.2f} ms  max {max(latencies, default=math.nan) * 1000:8.2f} ms  "
        f"stalls>50ms {stalls:>4}  BUSY {busy}"
    )


@dataclass
class Trace:
    """When the cleanup held the write lock and when it checkpointed (wall-clock start, seconds)."""

    locks: list[tuple[float, float]] = field(default_factory=list)
    checkpoints: list[tuple[float, float]] = field(default_factory=list)

    def cause(self, start: float, latency: float) -> str:
        end = start + latency
        for name, spans in (("lock", self.locks), ("checkpoint", self.checkpoints)):
            if any(s < end and s + d > start for s, d in spans):
                return name
        return "other"


def instrument(trace: Trace) -> None:
    """Record every write transaction's lock hold and every checkpoint of the cleanup job."""
    original_tx = cleanup_module.write_transaction

    @contextmanager
    def recorded_tx(conn: sqlite3.Connection) -> Iterator[list[float]]:
        with original_tx(conn) as held:
            started = time.time()
            yield held
        trace.locks.append((started, held[0]))

    original_cp = JobConnection.checkpoint

    def recorded_cp(self: JobConnection, conn: sqlite3.Connection) -> None:
        started = time.time()
        original_cp(self, conn)
        trace.checkpoints.append((started, time.time() - started))

    cleanup_module.write_transaction = recorded_tx  # type: ignore[assignment]
    JobConnection.checkpoint = recorded_cp  # type: ignore[method-assign]


async def run_cleanup(db: Path, anchor: datetime, args: argparse.Namespace) -> tuple[Any, float, int]:
    config = CleanupConfig.model_validate(
        {
            "enabled": True,
            "days_old": 30,
            "delete_runs": args.delete_runs,
            "batch_size": args.batch_size,
            "pause_between_batches": args.pause,
            "max_transaction": args.max_transaction,
        }
    )
    metrics = JobMetrics({"cleanup": True})
    job = CleanupJob(config, Target(db, 1.0), UTC, ManualClock(anchor), metrics)
    started = time.perf_counter()
    await job()
    return job.last_report, time.perf_counter() - started, job._size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--delete-runs", action="store_true", help="also build and delete runs + 2 steps per run")
    parser.add_argument("--baseline", type=float, default=10.0, help="seconds of writer alone before the cleanup")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--pause", type=float, default=0.02, help="pause between batches, seconds")
    parser.add_argument("--max-transaction", type=float, default=0.02, help="target lock hold time, seconds")
    parser.add_argument("--persistent-writer", action="store_true", help="writer keeps one connection")
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument(
        "--dir", type=Path, default=DATA_DIR, help="where the working copy lives (e.g. /dev/shm: no fsync cost)"
    )
    parser.add_argument("--writer", nargs=3, metavar=("DB", "OUT", "STOP"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.writer:
        db, out, stop = (Path(p) for p in args.writer)
        writer_main(db, out, stop, args.persistent_writer)
        return 0

    print(f"cleanup benchmark: {args.rows:,} deletable workflows{' + runs/steps' if args.delete_runs else ''}")
    db, anchor = prepared(args.rows, args.delete_runs, args.rebuild, args.dir)
    out, stop = db.with_suffix(".writer.json"), db.with_suffix(".stop")
    stop.unlink(missing_ok=True)
    argv = [sys.executable, __file__, "--writer", str(db), str(out), str(stop)]
    if args.persistent_writer:
        argv.append("--persistent-writer")
    trace = Trace()
    instrument(trace)
    writer = subprocess.Popen(argv)
    try:
        time.sleep(args.baseline)
        cleanup_start = time.time()
        report, seconds, final_batch = asyncio.run(run_cleanup(db, anchor, args))
        cleanup_end = time.time()
        time.sleep(0.5)
    finally:
        stop.touch()
        try:
            writer.wait(30)
        except subprocess.TimeoutExpired:
            os.kill(writer.pid, signal.SIGKILL)
    result = json.loads(out.read_text())
    samples = [tuple(s) for s in result["samples"]]
    baseline = [s for s in samples if s[0] < cleanup_start and s[0] >= samples[0][0] + 1.0]  # 1 s warm-up
    during = [s for s in samples if cleanup_start <= s[0] <= cleanup_end]
    deleted = sum(report.rows.values())
    print(
        f"cleanup: deleted {dict(report.rows)} in {seconds:.1f}s = {deleted / seconds:,.0f} rows/s, "
        f"{report.transactions} transactions (batch size at the end {final_batch}), "
        f"largest WAL seen {result['max_wal'] / 2**20:.1f} MiB"
    )
    writer_kind = "one connection" if args.persistent_writer else "new connection per write, like flujo 0.4.35"
    print(f"application writer: one commit every {WRITE_PERIOD * 1000:.0f} ms ({writer_kind})")
    print(describe("without cleanup", baseline))  # type: ignore[arg-type]
    print(describe("during cleanup", during))  # type: ignore[arg-type]
    worst = max((lat for _, lat, _ in during), default=0.0)
    busy = sum(1 for *_, b in during if b)
    for name, window in (("without", baseline), ("during", during)):
        top = sorted(window, key=lambda item: -item[1])[:5]
        text = ", ".join(f"{lat * 1000:.0f} ms at +{start - cleanup_start:.2f}s" for start, lat, _ in top)
        print(f"  worst writes {name} cleanup: {text}")
    for name, spans in (("lock hold per transaction", trace.locks), ("passive checkpoint", trace.checkpoints)):
        durations = [d for _, d in spans]
        if durations:
            print(
                f"  cleanup {name}: p50 {percentile(durations, 50) * 1000:.2f} ms, "
                f"p99 {percentile(durations, 99) * 1000:.2f} ms, max {max(durations) * 1000:.2f} ms"
            )
    longest = sorted(trace.locks, key=lambda span: -span[1])[:5]
    text = ", ".join(f"{d * 1000:.0f} ms at +{start - cleanup_start:.2f}s" for start, d in longest)
    print(f"  longest lock holds: {text}")
    slow = [(start, lat) for start, lat, _ in during if lat > 0.020]
    causes = Counter(trace.cause(start, lat) for start, lat in slow)
    print(f"  writes over 20 ms during cleanup overlapping: {dict(causes) or 'none'}")
    ok = worst <= STALL and busy == 0
    print(f"goal (no stall over 50 ms, no SQLITE_BUSY at the writer): {'MET' if ok else 'NOT MET'}")
    for suffix in ("", "-wal", "-shm", ".writer.json", ".stop"):
        Path(f"{db}{suffix}" if suffix.startswith("-") or not suffix else db.with_suffix(suffix)).unlink(
            missing_ok=True
        )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
