"""A pretend pynenc 0.4.0 application writing its SQLite components, for the demo, tests and benchmarks.

The tables are exactly the ones pynenc 0.4.0 creates for one app (``DDL_040``, taken verbatim from
the ``sqlite_master`` of a file pynenc wrote, with the app prefix as ``<p>``), and rows are written
the way pynenc writes them (see /work/shared/engines/pynenc/SCHEMA.md and the fixtures):

* routing an invocation: ``state_backend_invocations``, the orchestrator row ``registered`` (owner
  ``ExternalRunner@<host>-<pid>``, or the parent's runner for a child), a ``history`` row and a
  broker message;
* every transition: the orchestrator row (``status``, ``status_runner_id``, ``status_timestamp``)
  in one ``BEGIN IMMEDIATE``, then one appended ``history`` row a moment later;
* a runner picking a message deletes it (``pending``); a retry routes a new one and counts
  ``retry_count``; the owner is NULL after ``retry`` and final statuses;
* a final failure stores the exception (``error_name``), a success its result;
* runners have a context row and a heartbeat row they keep refreshing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import os
import random
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from exporter.engines.arrivals import arrive_until
from exporter.engines.pynenc.layout import table_prefix
from exporter.engines.pynenc.statuses import FAILED, PENDING, REGISTERED, RETRY, RUNNING, SUCCESS

PREFIX_MARK = "<p>"
# pynenc 0.4.0's DDL for one app, in sqlite_master's order (sqlite_sequence comes with the broker's AUTOINCREMENT).
DDL_040 = (
    (
        "CREATE TABLE <p>orchestrator_invocations (\n"
        "                    invocation_id TEXT PRIMARY KEY,\n"
        "                    task_id_key TEXT NOT NULL,\n"
        "                    call_id_key TEXT NOT NULL,\n"
        "                    status TEXT NOT NULL,\n"
        "                    status_runner_id TEXT,\n"
        "                    status_timestamp REAL NOT NULL,\n"
        "                    retry_count INTEGER NOT NULL DEFAULT 0,\n"
        "                    auto_purge_timestamp REAL\n"
        "                )"
    ),
    (
        "CREATE TABLE <p>orchestrator_invocation_args (\n"
        "                    invocation_id TEXT NOT NULL,\n"
        "                    arg_key TEXT NOT NULL,\n"
        "                    arg_value TEXT NOT NULL,\n"
        "                    PRIMARY KEY (invocation_id, arg_key)\n"
        "                )"
    ),
    (
        "CREATE TABLE <p>orchestrator_runner_heartbeats (\n"
        "                    runner_id TEXT PRIMARY KEY,\n"
        "                    creation_timestamp REAL NOT NULL,\n"
        "                    allow_to_run_atomic_service INTEGER NOT NULL,\n"
        "                    last_heartbeat REAL NOT NULL,\n"
        "                    consumed_queues TEXT NOT NULL DEFAULT '[]'\n"
        "                )"
    ),
    (
        "CREATE TABLE <p>orchestrator_atomic_service_executions (\n"
        "                    runner_id TEXT NOT NULL,\n"
        "                    start_time TEXT NOT NULL,\n"
        "                    end_time TEXT,\n"
        "                    atomic_service_run_id TEXT NOT NULL PRIMARY KEY,\n"
        "                    status TEXT NOT NULL DEFAULT 'running',\n"
        "                    reason TEXT NOT NULL DEFAULT ''\n"
        "                )"
    ),
    (
        "CREATE TABLE <p>orchestrator_blocking_edges (\n"
        "                    waiter_id TEXT NOT NULL,\n"
        "                    waited_id TEXT NOT NULL,\n"
        "                    PRIMARY KEY (waiter_id, waited_id)\n"
        "                )"
    ),
    (
        "CREATE TABLE <p>state_backend_results (\n"
        "                invocation_id TEXT PRIMARY KEY,\n"
        "                result_data BLOB NOT NULL\n"
        "            )"
    ),
    (
        "CREATE TABLE <p>state_backend_exceptions (\n"
        "                invocation_id TEXT PRIMARY KEY,\n"
        "                exception_data BLOB NOT NULL\n"
        "            )"
    ),
    (
        "CREATE TABLE <p>state_backend_invocations (\n"
        "                invocation_id TEXT PRIMARY KEY,\n"
        "                call_id_key TEXT NOT NULL,\n"
        "                task_id_key TEXT NOT NULL,\n"
        "                arguments_id TEXT NOT NULL,\n"
        "                serialized_arguments TEXT NOT NULL,\n"
        "                parent_invocation_id TEXT,\n"
        "                parent_call_id TEXT,\n"
        "                parent_event_id TEXT,\n"
        "                workflow_id TEXT,\n"
        "                workflow_type_key TEXT,\n"
        "                parent_workflow_id TEXT\n"
        "            )"
    ),
    (
        "CREATE TABLE <p>state_backend_runner_contexts (\n"
        "                runner_id TEXT PRIMARY KEY,\n"
        "                runner_cls TEXT NOT NULL,\n"
        "                parent_ctx_id TEXT,\n"
        "                pid INTEGER NOT NULL,\n"
        "                hostname TEXT NOT NULL,\n"
        "                thread_id INTEGER NOT NULL\n"
        "            )"
    ),
    (
        "CREATE TABLE <p>state_backend_history (\n"
        "                invocation_id TEXT NOT NULL,\n"
        "                history_timestamp REAL NOT NULL,\n"
        "                history_status TEXT NOT NULL,\n"
        "                history_json TEXT NOT NULL,\n"
        "                PRIMARY KEY (invocation_id, history_timestamp, history_status)\n"
        "            )"
    ),
    (
        "CREATE TABLE <p>state_backend_workflows (\n"
        "                workflow_id TEXT PRIMARY KEY,\n"
        "                workflow_type_key TEXT NOT NULL,\n"
        "                parent_workflow_id TEXT\n"
        "            )"
    ),
    (
        "CREATE TABLE <p>state_backend_app_info (\n"
        "                app_id TEXT PRIMARY KEY,\n"
        "                app_info_json TEXT NOT NULL\n"
        "            )"
    ),
    (
        "CREATE TABLE <p>state_backend_workflow_data (\n"
        "                workflow_id TEXT NOT NULL,\n"
        "                data_key TEXT NOT NULL,\n"
        "                data_value BLOB NOT NULL,\n"
        "                PRIMARY KEY (workflow_id, data_key)\n"
        "            )"
    ),
    (
        "CREATE TABLE <p>state_backend_workflow_sub_invocations (\n"
        "                parent_workflow_id TEXT NOT NULL,\n"
        "                sub_invocation_id TEXT NOT NULL,\n"
        "                PRIMARY KEY (parent_workflow_id, sub_invocation_id)\n"
        "            )"
    ),
    (
        "CREATE TABLE <p>client_data (\n"
        "                    data_key TEXT PRIMARY KEY,\n"
        "                    data_value BLOB NOT NULL,\n"
        "                    created_at REAL NOT NULL DEFAULT (julianday('now'))\n"
        "                )"
    ),
    (
        "CREATE TABLE <p>trg_conditions (\n"
        "                    condition_id TEXT PRIMARY KEY,\n"
        "                    condition_json TEXT NOT NULL,\n"
        "                    last_cron_execution TIMESTAMP\n"
        "                )"
    ),
    (
        "CREATE TABLE <p>trg_triggers (\n"
        "                    trigger_id TEXT PRIMARY KEY,\n"
        "                    task_id_key TEXT NOT NULL,\n"
        "                    logic_value TEXT NOT NULL,\n"
        "                    argument_provider_json TEXT\n"
        "                )"
    ),
    (
        "CREATE TABLE <p>trg_condition_triggers (\n"
        "                    condition_id TEXT NOT NULL,\n"
        "                    trigger_id TEXT NOT NULL,\n"
        "                    PRIMARY KEY (condition_id, trigger_id)\n"
        "                )"
    ),
    (
        "CREATE TABLE <p>trg_valid_conditions (\n"
        "                    valid_condition_id TEXT PRIMARY KEY,\n"
        "                    valid_condition_json TEXT NOT NULL\n"
        "                )"
    ),
    (
        "CREATE TABLE <p>trg_source_task_conditions (\n"
        "                    task_id_key TEXT NOT NULL,\n"
        "                    condition_id TEXT NOT NULL,\n"
        "                    PRIMARY KEY (task_id_key, condition_id)\n"
        "                )"
    ),
    (
        "CREATE TABLE <p>trg_execution_claims (\n"
        "                    claim_key TEXT PRIMARY KEY,\n"
        "                    expiration TIMESTAMP\n"
        "                )"
    ),
    (
        "CREATE TABLE <p>trg_trigger_run_claims (\n"
        "                    trigger_run_id TEXT PRIMARY KEY,\n"
        "                    expiration TIMESTAMP\n"
        "                )"
    ),
    (
        "CREATE TABLE <p>trg_events (\n"
        "                event_id TEXT PRIMARY KEY,\n"
        "                event_code TEXT NOT NULL,\n"
        "                event_timestamp REAL NOT NULL,\n"
        "                event_json TEXT NOT NULL,\n"
        "                matched_condition_count INTEGER NOT NULL DEFAULT 0,\n"
        "                triggered_invocation_count INTEGER NOT NULL DEFAULT 0,\n"
        "                emitted_by_invocation_id TEXT,\n"
        "                emitted_by_task_id TEXT,\n"
        "                emitted_by_runner_context_id TEXT\n"
        "            )"
    ),
    (
        "CREATE TABLE <p>trg_event_conditions (\n"
        "                event_id TEXT NOT NULL,\n"
        "                condition_id TEXT NOT NULL,\n"
        "                valid_condition_id TEXT,\n"
        "                matched INTEGER NOT NULL,\n"
        "                PRIMARY KEY (event_id, condition_id)\n"
        "            )"
    ),
    (
        "CREATE TABLE <p>trg_event_triggered_invocations (\n"
        "                event_id TEXT NOT NULL,\n"
        "                invocation_id TEXT NOT NULL,\n"
        "                trigger_run_id TEXT,\n"
        "                linked_at REAL NOT NULL,\n"
        "                PRIMARY KEY (event_id, invocation_id)\n"
        "            )"
    ),
    (
        "CREATE TABLE <p>trg_trigger_runs (\n"
        "                trigger_run_id TEXT PRIMARY KEY,\n"
        "                trigger_id TEXT NOT NULL,\n"
        "                task_id_key TEXT NOT NULL,\n"
        "                logic_value TEXT NOT NULL,\n"
        "                claimed_at REAL,\n"
        "                executed_at REAL,\n"
        "                triggered_invocation_id TEXT,\n"
        "                trigger_run_json TEXT NOT NULL\n"
        "            )"
    ),
    (
        "CREATE TABLE <p>trg_trigger_run_conditions (\n"
        "                trigger_run_id TEXT NOT NULL,\n"
        "                context_type TEXT,\n"
        "                condition_id TEXT,\n"
        "                valid_condition_id TEXT,\n"
        "                event_id TEXT,\n"
        "                source_invocation_id TEXT\n"
        "            )"
    ),
    (
        "CREATE TABLE <p>trg_schema_version (\n"
        "                key TEXT PRIMARY KEY,\n"
        "                value INTEGER NOT NULL\n"
        "            )"
    ),
    (
        "CREATE TABLE <p>broker_message_queue (\n"
        "                    id INTEGER PRIMARY KEY AUTOINCREMENT,\n"
        "                    invocation_id TEXT NOT NULL,\n"
        "                    queue_name TEXT NOT NULL,\n"
        "                    priority REAL NOT NULL,\n"
        "                    created_at REAL NOT NULL DEFAULT (julianday('now'))\n"
        "                )"
    ),
    ("CREATE INDEX idx_<p>orchestrator_invocations_task_id ON <p>orchestrator_invocations(task_id_key)"),
    ("CREATE INDEX idx_<p>orchestrator_invocations_call_id ON <p>orchestrator_invocations(call_id_key)"),
    ("CREATE INDEX idx_<p>orchestrator_invocations_status ON <p>orchestrator_invocations(status)"),
    (
        "CREATE INDEX idx_<p>orchestrator_invocation_args_key_value"
        " ON <p>orchestrator_invocation_args(arg_key, arg_value)\n"
        "            "
    ),
    (
        "CREATE INDEX idx_<p>orchestrator_runner_heartbeats_heartbeat"
        " ON <p>orchestrator_runner_heartbeats(last_heartbeat)"
    ),
    (
        "CREATE INDEX idx_<p>orchestrator_runner_heartbeats_creation"
        " ON <p>orchestrator_runner_heartbeats(creation_timestamp)"
    ),
    (
        "CREATE INDEX idx_<p>orchestrator_atomic_service_executions_time\n"
        "                ON <p>orchestrator_atomic_service_executions(start_time, end_time)\n"
        "                "
    ),
    (
        "CREATE INDEX idx_<p>orchestrator_atomic_service_executions_status\n"
        "                ON <p>orchestrator_atomic_service_executions(status)\n"
        "                "
    ),
    (
        "CREATE UNIQUE INDEX idx_<p>orchestrator_atomic_service_executions_single_running\n"
        "                    ON <p>orchestrator_atomic_service_executions(status)\n"
        "                    WHERE status = 'running'\n"
        "                    "
    ),
    ("CREATE INDEX idx_<p>orchestrator_blocking_edges_waited_id ON <p>orchestrator_blocking_edges(waited_id)"),
    ("CREATE INDEX idx_<p>orchestrator_blocking_edges_waiter_id ON <p>orchestrator_blocking_edges(waiter_id)"),
    ("CREATE INDEX idx_<p>state_backend_invocations_parent ON <p>state_backend_invocations(parent_invocation_id)"),
    ("CREATE INDEX idx_<p>state_backend_invocations_parent_event ON <p>state_backend_invocations(parent_event_id)"),
    ("CREATE INDEX idx_<p>state_backend_workflows_type ON <p>state_backend_workflows(workflow_type_key)"),
    ("CREATE INDEX idx_<p>client_data_created ON <p>client_data(created_at)"),
    ("CREATE INDEX idx_<p>trg_events_code_time ON <p>trg_events(event_code, event_timestamp)"),
    ("CREATE INDEX idx_<p>trg_events_time ON <p>trg_events(event_timestamp)"),
    (
        "CREATE INDEX idx_<p>trg_events_emit_inv"
        " ON <p>trg_events(emitted_by_invocation_id) WHERE emitted_by_invocation_id IS NOT NULL"
    ),
    ("CREATE INDEX idx_<p>trg_event_conditions_cond ON <p>trg_event_conditions(condition_id)"),
    ("CREATE INDEX idx_<p>trg_event_triggered_invocations_inv ON <p>trg_event_triggered_invocations(invocation_id)"),
    ("CREATE INDEX idx_<p>trg_trigger_runs_inv ON <p>trg_trigger_runs(triggered_invocation_id)"),
    ("CREATE INDEX idx_<p>trg_trigger_runs_task_time ON <p>trg_trigger_runs(task_id_key, executed_at)"),
    ("CREATE INDEX idx_<p>trg_trigger_run_conditions_run ON <p>trg_trigger_run_conditions(trigger_run_id)"),
    ("CREATE INDEX idx_<p>trg_trigger_run_conditions_evt ON <p>trg_trigger_run_conditions(event_id)"),
    ("CREATE INDEX idx_<p>trg_trigger_run_conditions_src_inv ON <p>trg_trigger_run_conditions(source_invocation_id)"),
    ("CREATE INDEX idx_<p>trg_trigger_run_conditions_valid ON <p>trg_trigger_run_conditions(valid_condition_id)"),
    (
        "CREATE INDEX idx_<p>broker_message_queue_route"
        " ON <p>broker_message_queue(queue_name, priority DESC, created_at ASC, id ASC)\n"
        "            "
    ),
)
DEFAULT_QUEUE = "default"
DEMO_APP = "demo_app"


def create_schema(conn: sqlite3.Connection, prefix: str) -> None:
    """pynenc 0.4.0's tables and indexes for one app (``CREATE ... IF NOT EXISTS`` as pynenc, so a
    second writer of the same app is harmless)."""
    for statement in DDL_040:
        conn.execute(_if_not_exists(statement.replace(PREFIX_MARK, prefix)))


def _if_not_exists(statement: str) -> str:
    # sqlite_master keeps the statement as written minus "IF NOT EXISTS": add it back.
    for head in ("CREATE TABLE ", "CREATE UNIQUE INDEX ", "CREATE INDEX "):
        if statement.startswith(head):
            return head + "IF NOT EXISTS " + statement[len(head) :]
    raise ValueError(f"unexpected DDL: {statement[:40]!r}")


def arguments_id(arguments: Mapping[str, object]) -> str:
    return hashlib.sha256(json.dumps(serialized(arguments), sort_keys=True).encode()).hexdigest()


def serialized(arguments: Mapping[str, object]) -> dict[str, str]:
    # pynenc stores each argument serialised on its own (``{"x": "10", "y": "20"}``).
    return {key: json.dumps(value) for key, value in arguments.items()}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


@dataclass(frozen=True)
class Workflow:
    workflow_id: str  # the invocation id of the workflow task that started it
    type_key: str
    parent: str | None = None  # the enclosing workflow of a sub-workflow


@dataclass
class Runner:
    runner_id: str
    runner_cls: str
    alive: bool = True


class PynencWriter:
    """One app's writes through one connection (pynenc's components each hold their own; the rows
    and their order are the same).  Thread-safe: the demo's writes may come from a worker thread."""

    def __init__(
        self,
        path: Path,
        app_id: str = DEMO_APP,
        *,
        config_values: Mapping[str, object] | None = None,
        clock: Callable[[], float] = time.time,
        module: str = "demo_tasks",
    ) -> None:
        self.path = path
        self.app_id = app_id
        self.prefix = table_prefix(app_id)
        self.clock = clock
        self.module = module
        self.external_runner = f"ExternalRunner@{socket.gethostname()}-{os.getpid()}"
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, isolation_level=None, timeout=30.0, check_same_thread=False)
        with self._transaction() as conn:
            create_schema(conn, self.prefix)
            info = {
                "app_id": app_id,
                "config_values": {
                    "app_id": app_id,
                    "orchestrator_cls": "SQLiteOrchestrator",
                    "broker_cls": "SQLiteBroker",
                    "state_backend_cls": "SQLiteStateBackend",
                    "client_data_store_cls": "SQLiteClientDataStore",
                    "trigger_cls": "SQLiteTrigger",
                    "sqlite_db_path": str(path),
                    "runner_cls": "ThreadRunner",
                    **(config_values or {}),
                },
                "config_filepath": None,
                "module": module,
                "module_filepath": f"/srv/app/{module}.py",
                "app_variable": "app",
            }
            conn.execute(
                f"INSERT OR REPLACE INTO {self.t('state_backend_app_info')} (app_id, app_info_json) VALUES (?, ?)",
                (app_id, json.dumps(info)),
            )
            self._context(conn, self.external_runner, "ExternalRunner")

    def t(self, component: str) -> str:
        return f'"{self.prefix}{component}"'

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _context(self, conn: sqlite3.Connection, runner_id: str, runner_cls: str) -> None:
        conn.execute(
            f"INSERT OR IGNORE INTO {self.t('state_backend_runner_contexts')} "
            "(runner_id, runner_cls, parent_ctx_id, pid, hostname, thread_id) VALUES (?, ?, NULL, ?, ?, ?)",
            (runner_id, runner_cls, os.getpid(), socket.gethostname(), threading.get_ident()),
        )

    # -- runners ---------------------------------------------------------------------------------

    def start_runner(self, runner_cls: str = "ThreadRunner") -> Runner:
        runner = Runner(str(uuid.uuid4()), runner_cls)
        now = self.clock()
        with self._transaction() as conn:
            self._context(conn, runner.runner_id, runner_cls)
            conn.execute(
                f"INSERT INTO {self.t('orchestrator_runner_heartbeats')} "
                "(runner_id, creation_timestamp, allow_to_run_atomic_service, last_heartbeat, consumed_queues) "
                "VALUES (?, ?, 1, ?, '[]')",
                (runner.runner_id, now, now),
            )
        return runner

    def heartbeat(self, runner: Runner) -> None:
        with self._transaction() as conn:
            conn.execute(
                f"UPDATE {self.t('orchestrator_runner_heartbeats')} SET last_heartbeat = ? WHERE runner_id = ?",
                (self.clock(), runner.runner_id),
            )

    # -- invocations -----------------------------------------------------------------------------

    def route(
        self,
        task: str,
        arguments: Mapping[str, object],
        *,
        parent: str | None = None,
        by: Runner | None = None,
        invocation_id: str | None = None,
        workflow: Workflow | None = None,
        within: str | None = None,
    ) -> str:
        """Register an invocation of ``task`` (``module.func``) and queue its broker message.
        ``parent``/``by``: a child routed by the invocation ``parent`` running on ``by``;
        ``workflow``: the workflow it belongs to (0.3+: standalone tasks have none);
        ``within``: the workflow its parent runs in, which records it as a sub-invocation."""
        invocation_id = invocation_id or str(uuid.uuid4())
        args_id = arguments_id(arguments)
        call_id = f"{task}:{args_id}"
        owner = by.runner_id if by else self.external_runner
        workflow_id, workflow_type, parent_workflow = (
            (workflow.workflow_id, workflow.type_key, workflow.parent) if workflow else (None, None, None)
        )
        now = self.clock()
        with self._transaction() as conn:
            conn.execute(
                f"INSERT INTO {self.t('state_backend_invocations')} (invocation_id, call_id_key, task_id_key, "
                "arguments_id, serialized_arguments, parent_invocation_id, parent_call_id, parent_event_id, "
                "workflow_id, workflow_type_key, parent_workflow_id) VALUES (?, ?, ?, ?, ?, ?, NULL, NULL, ?, ?, ?)",
                (
                    invocation_id,
                    call_id,
                    task,
                    args_id,
                    json.dumps(serialized(arguments)),
                    parent,
                    workflow_id,
                    workflow_type,
                    parent_workflow,
                ),
            )
            if workflow_id == invocation_id:
                conn.execute(
                    f"INSERT OR IGNORE INTO {self.t('state_backend_workflows')} "
                    "(workflow_id, workflow_type_key, parent_workflow_id) VALUES (?, ?, ?)",
                    (workflow_id, workflow_type, parent_workflow),
                )
            if within is not None:
                conn.execute(
                    f"INSERT OR IGNORE INTO {self.t('state_backend_workflow_sub_invocations')} "
                    "(parent_workflow_id, sub_invocation_id) VALUES (?, ?)",
                    (within, invocation_id),
                )
            conn.execute(
                f"INSERT INTO {self.t('orchestrator_invocations')} (invocation_id, task_id_key, call_id_key, status, "
                "status_runner_id, status_timestamp, retry_count, auto_purge_timestamp) "
                "VALUES (?, ?, ?, ?, ?, ?, 0, NULL)",
                (invocation_id, task, call_id, REGISTERED, owner, now),
            )
        self._history(invocation_id, REGISTERED, owner, now, owner, registered_by=parent)
        self._queue(invocation_id)
        return invocation_id

    def pick(self, invocation_id: str, runner: Runner) -> None:
        """``runner`` takes the invocation's message off the broker: ``pending``."""
        with self._transaction() as conn:
            conn.execute(
                f"DELETE FROM {self.t('broker_message_queue')} WHERE id = "
                f"(SELECT MIN(id) FROM {self.t('broker_message_queue')} WHERE invocation_id = ?)",
                (invocation_id,),
            )
        self._transition(invocation_id, PENDING, runner)

    def run(self, invocation_id: str, runner: Runner) -> None:
        self._transition(invocation_id, RUNNING, runner)

    def succeed(self, invocation_id: str, runner: Runner, result: object) -> None:
        with self._transaction() as conn:
            conn.execute(
                f"INSERT OR REPLACE INTO {self.t('state_backend_results')} (invocation_id, result_data) VALUES (?, ?)",
                (invocation_id, json.dumps(result)),
            )
        self._transition(invocation_id, SUCCESS, runner, final=True)

    def fail(self, invocation_id: str, runner: Runner, error_name: str, message: str) -> None:
        """A final failure: the exception is stored (transient retry errors are not)."""
        error_data = {"py/reduce": [{"py/type": f"builtins.{error_name}"}, {"py/tuple": [message]}, {}]}
        data = {"error_name": error_name, "pynenc_error": False, "error_data": json.dumps(error_data)}
        with self._transaction() as conn:
            conn.execute(
                f"INSERT OR REPLACE INTO {self.t('state_backend_exceptions')} (invocation_id, exception_data) "
                "VALUES (?, ?)",
                (invocation_id, json.dumps(data)),
            )
        self._transition(invocation_id, FAILED, runner, final=True)

    def retry(self, invocation_id: str, runner: Runner) -> None:
        """The attempt failed with a retriable error: ``retry``, routed again for the next attempt."""
        self._transition(invocation_id, RETRY, runner, retry=True)
        self._queue(invocation_id)

    def _queue(self, invocation_id: str) -> None:
        with self._transaction() as conn:
            conn.execute(
                f"INSERT INTO {self.t('broker_message_queue')} (invocation_id, queue_name, priority) "
                "VALUES (?, ?, 0.0)",
                (invocation_id, DEFAULT_QUEUE),
            )

    def _transition(
        self, invocation_id: str, status: str, runner: Runner, *, final: bool = False, retry: bool = False
    ) -> None:
        owner = None if final or retry else runner.runner_id
        now = self.clock()
        with self._transaction() as conn:
            conn.execute(
                f"UPDATE {self.t('orchestrator_invocations')} SET status = ?, status_runner_id = ?, "
                "status_timestamp = ?, retry_count = retry_count + ?, auto_purge_timestamp = ? WHERE invocation_id = ?",
                (status, owner, now, int(retry), self.clock() if final else None, invocation_id),
            )
        self._history(invocation_id, status, owner, now, runner.runner_id)

    def _history(
        self,
        invocation_id: str,
        status: str,
        owner: str | None,
        status_ts: float,
        context: str,
        *,
        registered_by: str | None = None,
    ) -> None:
        # The state backend appends its row after the orchestrator's write: a few ms later.
        written = max(self.clock(), math.nextafter(status_ts, math.inf))
        record = {
            "invocation_id": invocation_id,
            "_timestamp": _iso(written),
            "status_record": {"status": status, "runner_id": owner, "timestamp": _iso(status_ts)},
            "runner_context_id": context,
            "registered_by_inv_id": registered_by,
        }
        with self._transaction() as conn:
            conn.execute(
                f"INSERT INTO {self.t('state_backend_history')} "
                "(invocation_id, history_timestamp, history_status, history_json) VALUES (?, ?, ?, ?)",
                (invocation_id, written, status, json.dumps(record)),
            )


