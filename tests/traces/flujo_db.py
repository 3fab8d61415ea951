"""Synthetic Flujo DBs for the span-export tests, written the way flujo writes them.

The schema is copied from the real fixtures (0.4.35 or 0.6.11); runs and spans follow flujo's write
sequence: the run row at start, the final status at the end, and the spans of a run saved by deleting
and re-inserting all of them in one transaction (so span rowids change on every save).
"""

from __future__ import annotations

import hashlib
import json
import random
import sqlite3
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SCHEMA_SOURCES = {"0.4.35": FIXTURES / "sample-small.db", "0.6": FIXTURES / "sample06-small.db"}


def trace_hex(run_id: str) -> str:
    """The documented derivation, computed independently of the exporter's code."""
    return hashlib.sha256(b"flujo-trace:" + run_id.encode()).digest()[:16].hex()


def span_hex(run_id: str, span_id: str) -> str:
    return hashlib.sha256(b"flujo-span:" + run_id.encode() + b"\x00" + span_id.encode()).digest()[:8].hex()


def new_span_id(rng: random.Random | None = None) -> str:
    return str(uuid.UUID(int=(rng or random).getrandbits(128), version=4))


def create(path: Path, layout: str = "0.4.35") -> sqlite3.Connection:
    """An empty DB with the real schema of ``layout``."""
    # immutable=1: read the fixture without creating -wal/-shm files next to it
    source = sqlite3.connect(f"file:{SCHEMA_SOURCES[layout]}?mode=ro&immutable=1", uri=True)
    ddl = [
        row[0]
        for row in source.execute("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name != 'sqlite_sequence'")
    ]
    source.close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    for statement in ddl:
        conn.execute(statement)
    return conn


def iso(instant: datetime) -> str:
    """runs/steps times as 0.4.35 writes them: naive UTC ISO."""
    return instant.astimezone(UTC).replace(tzinfo=None).isoformat()


@dataclass
class Span:
    span_id: str
    name: str
    start: float
    end: float | None
    status: str
    parent: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)

    def row(self, run_id: str) -> tuple[Any, ...]:
        return (
            self.span_id,
            run_id,
            self.parent,
            self.name,
            self.start,
            self.end,
            self.status,
            json.dumps(self.attributes),
        )


class FlujoWriter:
    """Writes runs and spans into a 0.4.35-layout DB like flujo 0.4.35 does."""

    def __init__(self, path: Path, *, create_db: bool = True) -> None:
        self.path = path
        self.conn = create(path) if create_db else sqlite3.connect(path, isolation_level=None)

    def close(self) -> None:
        self.conn.close()

    def start_run(self, run_id: str, start: datetime, pipeline: str = "etl_daily", version: str = "1.4.0") -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO runs (run_id, pipeline_name, pipeline_version, status, start_time)"
            " VALUES (?, ?, ?, 'running', ?)",
            (run_id, pipeline, version, iso(start)),
        )
        self._state(run_id, pipeline, version, "running", start)

    def _state(self, run_id: str, pipeline: str, version: str, status: str, when: datetime) -> None:
        local = iso(when)
        self.conn.execute(
            "INSERT OR REPLACE INTO workflow_state (run_id, pipeline_id, pipeline_name, pipeline_version,"
            " current_step_index, pipeline_context, status, created_at, updated_at)"
            " VALUES (?, 'unknown', ?, ?, 0, '{}', ?, ?, ?)",
            (run_id, pipeline, version, status, local, local),
        )

    def set_status(self, run_id: str, ws_status: str, when: datetime, runs_status: str | None = None) -> None:
        """workflow_state's status, and (0.4.35) the runs row's status and end time."""
        pipeline, version = self.conn.execute(
            "SELECT pipeline_name, pipeline_version FROM runs WHERE run_id = ?", (run_id,)
        ).fetchone()
        self._state(run_id, pipeline, version, ws_status, when)
        if runs_status is not None:
            self.conn.execute(
                "UPDATE runs SET status = ?, end_time = ? WHERE run_id = ?", (runs_status, iso(when), run_id)
            )

    def finish_run(self, run_id: str, status: str, end: datetime) -> None:
        self.set_status(run_id, status, end, runs_status="failed" if status == "failed" else "completed")

    def save_spans(self, run_id: str, spans: Sequence[Span]) -> None:
        """flujo's save_trace: delete every span of the run and insert them again, in one transaction."""
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.execute("DELETE FROM spans WHERE run_id = ?", (run_id,))
        self.conn.executemany(
            "INSERT INTO spans (span_id, run_id, parent_span_id, name, start_time, end_time, status, attributes,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, datetime('now'))",
            [span.row(run_id) for span in spans],
        )
        self.conn.execute("COMMIT")

    def span_rowids(self, run_id: str) -> list[int]:
        return [r[0] for r in self.conn.execute("SELECT rowid FROM spans WHERE run_id = ? ORDER BY rowid", (run_id,))]

    def delete_run(self, run_id: str) -> None:
        self.conn.execute("DELETE FROM spans WHERE run_id = ?", (run_id,))
        self.conn.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))
        self.conn.execute("DELETE FROM workflow_state WHERE run_id = ?", (run_id,))


