"""Build a Flujo-0.4.35-layout state DB with N runs, for benchmarks (cached, git-ignored).

    .venv/bin/python benchmarks/gen_flujo_db.py --runs 100000 [--rebuild] [--seed 435]

The schema is executed verbatim from ``tests/fixtures/schemas/v0.4.35.sql`` (flujo's exact DDL and
only flujo's own indexes; no ANALYZE, like flujo), and the file is left in ``journal_mode=WAL`` like
flujo's ``_init_db``.  Rows follow what flujo 0.4.35 really writes (see the shared SCHEMA.md):

* one ``workflow_state`` row per run: ``run_<32 hex>``, 8 pipelines (one uses flujo's default
  ``PipelineContext``, so workflow_state says ``unknown``/``latest``), ``created_at``/``updated_at``
  local-naive ISO (writer zone UTC; ``created_at`` is the last save except for resumed runs),
  ``pipeline_context`` JSON of 400-800 bytes, ``step_history`` JSON of StepResult dumps,
  ``execution_time_ms`` NULL except for resumed runs (~5 %);
* one ``runs`` row (UTC naive start/end, ``final_context_blob``), one ``steps`` row per recorded
  step (3 for a completed run; a failed run stops at its failed step; HITL steps are never
  recorded) and the spans tree saved at the end of the run: ``pipeline_root`` stored
  ``running``/NULL end (``completed`` for resumed runs) plus one span per step (4 in all for a
  completed run), epoch REAL times, JSON attributes;
* outcomes: mostly completed/failed, ~2 % paused at the human-in-the-loop step of
  ``approval_flow``, ~5 % resumed, ~2.5 % cancelled, ~2 % crashed (``running`` rows, no end, no
  spans) plus the runs still in flight at "now";
* start times spread over the 365 days up to "now": traffic grows 3x over the year, weekends
  carry half the weekday load, nights a third of office hours.  Rows get their rowids in the
  order flujo writes them: ``runs`` at the start of a run, ``steps`` as each is recorded,
  ``workflow_state`` at its last save (``INSERT OR REPLACE`` gives every save a new rowid) and
  ``spans`` when the trace is saved at the end of the run.

Generation is one process, ``executemany`` in transactions of 20 000 runs with
``synchronous=OFF``/no rollback journal; the file is built as ``*.building`` and renamed when
complete.  A sidecar ``<db>.json`` records the generator version, anchor time and row counts; a
DB whose sidecar does not match is rebuilt.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import math
import os
import random
import shutil
import sqlite3
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA_DIR, ROOT

GENERATOR_VERSION = 2
SCHEMA_SQL = ROOT / "tests" / "fixtures" / "schemas" / "v0.4.35.sql"
BATCH_RUNS = 20_000
DAYS = 365
MEMORY_USAGE_MB = 7.62939453125e-05  # sys.getsizeof(context) / 2**20, as flujo stores it
FEEDBACK = (
    "ConnectionError: could not connect to warehouse: timeout after 30s",
    "ValueError: unexpected schema in input batch",
    "RuntimeError: upstream API returned 503",
    "TimeoutError: step exceeded 300s",
)
WORDS = (
    *("alpha", "beta", "gamma", "delta", "ledger", "invoice", "customer", "region", "shard", "batch"),
    *("queue", "token", "summary", "review", "approval", "report", "sync", "export", "import", "cache"),
    *("retry", "window", "quota", "budget", "account", "vendor", "ticket"),
)


@dataclass(frozen=True)
class Pipeline:
    name: str
    version: str
    steps: tuple[str, str, str]
    latency_s: tuple[float, float, float]  # median latency of each step
    weight: float
    custom_context: bool = True  # False: flujo's default PipelineContext, workflow_state says 'unknown'
    hitl_step: int | None = None  # index of the human-in-the-loop step
    llm: bool = False  # has cost and tokens


PIPELINES = (
    Pipeline("etl_daily", "1.4.0", ("extract", "transform", "load"), (5.0, 12.0, 4.0), 0.16),
    Pipeline("llm_summarize", "2.1.0", ("fetch_doc", "summarize", "store"), (0.8, 6.0, 0.3), 0.20, llm=True),
    Pipeline("approval_flow", "0.9.2", ("prepare", "human_approval", "finalize"), (4.0, 0.0, 0.5), 0.085, hitl_step=1),
    Pipeline("doc_ingest", "1.0.3", ("download", "parse", "index"), (1.5, 3.0, 2.0), 0.14),
    Pipeline("long_job", "3.0.0", ("stage_a", "stage_b", "stage_c"), (90.0, 420.0, 60.0), 0.035),
    Pipeline("adhoc_query", "latest", ("parse_sql", "run_query", "format"), (0.05, 2.0, 0.08), 0.11, False),
    Pipeline("healthcheck_ping", "1.0.0", ("ping", "check", "report"), (0.05, 0.1, 0.02), 0.17),
    Pipeline("classify_tickets", "0.4.1", ("load_ticket", "classify", "route"), (0.2, 1.5, 0.1), 0.08, llm=True),
)
# Outcome weights: plain pipelines, and the pipeline with a human-in-the-loop step.
PLAIN_OUTCOMES = (("completed", 0.745), ("failed", 0.21), ("cancelled", 0.025), ("crashed", 0.02))
HITL_OUTCOMES = (
    ("failed", 0.06),
    ("crashed", 0.02),
    ("cancelled", 0.02),
    ("paused", 0.25),
    ("resumed_completed", 0.55),
    ("resumed_failed", 0.10),
)


def db_path(runs: int) -> Path:
    return DATA_DIR / f"flujo0435-{runs}.db"


def flujo_copy_path(runs: int) -> Path:
    """flujo's own copy: its SQLiteBackend migrates/writes the file on first use."""
    return DATA_DIR / f"flujo0435-{runs}.flujo-copy.db"


