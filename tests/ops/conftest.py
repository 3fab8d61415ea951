"""The ops stack of tests/ops: real daemons over copies of real Flujo fixtures, a real Prometheus evaluating
prometheus/flujo.rules.yml and prometheus/workflow.rules.yml, a real Alertmanager and a real OTLP receiver.

Three daemons, one per Flujo fixture, are scraped by one Prometheus job, like three Flujo apps:

* ``06``: sample06-small.db (Flujo 0.6.x: background tasks), span export to a real OTLP receiver that fails the
  first requests (so the failure metrics have data too), and every job enabled: cleanup as a dry run, the stale
  background-task timeout with a threshold no task reaches (it writes nothing), stuck-run alerts to a real
  Alertmanager;
* ``0435``: sample-small.db (Flujo 0.4.35: step durations);
* ``legacy``: sample-v0.4.32-legacy.db (Flujo 0.4.32: no ``runs`` table, so no finished runs nor durations).

A writer then finishes runs in the 06 and 0435 DBs the way Flujo records them (0.6.x ``runs`` rows; 0.4.35 ``runs`` and
``steps`` rows with durations), so that rates, ratios and quantiles have finite values, not only zeros and NaN.
Every process is stopped by PID.

A second, smaller stack (``pynenc_stack``) serves pynenc: one daemon per pynenc fixture, one Prometheus evaluating
prometheus/pynenc.rules.yml, and live finishes written the way pynenc writes them (history rows and the
orchestrator's status), so that the pynenc dashboard's rates, ratios and quantiles are finite too.

A third (``seeknal_stack``) serves seeknal: one daemon over a copy of the seeknal fixture re-dated to the stack's start
(so that its ages are those of its expected JSON whatever today's date), one Prometheus evaluating
prometheus/seeknal.rules.yml, and a writer storing a new run every second the way seeknal's DatabaseStateBackend does,
so that the seeknal dashboard's rates and quantiles are finite.
A fourth (``marianne_stack``) serves Marianne: one daemon per Marianne file (workspace and conductor registry), one
Prometheus evaluating prometheus/marianne.rules.yml, a zombie on a pid this host knows dead, and a job ending live
the way Marianne saves it.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import marianne_writes
import processes
import pytest
from engines.cases import MARIANNE_REGISTRY, MARIANNE_WORKSPACE, PYNENC_FIXTURES, SEEKNAL_FIXTURE, pynenc_expected
from processes import Process, running_daemon, running_prometheus, wait_for_series
from support import FIXTURES, LEGACY, SMALL, SMALL06, require_tool
from traces.receiver import Receiver

from exporter.engines.seeknal.simulator import NodeState, RunState, SeeknalWriter, local_time

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "prometheus" / "flujo.rules.yml"
WORKFLOW_RULES = REPO / "prometheus" / "workflow.rules.yml"
RULES_TEST = REPO / "prometheus" / "flujo.rules.test.yml"
PYNENC_RULES = REPO / "prometheus" / "pynenc.rules.yml"
SEEKNAL_RULES = REPO / "prometheus" / "seeknal.rules.yml"
DASHBOARD = REPO / "grafana" / "flujo-state-exporter.json"
PROMETHEUS_RULE = REPO / "deploy" / "kubernetes" / "prometheusrule.yaml"
# The job name the "exporter down" alerts match (documented at the top of the rules file).
JOB = "flujo-state-exporter"
# The pynenc stack's scrape job: no pynenc rule depends on it.
PYNENC_JOB = "pynenc-state-exporter"
SEEKNAL_JOB = "seeknal-state-exporter"
AM_CONFIG = processes.ALERTMANAGER_CONFIG


def running_alertmanager(tmp: Path, config: str = AM_CONFIG) -> AbstractContextManager[Process]:
    """A real Alertmanager (tests/processes.py) for the tests that start their own."""
    return processes.running_alertmanager(require_tool("prometheus-alertmanager", "alertmanager"), tmp, config)


@pytest.fixture(scope="session")
def alertmanager_factory() -> Callable[..., AbstractContextManager[Process]]:
    """``running_alertmanager(tmp, config=...)``: for the tests that start their own."""
    return running_alertmanager


@pytest.fixture(scope="session")
def prometheus_config_factory() -> Callable[..., str]:
    """``prometheus_config(targets, rule_files, alertmanager=None)``: scrape and evaluate every second."""
    return prometheus_config


def prometheus_config(
    targets: list[str], rule_files: list[Path], alertmanager: str | None = None, job: str = JOB
) -> str:
    text = f"""
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files: [{", ".join(f'"{p}"' for p in rule_files)}]
scrape_configs:
  - job_name: {job}
    static_configs:
      - targets: [{", ".join(f'"{t}"' for t in targets)}]