def typical_run(
    rng: random.Random, start: datetime, steps: Iterable[str] = ("extract", "transform", "load"), fail: bool = False
) -> tuple[list[Span], datetime]:
    """A finished run's spans as 0.4.35 stores them: the root open (running/NULL), steps closed."""
    t0 = start.timestamp()
    root = Span(new_span_id(rng), "pipeline_root", t0, None, "running", None, {"initial_input": "job"})
    spans = [root]
    t = t0 + 0.0002
    names = list(steps)
    for index, name in enumerate(names):
        latency = rng.uniform(0.01, 3.0)
        bad = fail and index == len(names) - 1
        attributes: dict[str, Any] = {
            "step_type": "Step",
            "step_input": f"input {rng.randint(0, 99999)}",
            "success": not bad,
            "attempts": 1,
            "latency_s": latency,
            "cost_usd": 0.0,
            "token_counts": rng.randint(0, 500),
        }
        if bad:
            attributes["feedback"] = "step exploded"
        status = "failed" if bad else "completed"
        spans.append(Span(new_span_id(rng), name, t, t + latency, status, root.span_id, attributes))
        t += latency + 0.0001
    return spans, datetime.fromtimestamp(t + 0.001, UTC)


def build_large(path: Path, spans_wanted: int, seed: int = 7, start: datetime | None = None) -> int:
    """A finished-runs DB with about ``spans_wanted`` spans (runs of 2-5 spans); returns the span count."""
    rng = random.Random(seed)
    conn = create(path)
    conn.execute("PRAGMA synchronous = OFF")
    base = start or datetime(2026, 11, 1, tzinfo=UTC)
    total = 0
    runs: list[tuple[Any, ...]] = []
    span_rows: list[tuple[Any, ...]] = []
    run_no = 0
    while total < spans_wanted:
        run_id = f"run_{rng.getrandbits(128):032x}"
        begin = base + timedelta(seconds=run_no * 3)
        steps = ("extract", "transform", "load", "notify")[: rng.randint(1, 4)]
        spans, end = typical_run(rng, begin, steps, fail=rng.random() < 0.2)
        runs.append((run_id, "etl_daily", "1.4.0", "completed", iso(begin), iso(end)))
        span_rows.extend(span.row(run_id) for span in spans)
        total += len(spans)
        run_no += 1
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO runs (run_id, pipeline_name, pipeline_version, status, start_time, end_time, total_cost)"
        " VALUES (?, ?, ?, ?, ?, ?, 0.0)",
        runs,
    )
    conn.executemany(
        "INSERT INTO spans (span_id, run_id, parent_span_id, name, start_time, end_time, status, attributes,"
        " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, '2026-11-21 11:00:00')",
        span_rows,
    )
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return total


def stored_spans(path: Path) -> list[dict[str, Any]]:
    """Every stored span row of a DB (read with a plain connection, for expectations)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in conn.execute("SELECT * FROM spans")]
    finally:
        conn.close()
