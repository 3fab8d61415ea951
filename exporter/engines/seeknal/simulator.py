"""A pretend seeknal 2.13.0 project writing its ``DatabaseStateBackend`` state DB, for the demo and tests.

What is written, and how, follows seeknal 2.13.0's ``seeknal/state/database_backend.py`` (the latest on
PyPI) and the rows it wrote in tests/fixtures/seeknal/:

* the schema is ``_init_schema``'s statements, verbatim (so ``sqlite_master`` is the fixture's);
* ``set_node_state`` is its upsert on ``(run_id, node_id)`` with every column; ``set_run_state`` upserts
  the run (``ON CONFLICT DO UPDATE``: the rowid stays), deletes the run's node rows and calls
  ``set_node_state`` per node; ``acquire_lock``/``release_lock`` insert and delete a
  ``backend_locks`` row keyed ``<run_id>:<node_id>``; JSON columns hold ``json.dumps`` of the value,
  or NULL when it is empty (seeknal's ``if state.metadata else None``);
* one connection (``isolation_level="DEFERRED"``, the default rollback journal), and every write one
  ``backend.transaction()``: seeknal's own "commit when not in a transaction" check runs after
  Python's implicit BEGIN and never commits, so a bare call writes nothing lasting;
* seeknal 2.13's CLI stores only a finished run; a project driving the backend's API (as the
  fixture's crashed run was written) also stores the run at its start and each node as it runs;
* ``last_run`` (run and node) and the ``%Y%m%d_%H%M%S`` run id are the writer's naive local time
  (``tz``); a node's ``last_run`` is stamped after it ran; ``created_at``/``updated_at``/``locked_at``
  are SQLite's UTC ``CURRENT_TIMESTAMP``.

The pretend project (:class:`Project`) runs one ``seeknal run`` at a time over a small DAG: each
node that changed (or failed last time, or sits below one that runs) is executed (a lock, a
``running`` row, then its outcome), an unchanged one keeps its previous row (carried over with its
old ``last_run``, as ``seeknal run`` does), the nodes below a failed one are ``skipped``; the run
state is stored at the start (nodes ``pending``) and at the end.  Now and then a run crashes at its
first node: that node stays ``running``, its lock held, the others ``pending``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import random
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any

SCHEMA = (
    (
        "\n"
        "            CREATE TABLE IF NOT EXISTS run_state (\n"
        "                run_id TEXT PRIMARY KEY,\n"
        "                schema_version TEXT DEFAULT '2.0',\n"
        "                seeknal_version TEXT DEFAULT '2.0.0',\n"
        "                last_run TEXT,\n"
        "                config_json TEXT,\n"
        "                created_at TEXT DEFAULT CURRENT_TIMESTAMP,\n"
        "                updated_at TEXT DEFAULT CURRENT_TIMESTAMP\n"
        "            )\n"
        "        "
    ),
    (
        "\n"
        "            CREATE TABLE IF NOT EXISTS node_state (\n"
        "                id INTEGER PRIMARY KEY AUTOINCREMENT,\n"
        "                run_id TEXT NOT NULL,\n"
        "                node_id TEXT NOT NULL,\n"
        "                hash TEXT,\n"
        "                last_run TEXT,\n"
        "                status TEXT,\n"
        "                duration_ms INTEGER DEFAULT 0,\n"
        "                row_count INTEGER DEFAULT 0,\n"
        "                version INTEGER DEFAULT 1,\n"
        "                metadata_json TEXT,\n"
        "                fingerprint_json TEXT,\n"
        "                iceberg_snapshot_id TEXT,\n"
        "                iceberg_snapshot_timestamp TEXT,\n"
        "                iceberg_table_ref TEXT,\n"
        "                iceberg_schema_version INTEGER,\n"
        "                completed_intervals_json TEXT,\n"
        "                completed_partitions_json TEXT,\n"
        "                restatement_intervals_json TEXT,\n"
        "                created_at TEXT DEFAULT CURRENT_TIMESTAMP,\n"
        "                updated_at TEXT DEFAULT CURRENT_TIMESTAMP,\n"
        "                UNIQUE(run_id, node_id)\n"
        "            )\n"
        "        "
    ),
    ("\n            CREATE INDEX IF NOT EXISTS idx_node_state_run_id\n            ON node_state(run_id)\n        "),
    ("\n            CREATE INDEX IF NOT EXISTS idx_node_state_status\n            ON node_state(status)\n        "),
    (
        "\n"
        "            CREATE TABLE IF NOT EXISTS backend_locks (\n"
        "                lock_key TEXT PRIMARY KEY,\n"
        "                locked_at TEXT DEFAULT CURRENT_TIMESTAMP,\n"
        "                locked_by TEXT\n"
        "            )\n"
        "        "
    ),
)

SET_RUN_STATE = """
            INSERT INTO run_state (run_id, schema_version, seeknal_version, last_run, config_json)
            VALUES (?, ?, ?, ?, ?)
            ON CONFLICT(run_id) DO UPDATE SET
                schema_version = excluded.schema_version,
                seeknal_version = excluded.seeknal_version,
                last_run = excluded.last_run,
                config_json = excluded.config_json,
                updated_at = CURRENT_TIMESTAMP
        """
DELETE_RUN_NODES = """
            DELETE FROM node_state WHERE run_id = ?
        """
SET_NODE_STATE = """
            INSERT INTO node_state (
                run_id, node_id, hash, last_run, status, duration_ms, row_count,
                version, metadata_json, fingerprint_json, iceberg_snapshot_id,
                iceberg_snapshot_timestamp, iceberg_table_ref, iceberg_schema_version,
                completed_intervals_json, completed_partitions_json, restatement_intervals_json
            ) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT(run_id, node_id) DO UPDATE SET
                hash = excluded.hash,
                last_run = excluded.last_run,
                status = excluded.status,
                duration_ms = excluded.duration_ms,
                row_count = excluded.row_count,
                version = excluded.version,
                metadata_json = excluded.metadata_json,
                fingerprint_json = excluded.fingerprint_json,
                iceberg_snapshot_id = excluded.iceberg_snapshot_id,
                iceberg_snapshot_timestamp = excluded.iceberg_snapshot_timestamp,
                iceberg_table_ref = excluded.iceberg_table_ref,
                iceberg_schema_version = excluded.iceberg_schema_version,
                completed_intervals_json = excluded.completed_intervals_json,
                completed_partitions_json = excluded.completed_partitions_json,
                restatement_intervals_json = excluded.restatement_intervals_json,
                updated_at = CURRENT_TIMESTAMP
        """
ACQUIRE_LOCK = """
                INSERT INTO backend_locks (lock_key, locked_by)
                VALUES (?, ?)
            """
RELEASE_LOCK = """
            DELETE FROM backend_locks WHERE lock_key = ?
        """

PENDING, RUNNING, SUCCESS, FAILED, SKIPPED, CACHED = "pending", "running", "success", "failed", "skipped", "cached"


@dataclass(frozen=True)
class NodeState:
    """seeknal's ``NodeState`` (the fields the DB backend stores)."""

    hash: str
    last_run: str  # naive local ISO time ("" before the node ran)
    status: str
    duration_ms: int = 0
    row_count: int = 0
    version: int = 1
    metadata: Mapping[str, Any] = field(default_factory=dict)
    fingerprint: Mapping[str, str] | None = None
    iceberg_snapshot_id: str | None = None
    iceberg_snapshot_timestamp: str | None = None
    iceberg_table_ref: str | None = None
    iceberg_schema_version: int | None = None
    completed_intervals: list[Any] = field(default_factory=list)
    completed_partitions: list[Any] = field(default_factory=list)
    restatement_intervals: list[Any] = field(default_factory=list)