"""
    if alertmanager:
        text += f"""
alerting:
  alertmanagers:
    - static_configs:
        - targets: ["{alertmanager}"]
"""
    return text


def daemon_config(
    db: Path, *, metrics: str = "", traces: str = "", jobs: str = "", writer_timezone: str = "UTC"
) -> str:
    """Refresh every second; ``metrics`` adds keys (indented by two) under ``metrics:``."""
    return f"""
db:
  path: {db}
  writer_timezone: {writer_timezone}
metrics:
  refresh_interval: 1s
  counts_interval: 1s
  aggregate_interval: 1s
  # Seed the duration histograms with every finished run of the fixture, whatever today's date.
  run_duration_window: 36500d
{metrics}
{traces}
{jobs}
"""


def traces_config(receiver: Receiver, tmp: Path) -> str:
    return f"""
traces:
  enabled: true
  protocol: grpc
  endpoint: {receiver.grpc_endpoint}
  tls:
    insecure: true
  poll_interval: 200ms
  settle_period: 0s
  state_file: {tmp / "traces-state.sqlite"}
  retry:
    initial_backoff: 100ms
    max_backoff: 300ms
"""


def jobs_config(alertmanager_url: str) -> str:
    return f"""
jobs:
  cleanup:
    enabled: true
    dry_run: true
    interval: 1s
    jitter: 0s
  stale_background_tasks:
    enabled: true
    interval: 1s
    jitter: 0s
    stale_hours: 876000   # 100 years: no task of the fixture is failed, the DB is not written
  stuck_alerts:
    enabled: true
    interval: 1s
    jitter: 0s
    attempts: 1
    alertmanager:
      url: {alertmanager_url}