def meta_path(db: Path) -> Path:
    return db.with_name(db.name + ".json")


def read_meta(db: Path) -> dict[str, Any] | None:
    try:
        meta: dict[str, Any] = json.loads(meta_path(db).read_text())
    except (OSError, ValueError):
        return None
    return meta


# --- time helpers ---------------------------------------------------------------------------------------


def naive_iso(epoch: float) -> str:
    """``datetime.isoformat()`` of a naive UTC instant (no fraction when microseconds are 0, like flujo)."""
    return datetime.fromtimestamp(epoch, UTC).replace(tzinfo=None).isoformat()


def sqlite_now(epoch: float) -> str:
    """``datetime('now')`` at ``epoch``: ``YYYY-MM-DD HH:MM:SS`` UTC."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S")


def start_times(rng: random.Random, runs: int, now: float) -> Iterator[float]:
    """``runs`` ascending epoch start times over the ``DAYS`` days before ``now``."""
    hours = DAYS * 24
    first = now - hours * 3600
    weights = []
    for i in range(hours):
        moment = datetime.fromtimestamp(first + i * 3600, UTC)
        growth = 0.5 + 1.0 * i / (hours - 1)
        weekday = 0.5 if moment.weekday() >= 5 else 1.0
        hour = moment.hour
        diurnal = 1.0 if 9 <= hour < 18 else 0.6 if 7 <= hour < 22 else 0.33
        weights.append(growth * weekday * diurnal)
    total = math.fsum(weights)
    cumulative, placed = 0.0, 0
    for i, weight in enumerate(weights):
        cumulative += weight
        upto = runs if i == hours - 1 else int(runs * cumulative / total)
        count, placed = upto - placed, upto
        base = first + i * 3600
        yield from sorted(base + rng.random() * 3600 for _ in range(count))


# --- row generation ----------------------------------------------------------------------------------------


@dataclass
class Batch:
    workflow_state: list[tuple[Any, ...]] = field(default_factory=list)
    runs: list[tuple[Any, ...]] = field(default_factory=list)
    steps: list[tuple[Any, ...]] = field(default_factory=list)
    spans: list[tuple[Any, ...]] = field(default_factory=list)


@dataclass
class Tally:
    workflow_state: Counter[str] = field(default_factory=Counter)
    runs: Counter[str] = field(default_factory=Counter)
    steps: int = 0
    spans: int = 0
    resumed: int = 0


@dataclass
class StepDone:
    index: int
    name: str
    start: float  # span start (epoch)
    end: float  # span end (epoch)
    recorded: float  # steps.start_time: when the row was written, right after the step
    success: bool
    latency_s: float
    attempts: int
    cost: float
    tokens: int
    output: dict[str, Any] | None
    feedback: str | None
    step_input: str


class RunFactory:
    """Turns (start time, pipeline, outcome) into the rows flujo 0.4.35 leaves behind."""

    def __init__(self, rng: random.Random, now: float) -> None:
        self.rng = rng
        self.now = now
        self.filler = " ".join(rng.choice(WORDS) for _ in range(400))
        self._plain = [o for o, _ in PLAIN_OUTCOMES], [w for _, w in PLAIN_OUTCOMES]
        self._hitl = [o for o, _ in HITL_OUTCOMES], [w for _, w in HITL_OUTCOMES]
        self._weights = [p.weight for p in PIPELINES]
        # Rows written after their run's start, ordered by write time: (time, seq, table, row).
        self._pending: list[tuple[float, int, str, tuple[Any, ...]]] = []
        self._seq = itertools.count()

    def _later(self, at: float, table: str, row: tuple[Any, ...]) -> None:
        heapq.heappush(self._pending, (at, next(self._seq), table, row))

    def drain(self, batch: Batch, upto: float) -> None:
        """Move every pending row written at or before ``upto`` into ``batch``, in write order."""
        pending = self._pending
        while pending and pending[0][0] <= upto:
            _, _, table, row = heapq.heappop(pending)
            getattr(batch, table).append(row)

    def uuid4(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def add_run(self, batch: Batch, tally: Tally, t0: float) -> None:
        rng = self.rng
        pipeline = rng.choices(PIPELINES, self._weights)[0]
        outcomes, weights = self._hitl if pipeline.hitl_step is not None else self._plain
        outcome = rng.choices(outcomes, weights)[0]
        run_id = f"run_{rng.getrandbits(128):032x}"
        job = f"{pipeline.name} job #{rng.randrange(100000)}"
        steps: list[StepDone] = []
        root_start = t0 + rng.uniform(0.0002, 0.0006)  # the root span starts right after the run row
        clock = root_start + rng.uniform(0.0001, 0.0003)
        fail_at = rng.randrange(pipeline.hitl_step or 3) if outcome == "failed" else -1
        stop_at = 3
        if outcome in ("crashed", "cancelled"):
            stop_at = rng.randrange(pipeline.hitl_step or 3)  # died or cancelled during this step
        elif outcome in ("paused", "resumed_completed", "resumed_failed"):
            stop_at = pipeline.hitl_step or 0
        step_input = job
        for index in range(stop_at):
            step = self._step(pipeline, index, clock, step_input, failed=index == fail_at)
            steps.append(step)
            clock = step.recorded + rng.uniform(0.002, 0.01)
            step_input = repr(step.output)
            if not step.success:
                break
        pause_at = clock  # where the next (unfinished or human-in-the-loop) step span starts
        ended = clock + rng.uniform(0.1, 0.105)  # flujo polls the last step's queue for 100 ms
        resume_end = None
        if outcome.startswith("resumed"):
            resume_start = ended + min(rng.lognormvariate(math.log(1200), 1.0), 3 * 86400)
            step = self._step(pipeline, 2, resume_start, "approved", failed=outcome == "resumed_failed")
            resume_end = step.recorded + rng.uniform(0.1, 0.105)
            if resume_end > self.now:
                outcome, resume_end = "paused", None  # the human has not answered yet
            else:
                steps.append(step)
        if ended > self.now:
            outcome = "inflight"  # still running at "now": only the steps finished so far are recorded
            steps = [s for s in steps if s.recorded <= self.now]
        self._emit(batch, tally, pipeline, outcome, run_id, job, t0, root_start, steps, pause_at, ended, resume_end)

    def _step(self, pipeline: Pipeline, index: int, start: float, step_input: str, *, failed: bool) -> StepDone:
        rng = self.rng
        latency = pipeline.latency_s[index] * rng.lognormvariate(0.0, 0.5)
        end = start + latency
        recorded = end + rng.uniform(0.0002, 0.0008)
        tokens = rng.randrange(200, 4000) if pipeline.llm and not failed else 0
        cost = round(tokens * 2e-6, 6) if tokens else 0.0
        name = pipeline.steps[index]
        return StepDone(
            index=index,
            name=name,
            start=start,
            end=end,
            recorded=recorded,
            success=not failed,
            latency_s=0.0 if failed else latency,
            attempts=rng.choice((2, 3)) if failed else 1,
            cost=cost,
            tokens=tokens,
            output=None if failed else {"step": name, "records": rng.randrange(1000)},
            feedback=rng.choice(FEEDBACK) if failed else None,
            step_input=step_input,
        )

    def _context(
        self, run_id: str, job: str, pipeline: Pipeline, status: str, error: str | None, hitl: list[dict[str, Any]]
    ) -> str:
        rng = self.rng
        ctx: dict[str, Any] = {
            "run_id": run_id,
            "initial_prompt": job,
            "scratchpad": {"status": status},
            "hitl_history": hitl,
            "command_log": [],
        }
        if status == "paused":
            ctx["scratchpad"]["pause_message"] = f"Approve {job}?"
        if pipeline.custom_context:
            ctx.update(
                pipeline_id=pipeline.name,
                pipeline_name=pipeline.name,
                pipeline_version=pipeline.version,
                total_steps=3,
                error_message=error,
                customer_id=f"cust-{rng.randrange(50000):05d}",
                region=rng.choice(("eu-west-1", "us-east-1", "ap-south-1")),
            )
        text = json.dumps(ctx)
        target = rng.randint(400, 800)
        room = target - len(text) - len(', "notes": ""')
        if room > 0:
            offset = rng.randrange(len(self.filler) - room) if len(self.filler) > room else 0
            text = f'{text[:-1]}, "notes": {json.dumps(self.filler[offset : offset + room])}}}'
        return text

    def _emit(
        self,
        batch: Batch,
        tally: Tally,
        pipeline: Pipeline,
        outcome: str,
        run_id: str,
        job: str,
        t0: float,
        root_start: float,
        steps: list[StepDone],
        pause_at: float,
        ended: float,
        resume_end: float | None,
    ) -> None:
        rng = self.rng
        ws_status = {
            "completed": "completed",
            "failed": "failed",
            "cancelled": "cancelled",
            "crashed": "running",
            "inflight": "running",
            "paused": "paused",
            "resumed_completed": "completed",
            "resumed_failed": "failed",
        }[outcome]
        finished = outcome not in ("crashed", "inflight")
        failed_step = next((s for s in steps if not s.success), None)
        error = failed_step.feedback if failed_step and pipeline.custom_context else None
        hitl: list[dict[str, Any]] = []
        resumed = resume_end is not None
        if resumed:
            answered = datetime.fromtimestamp(steps[-1].start, UTC).isoformat()
            hitl = [{"message_to_human": f"Approve {job}?", "human_response": "approved", "timestamp": answered}]
        context = self._context(run_id, job, pipeline, ws_status, error, hitl)

        # workflow_state ------------------------------------------------------------------------------
        first_part_saved = ended if finished else (steps[-1].recorded if steps else t0)
        last_save = resume_end if resume_end is not None else first_part_saved
        # created_at is overwritten by every save except a resume's (which keeps the paused save's)
        created = ended if resume_end is not None else last_save
        index = (6 if outcome == "resumed_completed" else 5) if resumed else len(steps)
        history = [
            {
                "name": s.name,
                "output": s.output,
                "success": s.success,
                "attempts": s.attempts,
                "latency_s": s.latency_s,
                "token_counts": s.tokens,
                "cost_usd": s.cost,
                "feedback": s.feedback,
                "branch_context": None,
                "metadata_": None,
            }
            for s in steps
        ]
        last_output = json.dumps(steps[-1].output) if steps and steps[-1].output is not None else None
        ws_pipeline = (pipeline.name, pipeline.name, pipeline.version) if pipeline.custom_context else None
        self._later(
            last_save,
            "workflow_state",
            (
                run_id,
                *(ws_pipeline or ("unknown", "unknown", "latest")),
                index,
                context,
                last_output,
                json.dumps(history),
                ws_status,
                naive_iso(created),
                naive_iso(last_save + rng.uniform(0.0001, 0.0003)),
                3 if pipeline.custom_context else 0,
                error,
                int((resume_end - created) * 1000) if resume_end is not None else None,
                MEMORY_USAGE_MB,
            ),
        )
        tally.workflow_state[ws_status] += 1
        tally.resumed += resumed

        # runs ------------------------------------------------------------------------------------------
        if not finished:
            run_status = "running"
        elif failed_step is not None or (outcome == "cancelled" and rng.random() < 0.2):
            run_status = "failed"
        else:
            run_status = "completed"  # also paused and cancelled runs, as flujo records them
        run_end = (resume_end or ended) if finished else None
        total_cost = round(sum(s.cost for s in steps), 6) if finished else None
        batch.runs.append(
            (
                run_id,
                pipeline.name,
                pipeline.version,
                run_status,
                naive_iso(t0),
                naive_iso(run_end) if run_end is not None else None,
                total_cost,
                context if finished else None,
            )
        )
        tally.runs[run_status] += 1

        # steps -----------------------------------------------------------------------------------------
        for s in steps:
            self._later(
                s.recorded,
                "steps",
                (
                    f"{run_id}:{s.index}",
                    run_id,
                    s.name,
                    s.index,
                    "completed" if s.success else "failed",
                    naive_iso(s.recorded),
                    naive_iso(s.recorded + rng.uniform(0.000002, 0.00025)),
                    int(s.latency_s * 1000),
                    s.cost,
                    s.tokens,
                    "null",
                    json.dumps(s.output),
                    None if s.success else json.dumps(s.feedback),
                ),
            )
        tally.steps += len(steps)

        # spans: saved at the end of the run (a crashed or in-flight run has none) ----------------------
        if not finished:
            return
        saved_at = run_end or ended
        saved = sqlite_now(saved_at)
        root_id = self.uuid4()
        self._later(
            saved_at,
            "spans",
            (
                root_id,
                run_id,
                None,
                "pipeline_root",
                root_start,
                ended if resumed else None,
                "completed" if resumed else "running",
                json.dumps({"initial_input": job}),
                saved,
            ),
        )
        parent = root_id
        count = 1
        for s in steps:
            attributes: dict[str, Any] = {"step_type": "Step", "step_input": s.step_input}
            attributes.update(
                success=s.success, attempts=s.attempts, latency_s=s.latency_s, cost_usd=s.cost, token_counts=s.tokens
            )
            if s.feedback is not None:
                attributes["feedback"] = s.feedback
            status = "completed" if s.success else "failed"
            self._later(
                saved_at,
                "spans",
                (self.uuid4(), run_id, parent, s.name, s.start, s.end, status, json.dumps(attributes), saved),
            )
            count += 1
            if pipeline.hitl_step is not None and s.index == pipeline.hitl_step - 1 and outcome != "failed":
                # The HITL span stays running/NULL forever; after a resume the next steps hang below it.
                hitl_id = self.uuid4()
                hitl_input = json.dumps({"step_type": "HumanInTheLoopStep", "step_input": repr(s.output)})
                self._later(
                    saved_at,
                    "spans",
                    (
                        hitl_id,
                        run_id,
                        root_id,
                        pipeline.steps[pipeline.hitl_step],
                        pause_at,
                        None,
                        "running",
                        hitl_input,
                        saved,
                    ),
                )
                count += 1
                parent = hitl_id
        if outcome == "cancelled" and len(steps) < 3:
            # The in-flight step span of a cancelled run stays running/NULL.
            nxt = len(steps)
            attributes = {"step_type": "Step", "step_input": steps[-1].step_input if steps else job}
            self._later(
                saved_at,
                "spans",
                (
                    self.uuid4(),
                    run_id,
                    root_id,
                    pipeline.steps[nxt],
                    pause_at,
                    None,
                    "running",
                    json.dumps(attributes),
                    saved,
                ),
            )
            count += 1
        tally.spans += count


# --- writing -----------------------------------------------------------------------------------------------

_INSERT = {
    "workflow_state": "INSERT INTO workflow_state (run_id, pipeline_id, pipeline_name, pipeline_version,"
    " current_step_index, pipeline_context, last_step_output, step_history, status, created_at, updated_at,"
    " total_steps, error_message, execution_time_ms, memory_usage_mb) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
    "runs": "INSERT INTO runs (run_id, pipeline_name, pipeline_version, status, start_time, end_time, total_cost,"
    " final_context_blob) VALUES (?,?,?,?,?,?,?,?)",
    "steps": "INSERT INTO steps (step_run_id, run_id, step_name, step_index, status, start_time, end_time,"
    " duration_ms, cost, tokens, input_blob, output_blob, error_blob) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
    "spans": "INSERT INTO spans (span_id, run_id, parent_span_id, name, start_time, end_time, status, attributes,"
    " created_at) VALUES (?,?,?,?,?,?,?,?,?)",
}


def _write(conn: sqlite3.Connection, batch: Batch) -> None:
    with conn:
        for table, sql in _INSERT.items():
            conn.executemany(sql, getattr(batch, table))


def build(path: Path, runs: int, *, seed: int, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Write a complete DB to ``path`` (via ``path.building``); returns the metadata written beside it."""
    tmp = path.with_name(path.name + ".building")
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{tmp}{suffix}").unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    now = time.time()
    rng = random.Random(seed)
    conn = sqlite3.connect(tmp, isolation_level=None)
    try:
        conn.executescript(SCHEMA_SQL.read_text())
        conn.execute("PRAGMA journal_mode = OFF")
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("PRAGMA cache_size = -3000000")  # 3 GB: keeps the random-key indexes in memory
        conn.isolation_level = "DEFERRED"
        factory = RunFactory(rng, now)
        tally = Tally()
        batch = Batch()
        for done, t0 in enumerate(start_times(rng, runs, now), start=1):
            factory.add_run(batch, tally, t0)
            if done % BATCH_RUNS == 0:
                factory.drain(batch, t0)
                _write(conn, batch)
                batch = Batch()
                if progress:
                    progress(f"{path.name}: {done:,}/{runs:,} runs, {time.perf_counter() - started:.0f} s")
        factory.drain(batch, math.inf)
        _write(conn, batch)
        conn.isolation_level = None
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]  # persistent, as flujo leaves it
        if mode != "wal":
            raise RuntimeError(f"could not switch {tmp} to WAL (got {mode})")
    finally:
        conn.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{tmp}{suffix}").unlink(missing_ok=True)  # empty after the last connection closed
    os.replace(tmp, path)
    meta = {
        "generator_version": GENERATOR_VERSION,
        "runs": runs,
        "seed": seed,
        "anchor_utc": datetime.fromtimestamp(now, UTC).isoformat(),
        "anchor_epoch": now,
        "build_seconds": round(time.perf_counter() - started, 1),
        "file_bytes": path.stat().st_size,
        "workflow_state_by_status": dict(tally.workflow_state),
        "runs_by_status": dict(tally.runs),
        "steps": tally.steps,
        "spans": tally.spans,
        "resumed": tally.resumed,
    }
    meta_path(path).write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def ensure_db(
    runs: int, *, rebuild: bool = False, seed: int = 435, progress: Callable[[str], None] | None = None
) -> tuple[Path, dict[str, Any]]:
    """The cached DB for ``runs`` (built when missing, stale or ``rebuild``) and its metadata."""
    path = db_path(runs)
    meta = read_meta(path)
    fresh = (
        path.exists()
        and meta is not None
        and meta.get("generator_version") == GENERATOR_VERSION
        and meta.get("runs") == runs
        and meta.get("seed") == seed
    )
    if rebuild or not fresh or meta is None:
        meta_path(path).unlink(missing_ok=True)
        path.unlink(missing_ok=True)
        flujo_copy_path(runs).unlink(missing_ok=True)
        meta = build(path, runs, seed=seed, progress=progress)
    return path, meta


