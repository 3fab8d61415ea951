"""A pretend Flujo application writing a state DB through our backend, for the demo and tests.

Pipelines complete, fail, pause at a human step, get cancelled, crash (leaving a running row that
turns stuck) and launch background tasks, with spans saved at the end of each run as flujo does.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from exporter.engines.arrivals import arrive_until
from exporter.state import SQLiteBackend

OUTCOMES = (("completed", 70), ("failed", 14), ("paused", 6), ("cancelled", 4), ("crashed", 6))


@dataclass(frozen=True)
class Pipeline:
    name: str
    steps: tuple[str, ...]
    step_seconds: float
    background_step: str | None = None


PIPELINES = (
    Pipeline("etl_daily", ("extract", "transform", "load"), 0.6),
    Pipeline("llm_summarize", ("fetch_docs", "summarize", "classify"), 0.9),
    Pipeline("approval_flow", ("prepare", "human_approval", "apply"), 0.3),
    Pipeline("long_job", ("start", "wait_for_worker", "finalize"), 1.5),
    Pipeline("doc_ingest", ("fetch", "embed", "publish"), 0.5, background_step="index_docs"),
)


class Simulator:
    def __init__(self, backend: SQLiteBackend, *, seed: int | None = None, speed: float = 1.0) -> None:
        self.backend = backend
        self.random = random.Random(seed)
        self.speed = speed
        self.runs_started = 0

    async def run_forever(self, stop: asyncio.Event, *, runs_per_second: float = 2.0) -> None:
        await arrive_until(stop, runs_per_second, self.random, self.run_one)

    async def run_one(self) -> str:
        pipeline = self.random.choice(PIPELINES)
        outcome = self._outcome(pipeline)
        run_id = f"run_{uuid.uuid4().hex}"
        self.runs_started += 1
        started = time.time()
        await self.backend.save_run_start(
            {
                "run_id": run_id,
                "pipeline_name": pipeline.name,
                "pipeline_version": "1.0.0",
                "status": "running",
            }
        )
        await self._save_state(run_id, pipeline, "running", 0)
        spans = [_span(run_id, None, "pipeline_root", started)]
        root = spans[0]["span_id"]
        failed_at = self.random.randrange(len(pipeline.steps)) if outcome == "failed" else None
        for index, step in enumerate(pipeline.steps):
            if outcome == "crashed" and index == 1:
                return run_id  # the process "died": the row stays running and turns stuck
            if outcome == "paused" and step == "human_approval":
                spans.append(_span(run_id, root, step, time.time(), status="running"))
                break
            step_start = time.time()
            await asyncio.sleep(self.random.uniform(0.3, 1.7) * pipeline.step_seconds / self.speed)
            ok = index != failed_at
            await self.backend.save_step_result(
                {
                    "run_id": run_id,
                    "step_name": step,
                    "step_index": index,
                    "success": ok,
                    "output": {"records": self.random.randint(1, 900)} if ok else None,
                    "feedback": None if ok else f"{step} failed: upstream timeout",
                    "latency_s": time.time() - step_start,
                    "cost_usd": round(self.random.uniform(0, 0.01), 6),
                    "token_counts": self.random.randint(0, 4000),
                }
            )
            spans.append(_span(run_id, root, step, step_start, time.time(), "completed" if ok else "failed"))
            if pipeline.background_step and index == 0:
                await self._launch_background(run_id, pipeline)
            if not ok:
                break
            if outcome == "cancelled" and index == 0:
                break
            await self._save_state(run_id, pipeline, "running", index + 1)
        final = {"crashed": "running"}.get(outcome, outcome)
        await self._save_state(run_id, pipeline, final, len(pipeline.steps))
        runs_status = "failed" if outcome == "failed" else "completed"
        await self.backend.save_run_end(run_id, {"status": runs_status, "total_cost": 0.0})
        spans[0]["end_time"] = time.time()
        spans[0]["status"] = runs_status
        await self.backend.save_spans(run_id, spans)
        return run_id

    def _outcome(self, pipeline: Pipeline) -> str:
        names = [name for name, _ in OUTCOMES]
        weights = [w for _, w in OUTCOMES]
        if pipeline.name == "long_job":
            weights[names.index("crashed")] *= 4
        if pipeline.name != "approval_flow":
            weights[names.index("paused")] = 0
        return self.random.choices(names, weights)[0]

    async def _save_state(self, run_id: str, pipeline: Pipeline, status: str, index: int, **extra: Any) -> None:
        now = datetime.now(UTC)
        await self.backend.save_state(
            run_id,
            {
                "run_id": run_id,
                "pipeline_id": pipeline.name,
                "pipeline_name": pipeline.name,
                "pipeline_version": "1.0.0",
                "current_step_index": index,
                "pipeline_context": {"run_id": run_id, "initial_prompt": f"{pipeline.name} job"},
                "last_step_output": None,
                "status": status,
                "created_at": now,
                "updated_at": now,
                "total_steps": len(pipeline.steps),
                **extra,
            },
        )

    async def _launch_background(self, parent: str, pipeline: Pipeline) -> None:
        task_id = f"bg_{uuid.uuid4().hex}"
        run_id = f"{parent}_bg_{task_id}"
        meta = {"is_background_task": 1, "parent_run_id": parent, "task_id": task_id}
        await self._save_state(run_id, pipeline, "running", 0, **meta)
        outcome = self.random.choices(("completed", "failed", "running"), (75, 15, 10))[0]
        if outcome == "running":
            return  # never finishes: a stale background task
        await asyncio.sleep(self.random.uniform(0.5, 3.0) / self.speed)
        error = {"background_error": "index_docs failed: embedding service unavailable"} if outcome == "failed" else {}
        await self._save_state(run_id, pipeline, outcome, 1, **meta, **error)


def _span(
    run_id: str,
    parent: str | None,
    name: str,
    start: float,
    end: float | None = None,
    status: str = "running",
) -> dict[str, Any]:
    return {
        "span_id": str(uuid.uuid4()),
        "parent_span_id": parent,
        "name": name,
        "start_time": start,
        "end_time": end,
        "status": status,
        "attributes": {"flujo.run_id": run_id, "step_input": name},
    }