"""


def iso_naive(instant: datetime) -> str:
    return instant.astimezone(UTC).replace(tzinfo=None).isoformat()


def finish_runs_06(db: Path, pipeline: str, statuses: list[str]) -> None:
    """What Flujo 0.6.x leaves for finished runs: workflow_state, runs (aware UTC ISO times, no step durations)
    and spans (``time.monotonic()`` times, a root span and a step span)."""
    now = datetime.now(UTC)
    clock = time.monotonic()
    with contextlib.closing(sqlite3.connect(db)) as conn:
        for i, status in enumerate(statuses):
            run_id = f"run_{uuid.uuid4().hex}"
            seconds = 20 + 7 * i
            start = now - timedelta(seconds=seconds)
            conn.execute(
                "INSERT INTO workflow_state (run_id, pipeline_id, pipeline_name, pipeline_version, current_step_index,"
                " pipeline_context, status, created_at, updated_at, total_steps, is_background_task)"
                " VALUES (?, ?, ?, '1.0.0', 1, '{}', ?, ?, ?, 1, 0)",
                (run_id, f"{pipeline}@1.0.0", pipeline, status, start.isoformat(), now.isoformat()),
            )
            conn.execute(
                "INSERT INTO runs (run_id, pipeline_id, pipeline_name, pipeline_version, status, created_at,"
                " updated_at, execution_time_ms, total_steps) VALUES (?, ?, ?, '1.0.0', ?, ?, ?, ?, 1)",
                (run_id, f"{pipeline}@1.0.0", pipeline, status, start.isoformat(), now.isoformat(), seconds * 1000),
            )
            root = str(uuid.uuid4())
            saved = now.strftime("%Y-%m-%d %H:%M:%S")
            for span_id, parent, name in ((root, None, "pipeline_run"), (str(uuid.uuid4()), root, "fetch")):
                conn.execute(
                    "INSERT INTO spans (run_id, span_id, parent_span_id, name, start_time, end_time, status,"
                    " attributes, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, '{}', ?)",
                    (run_id, span_id, parent, name, clock - seconds, clock, status, saved),
                )
        conn.commit()


def finish_runs_0435(db: Path, pipeline: str, statuses: list[str]) -> None:
    """What Flujo 0.4.35 leaves in ``runs`` and ``steps`` (naive UTC times, step durations in ms)."""
    now = datetime.now(UTC)
    with contextlib.closing(sqlite3.connect(db)) as conn:
        for i, status in enumerate(statuses):
            run_id = f"run_{uuid.uuid4().hex}"
            start = now - timedelta(seconds=30 + 11 * i)
            conn.execute(
                "INSERT INTO runs (run_id, pipeline_name, pipeline_version, status, start_time, end_time)"
                " VALUES (?, ?, '1.0.0', ?, ?, ?)",
                (run_id, pipeline, status, iso_naive(start), iso_naive(now)),
            )
            for index, (step, step_status) in enumerate((("fetch", "completed"), ("load", status))):
                step_start = start + timedelta(seconds=10 * index)
                step_end = step_start + timedelta(seconds=9)
                conn.execute(
                    "INSERT INTO steps (step_run_id, run_id, step_name, step_index, status, start_time, end_time,"
                    " duration_ms) VALUES (?, ?, ?, ?, ?, ?, ?, 9000)",
                    (f"{run_id}:{index}", run_id, step, index, step_status, iso_naive(step_start), iso_naive(step_end)),
                )
        conn.commit()


@dataclass
class OpsStack:
    prometheus: Process
    daemons: dict[str, Process]
    alertmanager: Process
    receiver: Receiver
    # The fixture each daemon serves a copy of, by the daemon's key.
    fixtures: dict[str, str]

    def instance(self, fixture: str) -> str:
        """The ``instance`` label of the daemon serving ``fixture``."""
        [key] = [key for key, name in self.fixtures.items() if name == fixture]
        return self.daemons[key].url.removeprefix("http://")


@pytest.fixture(scope="session")
def ops_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpsStack]:
    binary = require_tool("prometheus")
    tmp = tmp_path_factory.mktemp("ops-stack")
    fixtures = {"06": SMALL06, "0435": SMALL, "legacy": LEGACY}
    db06, db0435, db_legacy = (tmp / name for name in fixtures.values())
    for name in fixtures.values():
        shutil.copyfile(FIXTURES / name, tmp / name)
    (tmp / "06").mkdir()
    (tmp / "legacy").mkdir()
    receiver = Receiver()
    receiver.failures_to_inject = 3  # the first export requests fail: failure metrics get data too
    with contextlib.ExitStack() as stack:
        stack.enter_context(receiver)
        am = stack.enter_context(running_alertmanager(tmp))
        config06 = daemon_config(db06, traces=traces_config(receiver, tmp / "06"), jobs=jobs_config(am.url))
        daemon06 = stack.enter_context(running_daemon(tmp / "06", config=config06, wait_path="/readyz"))
        daemon0435 = stack.enter_context(running_daemon(tmp, config=daemon_config(db0435), wait_path="/readyz"))
        config_legacy = daemon_config(db_legacy)
        daemon_legacy = stack.enter_context(running_daemon(tmp / "legacy", config=config_legacy, wait_path="/readyz"))
        daemons = {"06": daemon06, "0435": daemon0435, "legacy": daemon_legacy}
        targets = [d.url.removeprefix("http://") for d in daemons.values()]
        config = prometheus_config(targets, [RULES, WORKFLOW_RULES])
        prometheus = stack.enter_context(running_prometheus(binary, tmp, config))
        # Every target scraped, the export recovered from the injected failures, the jobs ran.
        wait_for_series(prometheus, f'count(up{{job="{JOB}"}} == 1) == 3')
        wait_for_series(prometheus, "state_exporter_span_export_success == 1")
        with contextlib.suppress(TimeoutError):  # without jobs, the tests that need their metrics fail by name
            wait_for_series(prometheus, "count(state_exporter_job_runs_total > 0) == 3", timeout=10)
        # Live activity on top of the fixtures' history: finished runs in both DBs, after Prometheus has seen
        # the counters, so that their rates and the duration quantiles are finite.
        wait_for_series(prometheus, "flujo:runs_finished:rate5m")
        # One failure in five: under FlujoPipelineFailureRatioHigh's 25% whatever increase() extrapolates.
        finish_runs_06(db06, "doc_ingest", ["completed", "completed", "failed", "completed", "completed"])
        finish_runs_0435(db0435, "etl_daily", ["completed", "failed", "completed", "completed", "completed"])
        wait_for_series(prometheus, "count(flujo:runs_finished:rate5m > 0) >= 4")
        wait_for_series(prometheus, "count(flujo:run_duration_seconds:p95_rate1h >= 0) >= 2")
        wait_for_series(prometheus, "flujo:step_duration_seconds:p95_rate1h >= 0")
        wait_for_series(prometheus, "flujo:pipeline_failure_ratio:rate30m >= 0")
        # The new 0.6 runs' spans were exported by requests Prometheus saw happen.
        wait_for_series(
            prometheus,
            "histogram_quantile(0.95, sum by (le) (rate(state_exporter_span_export_duration_seconds_bucket[1m]))) >= 0",
        )
        # The overview's duration quantiles over the same runs.
        wait_for_series(
            prometheus,
            "count(histogram_quantile(0.5, sum by (instance, le)"
            " (rate(workflow_run_duration_seconds_bucket[1h]))) >= 0) >= 2",
        )
        # Before the live runs finished, the static fixtures' running runs looked like "nothing finishes" to
        # WorkflowNoRunsFinishing; wait for a rule evaluation that has seen the finishes.
        wait_for_series(prometheus, "count(sum by (instance) (increase(workflow_runs_finished_total[3h])) > 0) >= 2")
        wait_for_series(prometheus, 'absent(ALERTS{alertname="WorkflowNoRunsFinishing"})')
        yield OpsStack(prometheus, daemons, am, receiver, fixtures)


def finish_invocations(db: Path, prefix: str, outcomes: dict[str, str], start: float) -> None:
    """What pynenc writes when each task's registered invocation runs to ``outcomes[task]``: a history row per
    transition (pending, running, the final status; 2 s of run) and the orchestrator's current status."""
    history, invocations = f'"{prefix}state_backend_history"', f'"{prefix}orchestrator_invocations"'
    with contextlib.closing(sqlite3.connect(db)) as conn:
        for task, status in outcomes.items():
            [(invocation_id,)] = conn.execute(
                f"SELECT invocation_id FROM {invocations} WHERE status = 'registered' AND task_id_key = ?", (task,)
            )
            for offset, step in ((0.0, "pending"), (0.5, "running"), (2.5, status)):
                record = {"invocation_id": invocation_id, "status_record": {"status": step, "runner_id": "r1"}}
                conn.execute(
                    f"INSERT INTO {history} (invocation_id, history_timestamp, history_status, history_json)"
                    " VALUES (?, ?, ?, ?)",
                    (invocation_id, start + offset, step, json.dumps(record)),
                )
            conn.execute(
                f"UPDATE {invocations} SET status = ?, status_runner_id = NULL, status_timestamp = ?"
                " WHERE invocation_id = ?",
                (status, start + 2.5, invocation_id),
            )
        conn.commit()