def ensure_flujo_copy(runs: int, source: Path, meta: dict[str, Any]) -> tuple[Path, float]:
    """flujo's own copy of ``source`` (made once per generated DB); returns (path, seconds spent copying)."""
    copy = flujo_copy_path(runs)
    marker = meta_path(copy)
    wanted = {"source_anchor_utc": meta["anchor_utc"], "generator_version": meta["generator_version"]}
    try:
        current = json.loads(marker.read_text())
    except (OSError, ValueError):
        current = None
    if copy.exists() and current == wanted:
        return copy, 0.0
    started = time.perf_counter()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{copy}{suffix}").unlink(missing_ok=True)
    tmp = copy.with_name(copy.name + ".copying")
    shutil.copyfile(source, tmp)
    os.replace(tmp, copy)
    marker.write_text(json.dumps(wanted) + "\n")
    return copy, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, required=True, help="number of runs (e.g. 100000)")
    parser.add_argument("--seed", type=int, default=435)
    parser.add_argument("--rebuild", action="store_true", help="rebuild even when a matching DB is cached")
    args = parser.parse_args()
    started = time.perf_counter()
    path, meta = ensure_db(
        args.runs, rebuild=args.rebuild, seed=args.seed, progress=lambda text: print(text, file=sys.stderr)
    )
    print(json.dumps({"path": str(path), "seconds": round(time.perf_counter() - started, 1), **meta}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