@dataclass(frozen=True)
class RunState:
    """seeknal's ``RunState``."""

    run_id: str
    last_run: str  # naive local ISO time: when the run started
    config: Mapping[str, Any] = field(default_factory=dict)
    nodes: Mapping[str, NodeState] = field(default_factory=dict)
    schema_version: str = "2.0"
    seeknal_version: str = "2.0.0"  # what 2.13.0's RunState still defaults to (and the fixture holds)


def _json(value: object) -> str | None:
    return json.dumps(value) if value else None


class SeeknalWriter:
    """seeknal 2.13.0's ``DatabaseStateBackend`` writes, each in one ``transaction()``; thread-safe
    (one connection, one write at a time, as seeknal's per-thread connection under its lock)."""

    def __init__(self, path: Path, *, durable: bool = True) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level="DEFERRED")
        if not durable:  # tests writing hundreds of commits: the same bytes, without an fsync per commit
            self._conn.execute("PRAGMA synchronous = OFF")
        self._lock = threading.Lock()
        with self._transaction() as conn:
            for statement in SCHEMA:
                conn.execute(statement)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                yield self._conn
            except BaseException:
                self._conn.rollback()
                raise
            self._conn.commit()

    def set_node_state(self, run_id: str, node_id: str, state: NodeState) -> None:
        with self._transaction() as conn:
            self._set_node_state(conn, run_id, node_id, state)

    def set_run_state(self, state: RunState) -> None:
        with self._transaction() as conn:
            conn.execute(
                SET_RUN_STATE,
                (state.run_id, state.schema_version, state.seeknal_version, state.last_run, _json(state.config)),
            )
            conn.execute(DELETE_RUN_NODES, (state.run_id,))
            for node_id, node in state.nodes.items():
                self._set_node_state(conn, state.run_id, node_id, node)

    def acquire_lock(self, run_id: str, node_id: str | None = None, locked_by: str = "MainThread") -> bool:
        try:
            with self._transaction() as conn:
                conn.execute(ACQUIRE_LOCK, (f"{run_id}:{node_id or ''}", locked_by))
        except sqlite3.IntegrityError:
            return False
        return True

    def release_lock(self, run_id: str, node_id: str | None = None) -> None:
        with self._transaction() as conn:
            conn.execute(RELEASE_LOCK, (f"{run_id}:{node_id or ''}",))

    @staticmethod
    def _set_node_state(conn: sqlite3.Connection, run_id: str, node_id: str, s: NodeState) -> None:
        conn.execute(
            SET_NODE_STATE,
            (
                run_id,
                node_id,
                s.hash,
                s.last_run,
                s.status,
                s.duration_ms,
                s.row_count,
                s.version,
                _json(s.metadata),
                _json(s.fingerprint),
                s.iceberg_snapshot_id,
                s.iceberg_snapshot_timestamp,
                s.iceberg_table_ref,
                s.iceberg_schema_version,
                _json(s.completed_intervals),
                _json(s.completed_partitions),
                _json(s.restatement_intervals),
            ),
        )