@dataclass
class PynencStack:
    prometheus: Process
    # One daemon per pynenc fixture (tests/fixtures/pynenc/*.db), by fixture name.
    daemons: dict[str, Process]

    def instance(self, fixture: str) -> str:
        return self.daemons[fixture].url.removeprefix("http://")


@pytest.fixture(scope="session")
def pynenc_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PynencStack]:
    """Real daemons over copies of the three pynenc fixtures, one Prometheus evaluating prometheus/pynenc.rules.yml.

    Each fixture leaves one seed_tasks.add and one seed_tasks.divide invocation registered; once Prometheus has
    seen the finished counters, both run to their end (add succeeds, divide fails), so that the failure ratios and
    the duration quantiles have finite values."""
    binary = require_tool("prometheus")
    tmp = tmp_path_factory.mktemp("pynenc-stack")
    with contextlib.ExitStack() as stack:
        daemons = {}
        for fixture in PYNENC_FIXTURES:
            db = tmp / Path(fixture).name
            shutil.copyfile(FIXTURES / fixture, db)
            workdir = tmp / db.stem
            workdir.mkdir()
            daemons[fixture] = stack.enter_context(
                running_daemon(workdir, config=daemon_config(db), wait_path="/readyz")
            )
        targets = [d.url.removeprefix("http://") for d in daemons.values()]
        config = prometheus_config(targets, [PYNENC_RULES], job=PYNENC_JOB)
        prometheus = stack.enter_context(running_prometheus(binary, tmp, config))
        wait_for_series(prometheus, f'count(up{{job="{PYNENC_JOB}"}} == 1) == 3')
        # Two scrapes of the seeded counters before the live finishes: their rates and quantiles are finite.
        wait_for_series(
            prometheus, "count(count by (instance) (count_over_time(pynenc_runs_finished_total[1m]) >= 2)) == 3"
        )
        for fixture in PYNENC_FIXTURES:
            prefix = PYNENC_FIXTURES[fixture][1]
            outcomes = {"seed_tasks.add": "success", "seed_tasks.divide": "failed"}
            finish_invocations(tmp / Path(fixture).name, prefix, outcomes, time.time() - 3)
        wait_for_series(
            prometheus,
            'count(sum by (instance) (increase(pynenc_invocations_finished_total{status="failed"}[1m])) > 0) == 3',
        )
        wait_for_series(
            prometheus,
            "count(histogram_quantile(0.95, sum by (instance, le)"
            " (rate(pynenc_invocation_run_duration_seconds_bucket[1m]))) >= 0) == 3",
        )
        yield PynencStack(prometheus, daemons)


