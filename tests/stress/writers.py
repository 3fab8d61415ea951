"""Application writers for the data-safety stress test: each runs as its own OS process.

    python tests/stress/writers.py --db flujo_ops.db --pattern per_write --layout 0.4.35 \
        --seconds 20 --seed 1 --out result.json

Two real write patterns, on either journal mode (the DB's own, set when it was created):

* ``per_write`` (flujo 0.4.35): a NEW ``sqlite3`` connection for every API call, closed right after.
  In WAL mode the last close checkpoints the WAL and deletes ``-wal``, so most of the time there is
  no ``-wal`` at all and a writer attaches afresh for every write.  ``timeout=5.0`` (Python's
  default; flujo sets no busy timeout) plus flujo's 3 attempts on "database is locked".
* ``pooled`` (flujo 0.6.x): one connection for the whole process with flujo 0.6.11's PRAGMAs
  (``busy_timeout=1000``, ``synchronous=NORMAL``, ``mmap_size``...).

Runs follow flujo's write sequence (SCHEMA.md section 4): ``load_state`` -> ``save_run_start`` ->
``save_state(running)`` -> per step ``save_state`` + ``save_step_result`` -> final ``save_state`` ->
``save_run_end`` -> ``save_trace`` (delete and re-insert the run's spans).  Outcomes: completed,
failed, paused at a human step, cancelled and crashed (the rows stay ``running``, no spans); on the
0.6 layout some runs launch background tasks, some of which never finish (stale).  Every few runs
the app also reads its stats (``get_workflow_stats``), as a dashboard would.

Every ``sqlite3`` error is counted by kind (malformed, locked, disk I/O, other) with a few messages kept, and the
rows written are tallied so the test can bound every metric the daemon reports.  Standard library only.
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

LAYOUTS = ("0.4.35", "0.6")
PATTERNS = ("per_write", "pooled")
PIPELINES = (
    ("etl_daily", "1.4.0", ("extract", "transform", "load")),
    ("llm_summarize", "2.1.0", ("fetch_doc", "summarize", "store")),
    ("approval_flow", "0.9.2", ("prepare", "human_approval", "finalize")),
    ("long_job", "3.0.0", ("stage_a", "stage_b", "stage_c")),
)
PIPELINE_NAMES = tuple(name for name, _, _ in PIPELINES)
STEP_NAMES = (*(step for _, _, steps in PIPELINES for step in steps), "notify_team")
OUTCOMES = (("completed", 60), ("failed", 18), ("paused", 8), ("cancelled", 6), ("crashed", 8))
WORKFLOW_STATUSES = ("running", "paused", "completed", "failed", "cancelled")
MAX_MESSAGES = 20


@dataclass
class Tally:
    """What one writer did: rows written (upper bounds for the metrics) and the errors it saw."""

    writes: int = 0  # API calls that committed
    runs_started: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    workflow_rows: int = 0  # distinct workflow_state run ids written (incl. background tasks)
    background_tasks: int = 0
    runs_rows: int = 0
    # distinct (row, status) pairs ever written: no more rows than this can have a status at any time
    workflow_statuses: Counter[str] = field(default_factory=Counter)
    runs_statuses: Counter[str] = field(default_factory=Counter)
    runs_finished: int = 0
    steps_rows: int = 0
    spans_rows: int = 0  # spans inserted (a re-save counts again: still an upper bound)
    stats_reads: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # malformed / locked / io / other
    messages: list[str] = field(default_factory=list)
    gave_up: int = 0  # API calls that failed for good (flujo would raise to the app)
    restarts: int = 0  # pooled pattern: times the app closed its pool and opened a new one

    def to_json(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {key: dict(value) if isinstance(value, Counter) else value for key, value in values.items()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Tally:
        values: dict[str, Any] = {k: Counter(v) if isinstance(v, dict) else v for k, v in data.items()}
        return cls(**values)

    def add(self, other: Tally) -> None:
        """Sum ``other`` into this tally (several writer processes)."""
        for name, value in vars(other).items():
            mine = getattr(self, name)
            if isinstance(mine, Counter):
                mine.update(value)
            elif isinstance(mine, list):
                mine.extend(value)
            else:
                setattr(self, name, mine + value)


def error_kind(exc: BaseException) -> str:
    text = str(exc).lower()
    if "malformed" in text or "disk image" in text or "not a database" in text or "corrupt" in text:
        return "malformed"
    if "locked" in text or "busy" in text:
        return "locked"
    if "disk i/o error" in text:
        return "io"  # e.g. the -wal deleted under a live connection
    return "other"


def local_naive(epoch: float) -> str:
    """0.4.35's workflow_state times: ``datetime.now().isoformat()`` (writer zone: UTC here)."""
    return datetime.fromtimestamp(epoch, UTC).replace(tzinfo=None).isoformat()