def local_time(at: datetime, tz: tzinfo) -> str:
    """seeknal's ``datetime.now().isoformat()`` in the writer's zone: naive, microseconds."""
    return at.astimezone(tz).replace(tzinfo=None).isoformat(timespec="microseconds")


# -- a pretend project --------------------------------------------------------------------------------

# node id -> the nodes it reads (the DAG, in execution order).
DAG: Mapping[str, tuple[str, ...]] = {
    "source.orders": (),
    "source.customers": (),
    "transform.customer_totals": ("source.orders", "source.customers"),
    "transform.daily_orders": ("source.orders",),
    "transform.revenue_report": ("transform.customer_totals", "transform.daily_orders"),
    "feature_group.customer_features": ("transform.customer_totals",),
}
# (scenario, weight): how one run goes.
SCENARIOS = (
    ("clean", 60),  # every changed node succeeds
    ("failing", 25),  # one node fails: the nodes below it are skipped
    ("crashed", 3),  # the process dies mid-node: it stays running, its lock held
)
ERROR = (
    "Execution failed for {node}: Statement 1 failed: Binder Error: Referenced column "
    '"no_such_column" not found in FROM clause!'
)


class Project:
    """One ``seeknal run`` at a time over :data:`DAG`.  ``speed=math.inf`` writes without pausing;
    ``clock`` is the writer's clock (UTC-aware), ``tz`` its local zone."""

    def __init__(
        self,
        writer: SeeknalWriter,
        *,
        tz: tzinfo = UTC,
        seed: int | None = None,
        speed: float = 1.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.writer = writer
        self.tz = tz
        self.random = random.Random(seed)
        self.speed = speed
        self.clock = clock
        self.runs = 0
        self.previous: dict[str, NodeState] = {}  # each node's latest row, carried into the next run
        self._last_run_id = ""

    async def run_forever(self, stop: asyncio.Event, *, pause: float = 1.0) -> None:
        """Runs back to back, ``pause`` seconds (on average) apart, until ``stop``."""
        while not stop.is_set():
            await self.run_one()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.random.expovariate(1 / pause))

    async def _pause(self, seconds: float) -> None:
        if math.isfinite(self.speed):
            await asyncio.sleep(seconds / self.speed)

    async def _write(self, operation: Callable[..., object], *args: object) -> None:
        await asyncio.to_thread(operation, *args)

    def _run_id(self, started: datetime) -> str:
        run_id = started.astimezone(self.tz).strftime("%Y%m%d_%H%M%S")
        if run_id <= self._last_run_id:  # two runs in one second: seeknal's id would repeat
            run_id = f"{self._last_run_id}_{self.runs}"
        self._last_run_id = run_id
        return run_id

    async def run_one(self, scenario: str | None = None) -> str:
        names = [name for name, _ in SCENARIOS]
        scenario = scenario or self.random.choices(names, [w for _, w in SCENARIOS])[0]
        self.runs += 1
        started = self.clock()
        run_id = self._run_id(started)
        run = RunState(run_id, local_time(started, self.tz), {"full": False, "nodes": None, "types": None})
        changed = self._to_run()
        breaking = None
        if changed and scenario == "failing":
            breaking = self.random.choice(changed)
        elif changed and scenario == "crashed":
            breaking = changed[0]  # dies at its first node: the others stay pending
        # Not run yet: seeknal's pending NodeState (empty hash and last_run, as the fixture's pending row).
        nodes = {n: self.previous[n] if n not in changed else NodeState("", "", PENDING) for n in DAG}
        await self._write(self.writer.set_run_state, replace(run, nodes=nodes))
        failed: set[str] = set()
        for node_id in DAG:
            if node_id not in changed:
                continue  # unchanged: its row from an earlier run is carried over
            if failed & _upstream(node_id):
                nodes[node_id] = NodeState(
                    nodes[node_id].hash,
                    local_time(self.clock(), self.tz),
                    SKIPPED,
                    metadata={"reason": "upstream failed"},
                )
                failed.add(node_id)  # and so are the nodes below it
                continue
            node = await self._execute(run_id, node_id, scenario if node_id == breaking else "clean")
            if node is None:
                return run_id  # crashed: nothing more is written for this run
            nodes[node_id] = node
            if node.status == FAILED:
                failed.add(node_id)
        await self._write(self.writer.set_run_state, replace(run, nodes=nodes))
        self.previous.update({n: s for n, s in nodes.items() if s.status in (SUCCESS, FAILED)})
        return run_id

    def _to_run(self) -> list[str]:
        """What ``seeknal run`` executes: nodes never run or not successful last time, nodes whose
        definition changed (at random here), and every node below one of those."""
        chosen: list[str] = []
        for node_id in DAG:  # parents come first
            last = self.previous.get(node_id)
            edited = self.random.random() < 0.4
            if last is None or last.status != SUCCESS or edited or set(chosen) & set(DAG[node_id]):
                chosen.append(node_id)
        return chosen

    async def _execute(self, run_id: str, node_id: str, scenario: str) -> NodeState | None:
        version = self.runs
        await self._write(self.writer.acquire_lock, run_id, node_id)
        running = NodeState(_hash(node_id, version), local_time(self.clock(), self.tz), RUNNING)
        await self._write(self.writer.set_node_state, run_id, node_id, running)
        seconds = self.random.uniform(0.05, 0.5) if node_id.startswith("source.") else self.random.uniform(0.1, 1.0)
        await self._pause(seconds)
        if scenario == "crashed":
            return None
        ended = local_time(self.clock(), self.tz)
        duration = round(seconds * 1000)
        if scenario == "failing":
            node = NodeState(running.hash, ended, FAILED, duration, 0, metadata={"error": ERROR.format(node=node_id)})
        else:
            fingerprint = {
                "content_hash": running.hash,
                "schema_hash": _hash(node_id, 0),
                "upstream_hash": "",
                "config_hash": "",
            }
            node = NodeState(
                running.hash,
                ended,
                SUCCESS,
                duration,
                self.random.randint(10, 5000),
                metadata={"engine": "duckdb", "executor_version": "1.0.0"},
                fingerprint=fingerprint,
            )
        await self._write(self.writer.set_node_state, run_id, node_id, node)
        await self._write(self.writer.release_lock, run_id, node_id)
        return node


def _upstream(node_id: str) -> set[str]:
    found: set[str] = set()
    for parent in DAG[node_id]:
        found |= {parent, *_upstream(parent)}
    return found


def _hash(node_id: str, version: int) -> str:
    return hashlib.sha256(f"{node_id}:{version}".encode()).hexdigest()