# The seeknal fixture's writer zone: its naive last_run values are local times there.
SEEKNAL_TZ = ZoneInfo("Europe/Berlin")
# The live runs' nodes and outcomes: broken_report keeps failing, so SeeknalRunFailed fires.
SEEKNAL_LIVE = {"source.orders": "success", "transform.daily_orders": "success", "transform.broken_report": "failed"}


def redate_seeknal(db: Path, delta: timedelta) -> None:
    """Move every time of the fixture by ``delta``: the naive local ``last_run`` values in the writer's zone, the UTC
    ``CURRENT_TIMESTAMP`` columns as UTC.  Run ids are left as they are (the daemon orders runs by last_run)."""

    def local(text: str | None) -> str | None:
        if not text:
            return text
        moved = datetime.fromisoformat(text).replace(tzinfo=SEEKNAL_TZ).astimezone(UTC) + delta
        return moved.astimezone(SEEKNAL_TZ).replace(tzinfo=None).isoformat()

    def utc(text: str | None) -> str | None:
        return text and (datetime.fromisoformat(text) + delta).strftime("%Y-%m-%d %H:%M:%S")

    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.create_function("local_moved", 1, local)
        conn.create_function("utc_moved", 1, utc)
        for table in ("run_state", "node_state"):
            conn.execute(
                f"UPDATE {table} SET last_run = local_moved(last_run), created_at = utc_moved(created_at),"
                " updated_at = utc_moved(updated_at)"
            )
        conn.execute("UPDATE backend_locks SET locked_at = utc_moved(locked_at)")
        conn.commit()