# -- a pretend app ---------------------------------------------------------------------------------

# (scenario, weight): what one top-level call does.
SCENARIOS = (
    ("add", 40),
    ("divide", 10),
    ("flaky_once", 10),
    ("always_flaky", 5),
    ("fanout", 12),
    ("main_workflow", 8),
    ("sleepy", 2),  # its runner dies while it runs: runner_dead once the heartbeat is old enough
    ("lost", 2),  # its runner dies right after picking it: pending_timeout
)
# Outcomes of one invocation: how many retries before the last attempt, and whether that one fails.
OUTCOMES: dict[str, tuple[int, str | None]] = {
    "add": (0, None),
    "divide": (0, "ZeroDivisionError"),
    "flaky_once": (1, None),
    "always_flaky": (2, "ValueError"),
}


class Simulator:
    """Top-level calls of a small pynenc app, each going through pynenc's transitions, on a few
    runners that keep heartbeating.  ``speed=math.inf`` writes everything without pausing."""

    def __init__(self, writer: PynencWriter, *, seed: int | None = None, speed: float = 1.0, runners: int = 2) -> None:
        self.writer = writer
        self.random = random.Random(seed)
        self.speed = speed
        self.runners = [writer.start_runner() for _ in range(runners)]
        self.calls = 0

    async def run_forever(self, stop: asyncio.Event, *, calls_per_second: float = 2.0) -> None:
        beat = asyncio.create_task(self._heartbeats(stop))
        await arrive_until(stop, calls_per_second, self.random, self.run_one)
        await asyncio.gather(beat, return_exceptions=True)

    async def _heartbeats(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.heartbeat()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 2.0)

    def heartbeat(self) -> None:
        for runner in self.runners:
            self.writer.heartbeat(runner)

    async def run_one(self) -> str:
        names = [name for name, _ in SCENARIOS]
        scenario = self.random.choices(names, [w for _, w in SCENARIOS])[0]
        self.calls += 1
        task = f"{self.writer.module}.{scenario}"
        if scenario == "fanout":
            return await self._fanout(task)
        if scenario == "main_workflow":
            return await self._workflow(task)
        if scenario in ("sleepy", "lost"):
            return await self._crash(task, scenario)
        return await self._call(task, self._arguments(), OUTCOMES[scenario])

    def _arguments(self) -> dict[str, object]:
        return {"x": self.random.randint(0, 99), "y": self.random.randint(0, 9)}

    async def _pause(self, low: float, high: float) -> None:
        if math.isfinite(self.speed):
            await asyncio.sleep(self.random.uniform(low, high) / self.speed)

    def _runner(self) -> Runner:
        return self.random.choice(self.runners)

    async def _start(self, invocation_id: str) -> Runner:
        await self._pause(0.05, 0.6)  # queued until a runner polls the broker
        runner = self._runner()
        self.writer.pick(invocation_id, runner)
        await self._pause(0.0, 0.05)
        self.writer.run(invocation_id, runner)
        return runner

    async def _finish(self, invocation_id: str, runner: Runner, outcome: tuple[int, str | None]) -> None:
        retries, error = outcome
        for _ in range(retries):
            await self._pause(0.05, 0.5)
            self.writer.retry(invocation_id, runner)
            runner = await self._start(invocation_id)
        await self._pause(0.1, 1.5)
        if error is None:
            self.writer.succeed(invocation_id, runner, self.random.randint(0, 999))
        else:
            self.writer.fail(invocation_id, runner, error, f"{error} in {self.writer.module}")

    async def _call(
        self,
        task: str,
        arguments: Mapping[str, object],
        outcome: tuple[int, str | None],
        *,
        parent: tuple[str, Runner] | None = None,
    ) -> str:
        parent_id, by = parent if parent else (None, None)
        invocation_id = self.writer.route(task, arguments, parent=parent_id, by=by)
        runner = await self._start(invocation_id)
        await self._finish(invocation_id, runner, outcome)
        return invocation_id

    async def _fanout(self, task: str) -> str:
        """A plain task routing children (0.4.0: no workflow) and waiting for them."""
        invocation_id = self.writer.route(task, {"n": 3})
        runner = await self._start(invocation_id)
        child = f"{self.writer.module}.add"
        await asyncio.gather(
            *(self._call(child, {"x": i, "y": i}, OUTCOMES["add"], parent=(invocation_id, runner)) for i in range(3))
        )
        await self._finish(invocation_id, runner, OUTCOMES["add"])
        return invocation_id

    async def _workflow(self, task: str) -> str:
        """``@app.workflow`` main_workflow -> sub_workflow (a sub-workflow) -> add, as in the fixtures."""
        module = self.writer.module
        main = str(uuid.uuid4())
        self.writer.route(task, {"n": 2}, invocation_id=main, workflow=Workflow(main, task))
        runner = await self._start(main)
        sub = str(uuid.uuid4())
        sub_task = f"{module}.sub_workflow"
        sub_workflow = Workflow(sub, sub_task, parent=main)
        self.writer.route(
            sub_task, {"n": 2}, parent=main, by=runner, invocation_id=sub, workflow=sub_workflow, within=main
        )
        sub_runner = await self._start(sub)
        add = self.writer.route(
            f"{module}.add", {"x": 2, "y": 2}, parent=sub, by=sub_runner, workflow=sub_workflow, within=sub
        )
        add_runner = await self._start(add)
        await self._finish(add, add_runner, OUTCOMES["add"])
        await self._finish(sub, sub_runner, OUTCOMES["add"])
        await self._finish(main, runner, OUTCOMES["add"])
        return main

    async def _crash(self, task: str, scenario: str) -> str:
        """A runner process dies (SIGKILL) holding the invocation: it stops heartbeating and the
        invocation stays ``running`` (or ``pending``) until pynenc's recovery would act on it."""
        invocation_id = self.writer.route(task, {"seconds": 3600})
        await self._pause(0.05, 0.6)
        doomed = self.writer.start_runner()
        self.writer.pick(invocation_id, doomed)
        if scenario == "sleepy":
            self.writer.run(invocation_id, doomed)
        doomed.alive = False
        return invocation_id