def utc_aware(epoch: float) -> str:
    """0.6.x times: ``datetime.now(timezone.utc).isoformat()``."""
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def sqlite_now(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S")


class Connections:
    """How the app gets a connection for one API call; counts and classifies every error."""

    def __init__(self, db: Path, pattern: str, tally: Tally) -> None:
        self.db = db
        self.pattern = pattern
        self.tally = tally
        self._pooled: sqlite3.Connection | None = None

    def _record(self, exc: sqlite3.Error) -> str:
        kind = error_kind(exc)
        self.tally.errors[kind] += 1
        if len(self.tally.messages) < MAX_MESSAGES:
            self.tally.messages.append(f"{kind}: {exc}")
        return kind

    def call(self, work: Callable[[sqlite3.Connection], T], *, foreign_keys: bool = False) -> T | None:
        """One flujo API call: up to 3 attempts on "locked" (sleep 0.1 s, 0.2 s), like flujo 0.4.35."""
        for attempt in range(3):
            try:
                result = self._once(work, foreign_keys)
            except sqlite3.Error as exc:
                if self._record(exc) != "locked" or attempt == 2:
                    self.tally.gave_up += 1
                    return None
                time.sleep(0.1 * (attempt + 1))
                continue
            self.tally.writes += 1
            return result
        return None

    def _once(self, work: Callable[[sqlite3.Connection], T], foreign_keys: bool) -> T:
        if self.pattern == "per_write":
            conn = sqlite3.connect(self.db, timeout=5.0)
            try:
                if foreign_keys:
                    conn.execute("PRAGMA foreign_keys = ON")
                result = work(conn)
                conn.commit()
                return result
            finally:
                conn.close()  # in WAL mode the last close checkpoints and deletes -wal
        conn = self._pool()
        try:
            result = work(conn)
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        return result

    def _pool(self) -> sqlite3.Connection:
        if self._pooled is None:
            conn = sqlite3.connect(self.db, timeout=1.0, check_same_thread=False)
            for pragma in (
                "busy_timeout = 1000",
                "synchronous = NORMAL",
                "cache_size = 10000",
                "temp_store = MEMORY",
                "mmap_size = 268435456",
                "foreign_keys = ON",
            ):
                conn.execute(f"PRAGMA {pragma}")
            self._pooled = conn
        return self._pooled

    def close(self) -> None:
        if self._pooled is not None:
            self._pooled.close()
            self._pooled = None


@dataclass
class Run:
    run_id: str
    pipeline: str
    version: str
    steps: tuple[str, ...]
    outcome: str
    started: float
    created: float


@dataclass
class PendingTask:
    task: Run
    meta: dict[str, Any]
    due: float  # time.monotonic() at which it finishes


class App:
    """A Flujo application running pipelines for ``seconds``."""

    def __init__(self, db: Path, layout: str, pattern: str, seed: int, pace: float, restart_every: float) -> None:
        self.layout = layout
        self.restart_every = restart_every
        self.random = random.Random(seed)
        self.pace = pace
        self.tally = Tally()
        self.conns = Connections(db, pattern, self.tally)
        self.pending_tasks: list[PendingTask] = []
        self.written: set[tuple[str, str, str]] = set()  # (table, run_id, status)

    def run_for(self, seconds: float) -> Tally:
        deadline = time.monotonic() + seconds
        restart_at = time.monotonic() + self.restart_every
        try:
            while time.monotonic() < deadline:
                if self.restart_every and time.monotonic() >= restart_at:
                    # The app restarts (a deploy): its pool closes cleanly; in WAL mode the last
                    # connection to close checkpoints and deletes -wal.
                    self.conns.close()
                    self.tally.restarts += 1
                    restart_at = time.monotonic() + self.restart_every
                self.run_one()
                self.finish_background_tasks()
                if self.tally.runs_started % 10 == 0:
                    self.read_stats()
        finally:
            self.conns.close()
        return self.tally

    def wrote(self, table: str, run_id: str, status: str) -> None:
        """Tally a status written (counted even if the commit then fails: an upper bound)."""
        if (table, run_id, status) not in self.written:
            self.written.add((table, run_id, status))
            counter = self.tally.workflow_statuses if table == "workflow_state" else self.tally.runs_statuses
            counter[status] += 1

    def pause(self) -> None:
        if self.pace:
            time.sleep(self.random.uniform(0, 2 * self.pace))

    # --- one run, in flujo's write order ------------------------------------------------------
    def run_one(self) -> None:
        name, version, steps = self.random.choice(PIPELINES)
        weights = [w if (o != "paused" or name == "approval_flow") else 0 for o, w in OUTCOMES]
        outcome = self.random.choices([o for o, _ in OUTCOMES], weights)[0]
        now = time.time()
        run = Run(f"run_{uuid.uuid4().hex}", name, version, steps, outcome, now, now)
        self.tally.runs_started += 1
        self.tally.outcomes[outcome] += 1
        self.conns.call(lambda c: c.execute("SELECT * FROM workflow_state WHERE run_id = ?", (run.run_id,)).fetchall())
        self.conns.call(lambda c: self.save_run_start(c, run))
        self.tally.runs_rows += 1
        self.conns.call(lambda c: self.save_state(c, run, "running", 0))
        self.tally.workflow_rows += 1
        spans = [self.span(run, None, "pipeline_root", self.span_clock(), None, "running")]
        failed_at = self.random.randrange(len(steps)) if outcome == "failed" else None
        final = {"paused": "paused", "cancelled": "cancelled", "failed": "failed"}.get(outcome, "completed")
        for index, step in enumerate(steps):
            self.pause()
            if outcome == "crashed" and index == 1:
                return  # the process "died": rows stay running, no spans
            if outcome == "paused" and step == "human_approval":
                spans.append(self.span(run, spans[0][0], step, self.span_clock(), None, "running"))
                break
            ok = index != failed_at
            step_start = self.span_clock() - self.random.uniform(0.01, 0.5)
            self.conns.call(partial(self.save_state, run=run, status="running", index=index + 1))
            self.conns.call(partial(self.save_step, run=run, index=index, step=step, ok=ok))
            self.tally.steps_rows += 1
            step_end = self.span_clock()
            spans.append(self.span(run, spans[0][0], step, step_start, step_end, "completed" if ok else "failed"))
            if self.layout == "0.6" and index == 0 and self.random.random() < 0.4:
                self.launch_background_task(run)
            if not ok or (outcome == "cancelled" and index == 0):
                break
        self.conns.call(lambda c: self.save_state(c, run, final, len(steps)))
        runs_status = "failed" if outcome == "failed" else "completed"
        self.conns.call(lambda c: self.save_run_end(c, run, runs_status))
        self.tally.runs_finished += 1
        self.conns.call(lambda c: self.save_trace(c, run, spans), foreign_keys=True)
        self.tally.spans_rows += len(spans)

    def span_clock(self) -> float:
        """0.4.35 stores span times as ``time.time()``, 0.6.x as ``time.monotonic()``."""
        return time.time() if self.layout == "0.4.35" else time.monotonic()

    def span(
        self, run: Run, parent: str | None, name: str, start: float, end: float | None, status: str
    ) -> tuple[Any, ...]:
        attributes = json.dumps({"step_type": "Step", "step_input": f"{name} input", "success": status != "failed"})
        return (str(uuid.uuid4()), run.run_id, parent, name, start, end, status, attributes)

    def save_run_start(self, conn: sqlite3.Connection, run: Run) -> None:
        self.wrote("runs", run.run_id, "running")
        if self.layout == "0.4.35":
            conn.execute(
                "INSERT OR REPLACE INTO runs (run_id, pipeline_name, pipeline_version, status, start_time)"
                " VALUES (?, ?, ?, 'running', ?)",
                (run.run_id, run.pipeline, run.version, local_naive(run.started)),
            )
        else:
            stamp = utc_aware(run.started)
            conn.execute(
                "INSERT OR REPLACE INTO runs (run_id, pipeline_id, pipeline_name, pipeline_version, status,"
                " created_at, updated_at, total_steps) VALUES (?, ?, ?, ?, 'running', ?, ?, ?)",
                (run.run_id, f"{run.pipeline}@{run.version}", run.pipeline, run.version, stamp, stamp, len(run.steps)),
            )

    def save_state(self, conn: sqlite3.Connection, run: Run, status: str, index: int, **extra: Any) -> None:
        self.wrote("workflow_state", run.run_id, status)
        now = time.time()
        context = {
            "run_id": run.run_id,
            "initial_prompt": f"{run.pipeline} job #{self.random.randrange(100000):05d}",
            "scratchpad": {"status": status},
            "hitl_history": [],
            "command_log": [],
            "pipeline_name": run.pipeline,
            "pipeline_version": run.version,
            "padding": "x" * self.random.randrange(200, 1200),  # real contexts are 0.4-2 kB
        }
        history = [{"name": s, "success": True, "attempts": 1, "latency_s": 0.1} for s in run.steps[:index]]
        row: dict[str, Any] = {
            "run_id": run.run_id,
            "pipeline_id": run.pipeline,
            "pipeline_name": run.pipeline,
            "pipeline_version": run.version,
            "current_step_index": index,
            "pipeline_context": json.dumps(context),
            "last_step_output": json.dumps({"records": self.random.randrange(1000)}),
            "step_history": json.dumps(history),
            "status": status,
            # created_at is rewritten on every save for runs that were never resumed
            "created_at": local_naive(now) if self.layout == "0.4.35" else utc_aware(run.created),
            "updated_at": local_naive(now) if self.layout == "0.4.35" else utc_aware(now),
            "total_steps": len(run.steps),
            "error_message": "step failed" if status == "failed" else None,
            "execution_time_ms": None,
            "memory_usage_mb": 7.62939453125e-05,
        }
        if self.layout == "0.6":
            row.update({"metadata": None, "is_background_task": 0, "parent_run_id": None, "task_id": None})
            row.update({"background_error": None})
        row.update(extra)
        columns = ", ".join(row)
        conn.execute(
            f"INSERT OR REPLACE INTO workflow_state ({columns}) VALUES ({', '.join('?' * len(row))})",
            tuple(row.values()),
        )

    def save_step(self, conn: sqlite3.Connection, run: Run, index: int, step: str, ok: bool) -> None:
        now = time.time()
        output = json.dumps({"step": step, "records": self.random.randrange(2000)}) if ok else "null"
        if self.layout == "0.4.35":
            conn.execute(
                "INSERT OR REPLACE INTO steps (step_run_id, run_id, step_name, step_index, status, start_time,"
                " end_time, duration_ms, cost, tokens, input_blob, output_blob, error_blob)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'null', ?, ?)",
                (
                    f"{run.run_id}:{index}",
                    run.run_id,
                    step,
                    index,
                    "completed" if ok else "failed",
                    local_naive(now),
                    local_naive(now + 0.0002),
                    self.random.randrange(10, 5000) if ok else 0,
                    round(self.random.uniform(0, 0.02), 6),
                    self.random.randrange(5000),
                    output,
                    None if ok else json.dumps(f"{step} failed: upstream timeout"),
                ),
            )
        else:
            conn.execute(
                "INSERT INTO steps (run_id, step_name, step_index, status, output, cost_usd, token_counts,"
                " execution_time_ms, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run.run_id,
                    step,
                    index,
                    "completed" if ok else "failed",
                    output,
                    0.0,
                    0,
                    self.random.randrange(10, 5000),
                    utc_aware(now),
                ),
            )

    def save_run_end(self, conn: sqlite3.Connection, run: Run, status: str) -> None:
        self.wrote("runs", run.run_id, status)
        now = time.time()
        cost = round(self.random.uniform(0, 0.05), 6)
        if self.layout == "0.4.35":
            conn.execute(
                "UPDATE runs SET status = ?, end_time = ?, total_cost = ?, final_context_blob = ? WHERE run_id = ?",
                (status, local_naive(now), cost, json.dumps({"run_id": run.run_id}), run.run_id),
            )
        else:
            conn.execute(
                "UPDATE runs SET status = ?, end_time = ?, total_cost = ?, updated_at = ?,"
                " execution_time_ms = ? WHERE run_id = ?",
                (status, utc_aware(now), cost, utc_aware(now), int((now - run.started) * 1000), run.run_id),
            )

    def save_trace(self, conn: sqlite3.Connection, run: Run, spans: list[tuple[Any, ...]]) -> None:
        """flujo's save_trace: delete every span of the run and insert the tree again, one transaction."""
        conn.execute("DELETE FROM spans WHERE run_id = ?", (run.run_id,))
        conn.executemany(
            "INSERT INTO spans (span_id, run_id, parent_span_id, name, start_time, end_time, status,"
            " attributes, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, datetime('now'))",
            spans,
        )

    # --- 0.6 background tasks -------------------------------------------------------------------
    def launch_background_task(self, run: Run) -> None:
        task_id = f"bg_{uuid.uuid4().hex}"
        now = time.time()
        task = Run(f"{run.run_id}_bg_{task_id}", run.pipeline, run.version, ("notify_team",), "background", now, now)
        meta = self.task_meta(run.run_id, task_id)
        self.conns.call(lambda c: self.save_state(c, task, "running", 0, **meta))
        self.tally.workflow_rows += 1
        self.tally.background_tasks += 1
        if self.random.random() < 0.3:
            return  # never finishes: the stale-task job must fail it
        self.pending_tasks.append(PendingTask(task, meta, time.monotonic() + self.random.uniform(0.2, 2.0)))

    @staticmethod
    def task_meta(parent: str, task_id: str) -> dict[str, Any]:
        metadata = {"is_background_task": True, "task_id": task_id, "parent_run_id": parent, "step_name": "notify_team"}
        return {"metadata": json.dumps(metadata), "is_background_task": 1, "parent_run_id": parent, "task_id": task_id}

    def finish_background_tasks(self) -> None:
        now = time.monotonic()
        due = [t for t in self.pending_tasks if t.due <= now]
        self.pending_tasks = [t for t in self.pending_tasks if t.due > now]
        for pending in due:
            failed = self.random.random() < 0.2
            error = {"background_error": "Agent execution failed with RuntimeError: boom"} if failed else {}
            meta = {**pending.meta, **error}
            status = "failed" if failed else "completed"
            self.conns.call(partial(self.save_state, run=pending.task, status=status, index=1, **meta))

    # --- reads ----------------------------------------------------------------------------------
    def read_stats(self) -> None:
        """``get_workflow_stats()``: whole-index counts, where a damaged b-tree shows first."""

        def stats(conn: sqlite3.Connection) -> None:
            conn.execute("SELECT status, COUNT(*) FROM workflow_state GROUP BY status").fetchall()
            conn.execute("SELECT COUNT(*) FROM workflow_state WHERE created_at >= datetime('now', '-24 hours')")
            conn.execute("SELECT COUNT(*), MAX(rowid) FROM runs").fetchall()
            conn.execute("SELECT status, COUNT(*) FROM spans GROUP BY status").fetchall()

        self.conns.call(stats)
        self.tally.stats_reads += 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--pattern", choices=PATTERNS, required=True)
    parser.add_argument("--layout", choices=LAYOUTS, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pace", type=float, default=0.002, help="mean pause between steps, seconds")
    parser.add_argument(
        "--restart-every", type=float, default=0.0, help="pooled: close and reopen the pool every N seconds (0: never)"
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    tally = App(args.db, args.layout, args.pattern, args.seed, args.pace, args.restart_every).run_for(args.seconds)
    args.out.write_text(json.dumps(tally.to_json()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