def store_seeknal_run(writer: SeeknalWriter, run_id: str, finished: datetime, outcomes: dict[str, str]) -> None:
    """A finished run as seeknal 2.13.0's DatabaseStateBackend.set_run_state stores it (the simulator's writer: the
    run upsert, the run's node rows deleted, one set_node_state per node); last_run in the writer's naive local
    time, stamped after the node ran."""
    last_run = local_time(finished, SEEKNAL_TZ)
    nodes = {
        # seeknal stores no metadata for a success (None when empty), the error for a failure.
        node: NodeState(
            f"h{number}",
            last_run,
            status,
            20 + 30 * number,
            0 if status == "failed" else 4,
            metadata={"error": f"Execution failed for {node}"} if status == "failed" else {},
        )
        for number, (node, status) in enumerate(outcomes.items())
    }
    config = {"full": False, "nodes": None, "types": None}
    writer.set_run_state(RunState(run_id, last_run, config, nodes, seeknal_version="2.13.0"))


@dataclass
class SeeknalStack:
    prometheus: Process
    daemon: Process
    # When the fixture's expected JSON was computed, moved to the stack's start.
    start: datetime

    @property
    def instance(self) -> str:
        return self.daemon.url.removeprefix("http://")

    @property
    def daemons(self) -> dict[str, Process]:
        """By fixture name, like the other stacks."""
        return {SEEKNAL_FIXTURE: self.daemon}


@pytest.fixture(scope="session")
def seeknal_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeeknalStack]:
    """A real daemon over a copy of the seeknal fixture re-dated so that the stack starts at its computed_at_utc,
    one Prometheus evaluating prometheus/seeknal.rules.yml.

    Once Prometheus has seen the seeded counters twice, a writer stores a new run every second (orders and
    daily_orders succeed, broken_report fails) until the session ends, so that the rates and the duration
    quantiles are finite whenever a test queries them.  The fixture's crashed node stays running (stuck)."""
    binary = require_tool("prometheus")
    tmp = tmp_path_factory.mktemp("seeknal-stack")
    db = tmp / Path(SEEKNAL_FIXTURE).name
    shutil.copyfile(FIXTURES / SEEKNAL_FIXTURE, db)
    start = datetime.now(UTC)
    redate_seeknal(db, start - datetime.fromisoformat(pynenc_expected(SEEKNAL_FIXTURE)["computed_at_utc"]))
    stop = threading.Event()

    seeknal = SeeknalWriter(db)

    def write_runs() -> None:
        number = 0
        while not stop.wait(1.0):
            number += 1
            finished = datetime.now(UTC)
            run_id = finished.astimezone(SEEKNAL_TZ).strftime("%Y%m%d_%H%M%S") + f"_live{number}"
            store_seeknal_run(seeknal, run_id, finished, SEEKNAL_LIVE)

    writer = threading.Thread(target=write_runs, name="seeknal-writer", daemon=True)
    with contextlib.ExitStack() as stack:
        stack.callback(seeknal.close)  # last: after the writer thread has stopped
        workdir = tmp / "daemon"
        workdir.mkdir()
        config = daemon_config(db, writer_timezone="Europe/Berlin")
        daemon = stack.enter_context(running_daemon(workdir, config=config, wait_path="/readyz"))
        prom_config = prometheus_config([daemon.url.removeprefix("http://")], [SEEKNAL_RULES], job=SEEKNAL_JOB)
        prometheus = stack.enter_context(running_prometheus(binary, tmp, prom_config))
        wait_for_series(prometheus, f'count(up{{job="{SEEKNAL_JOB}"}} == 1) == 1')
        # Two scrapes of the seeded counters before the live runs: their first increases are counted.
        wait_for_series(prometheus, "count(count_over_time(seeknal_node_executions_total[1m]) >= 2) > 0")
        writer.start()
        stack.callback(writer.join)
        stack.callback(stop.set)
        wait_for_series(prometheus, 'sum(increase(seeknal_node_executions_total{status="failed"}[1m])) > 0')
        wait_for_series(
            prometheus,
            "count(histogram_quantile(0.95, sum by (node, le) (rate(seeknal_node_duration_seconds_bucket[1m]))) >= 0)"
            " == 3",
        )
        # The rules are evaluated on their own schedule: wait until they have seen the live failures too.
        wait_for_series(prometheus, 'count(ALERTS{alertname="SeeknalRunFailed"}) > 0')
        yield SeeknalStack(prometheus, daemon, start)


# ---- Marianne ----------------------------------------------------------------------------------------------------

MARIANNE_RULES = REPO / "prometheus" / "marianne.rules.yml"
# The Marianne stack's scrape job: no Marianne rule depends on it.
MARIANNE_JOB = "marianne-state-exporter"


@dataclass
class MarianneStack:
    prometheus: Process
    # One daemon per Marianne file: "workspace" (.marianne-state.db) and "registry" (daemon-state.db).
    daemons: dict[str, Process]
    # The workspace's zombie-run now records this pid: a child of the test that exited (dead on this host).
    zombie_pid: int

    def instance(self, target: str) -> str:
        return self.daemons[target].url.removeprefix("http://")


@pytest.fixture(scope="session")
def marianne_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MarianneStack]:
    """Real daemons over copies of the two Marianne fixtures, one Prometheus evaluating prometheus/marianne.rules.yml.

    The workspace daemon runs with metrics.marianne.same_host_pid_check: zombie-run's pid (dead on the writer's
    host, meaningless here) is replaced by the pid of a child that exited, so the zombie rule fires on a pid this
    host knows dead.  The registry daemon leaves the check off: its running job is stuck by staleness only.  Once
    Prometheus has seen the workspace counters, a job ends the way Marianne saves it (one sheet completed, one
    failed after a retry), so that rates, ratios and quantiles have finite values."""
    binary = require_tool("prometheus")
    tmp = tmp_path_factory.mktemp("marianne-stack")
    zombie = marianne_writes.dead_pid()
    files = {"workspace": MARIANNE_WORKSPACE, "registry": MARIANNE_REGISTRY}
    with contextlib.ExitStack() as stack:
        daemons = {}
        for target, fixture in files.items():
            db = tmp / Path(fixture).name
            shutil.copyfile(FIXTURES / fixture, db)
            workdir = tmp / target
            workdir.mkdir()
            metrics = ""
            if target == "workspace":
                with contextlib.closing(sqlite3.connect(db)) as conn:
                    conn.execute("UPDATE jobs SET pid = ? WHERE id = 'zombie-run'", (zombie,))
                    conn.commit()
                metrics = "  marianne:\n    same_host_pid_check: true"
            daemons[target] = stack.enter_context(
                running_daemon(workdir, config=daemon_config(db, metrics=metrics), wait_path="/readyz")
            )
        targets = [d.url.removeprefix("http://") for d in daemons.values()]
        config = prometheus_config(targets, [MARIANNE_RULES], job=MARIANNE_JOB)
        prometheus = stack.enter_context(running_prometheus(binary, tmp, config))
        wait_for_series(prometheus, f'count(up{{job="{MARIANNE_JOB}"}} == 1) == 2')
        # Two scrapes of every workspace counter and histogram before the live job ends.
        wait_for_series(prometheus, "count_over_time(marianne_job_retries_total[1m]) >= 2")
        workspace = tmp / Path(MARIANNE_WORKSPACE).name
        now = datetime.now(UTC)
        sheets = [
            marianne_writes.Sheet(1, "completed", 1, 42.0),
            marianne_writes.Sheet(2, "failed", 2, 7.5, "rate_limit", "error"),
        ]
        marianne_writes.record_executions(workspace, "live-run", sheets, now)
        marianne_writes.save_job(
            workspace, "live-run", "failed", sheets, created=now - timedelta(minutes=2), updated=now, completed=now
        )
        wait_for_series(
            prometheus, 'increase(marianne_execution_attempts_total{outcome="failed_then_retried"}[1m]) > 0'
        )
        wait_for_series(
            prometheus, "histogram_quantile(0.95, sum by (le) (rate(marianne_job_duration_seconds_bucket[1h]))) >= 0"
        )
        yield MarianneStack(prometheus, daemons, zombie)
