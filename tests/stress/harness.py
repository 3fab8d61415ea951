"""The data-safety stress harness, shared by tests/stress/test_data_safety.py and benchmarks/bench_safety.py.

One :func:`run_stress` call:

1. seeds a DB with the real schema of the layout (0.4.35 or 0.6), in the requested journal mode, with
   thousands of workflows, runs, steps and spans from 60 days ago (the cleanup job's first prey);
2. starts application writers (tests/stress/writers.py), each its own OS process;
3. starts the real daemon (``python -m exporter run``) with every component on: refresh every second,
   counts and aggregates every 1-2 s, span export to a real OTLP/gRPC receiver, the cleanup job
   deleting the writers' rows a few seconds after they are written (``delete_runs``), the stale-task
   job, stuck alerts to a real webhook receiver;
4. polls ``/metrics`` and ``/readyz`` from several threads, checking every scrape (see :class:`ScrapeChecker`);
5. SIGKILLs the daemon a few times and starts it again;
6. after the writers ended and the daemon stopped: ``PRAGMA integrity_check`` from a fresh connection.

:meth:`StressReport.problems` lists every violation (empty: the run was safe); :meth:`StressReport.inactive`
lists the components that did nothing (the run would prove nothing).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from processes import Process, free_port, http_get, start, wait_until_up
from stress.writers import PIPELINE_NAMES, PIPELINES, STEP_NAMES, WORKFLOW_STATUSES, Tally
from support import parse_exposition
from traces.flujo_db import create as create_schema
from traces.receiver import Receiver

WRITERS_SCRIPT = Path(__file__).resolve().parent / "writers.py"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
SPAN_STATUSES = ("running", "completed", "failed")  # step statuses are completed/failed too
SEED_AGE = timedelta(days=60)
# Log words that only a read or write of a damaged file produces.
CORRUPTION_WORDS = ("malformed", "corrupt", "not a database", "disk image")


@dataclass(frozen=True)
class StressSettings:
    layout: str  # "0.4.35" or "0.6"
    pattern: str  # "per_write" (flujo 0.4.35) or "pooled" (flujo 0.6.x)
    journal_mode: str  # "wal" or "delete"
    seconds: float = 20.0  # how long the writers write
    writers: int = 2  # writer processes
    seed_runs: int = 3000  # old runs seeded before the start (cleanup deletes them)
    kills: int = 2  # SIGKILLs of the daemon while the writers write
    metrics_pollers: int = 2
    readyz_pollers: int = 3
    pace: float = 0.002  # mean pause between a run's steps in the writers, seconds
    restart_every: float = 2.0  # pooled writers close and reopen their pool this often (app restarts)
    cleanup_after_s: float = 6.0  # cleanup's days_old, in seconds: the writers' rows qualify this soon
    seed: int = 9

    @property
    def name(self) -> str:
        return f"{self.pattern}-{self.layout}-{self.journal_mode}"


@dataclass
class SeedTally:
    workflows: int = 0
    runs: int = 0
    steps: int = 0
    spans: int = 0
    statuses: Counter[str] = field(default_factory=Counter)  # of the seeded workflows, and of their runs


@dataclass
class Bounds:
    """The most rows any table can ever have held: seeded + everything the writers wrote."""

    workflows: int
    runs: int
    steps: int
    spans: int
    workflow_statuses: Counter[str]  # rows that ever had this status (the stale job may fail any task)
    runs_statuses: Counter[str]


@dataclass
class ScrapeChecker:
    """Checks every /metrics scrape: nothing read from a torn page, no corrupt read.

    Online (each scrape): no ``query_errors_total{reason="corrupt"}``, ``bad_values_total`` stays 0 (the
    writers write only valid values), counters never decrease within one daemon process, every value
    finite and >= 0, label values only from the writers' vocabularies (a torn page shows up as a
    status or pipeline nobody wrote), timestamps within the test's time span.  The row-count gauges are
    compared with :class:`Bounds` at the end (the writers' totals are known only then): the largest
    value seen is kept.
    """

    started: float
    violations: list[str] = field(default_factory=list)
    scrapes: int = 0
    failed_scrapes: int = 0
    max_corrupt: float = 0.0
    max_seen: Counter[str] = field(default_factory=Counter)
    max_by_status: Counter[tuple[str, str]] = field(default_factory=Counter)  # (metric, status) -> largest
    cleanup_deleted: float = 0.0  # summed over daemon processes (each restarts from 0)
    stale_failed: float = 0.0
    webhook_deliveries: float = 0.0
    spans_exported: float = 0.0
    _keys: set[str] = field(default_factory=set)
    _previous: dict[int, Samples] = field(default_factory=dict)  # daemon pid -> last scrape
    _last: dict[int, Samples] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def violation(self, text: str, key: str | None = None) -> None:
        """Record ``text`` once per ``key`` (default: the text itself), at most 200 in all."""
        key = key or text
        if len(self.violations) < 200 and key not in self._keys:
            self._keys.add(key)
            self.violations.append(text)

    def check(self, pid: int, text: str) -> None:
        try:
            samples = parse_exposition(text)
        except ValueError as exc:
            with self._lock:
                self.violation(f"unparseable exposition: {exc}")
            return
        with self._lock:
            self.scrapes += 1
            self._check(pid, samples)
            self._previous[pid] = samples
            self._last[pid] = samples

    def _check(self, pid: int, samples: Samples) -> None:
        previous = self._previous.get(pid, {})
        now = time.time()
        sums: dict[str, float] = {}
        for (name, labels), value in samples.items():
            series = f"{name}{dict(labels)}"
            tag = f"{series}={value}"
            if name == "state_exporter_query_errors_total" and ("reason", "corrupt") in labels:
                self.max_corrupt = max(self.max_corrupt, value)
                if value:
                    self.violation(f"corrupt read reported: {tag}", f"corrupt {pid}")
            if name == "state_exporter_bad_values_total" and value:
                self.violation(f"bad value read (the writers write none): {tag}", f"bad {pid} {series}")
            if not name.startswith("flujo_") or name.startswith("state_exporter_"):
                continue
            if not math.isfinite(value) or value < 0:
                self.violation(f"impossible value: {tag}", f"impossible value {series}")
            if name.endswith(("_total", "_count", "_bucket")) and value < previous.get((name, labels), 0.0):
                self.violation(f"counter decreased from {previous[(name, labels)]}: {tag}", f"decrease {pid} {series}")
            label = dict(labels)
            if value and label.get("pipeline", PIPELINE_NAMES[0]) not in PIPELINE_NAMES:
                self.violation(f"pipeline nobody wrote: {tag}", f"pipeline nobody wrote {series}")
            if value and label.get("step", STEP_NAMES[0]) not in STEP_NAMES:
                self.violation(f"step nobody wrote: {tag}", f"step nobody wrote {series}")
            if value and label.get("status", "running") not in (*WORKFLOW_STATUSES, *SPAN_STATUSES):
                self.violation(f"status nobody wrote: {tag}", f"status nobody wrote {series}")
            if name.endswith("_timestamp_seconds") and not (
                self.started - SEED_AGE.total_seconds() - 86400 <= value <= now + 300
            ):
                self.violation(
                    f"timestamp outside the test's time span: {tag}", f"timestamp outside the test's time span {series}"
                )
            if name in ("flujo_workflows", "flujo_background_tasks", "flujo_runs"):
                sums[name] = sums.get(name, 0.0) + value
                key = (name, label.get("status", ""))
                self.max_by_status[key] = max(self.max_by_status[key], int(value))
            elif name in ("flujo_spans_stored", "flujo_workflows_created_last_24h"):
                sums[name] = value
            elif name in ("flujo_runs_finished_total", "flujo_steps_finished_total"):
                sums[name] = sums.get(name, 0.0) + value
        for name, total in sums.items():
            self.max_seen[name] = max(self.max_seen[name], int(total))

    def record_failure(self) -> None:
        with self._lock:
            self.failed_scrapes += 1

    def finish(self) -> None:
        """Sum the activity counters over every daemon process (each started again from 0)."""
        with self._lock:
            for samples in self._last.values():
                for (name, labels), value in samples.items():
                    if name == "state_exporter_cleanup_deleted_rows_total":
                        self.cleanup_deleted += value
                    elif name == "state_exporter_stale_tasks_failed_total":
                        self.stale_failed += value
                    elif name == "state_exporter_alert_deliveries_total" and ("outcome", "success") in labels:
                        self.webhook_deliveries += value
                    elif name == "state_exporter_spans_exported_total":
                        self.spans_exported += value

    def bound_violations(self, bounds: Bounds) -> list[str]:
        limits = {
            "flujo_workflows": bounds.workflows,
            "flujo_background_tasks": bounds.workflows,
            "flujo_workflows_created_last_24h": bounds.workflows,
            "flujo_runs": bounds.runs,
            "flujo_runs_finished_total": bounds.runs,
            "flujo_steps_finished_total": bounds.steps,
            "flujo_spans_stored": bounds.spans,
        }
        found = [
            f"{name} reached {self.max_seen[name]}, more than the {limit} rows ever written"
            for name, limit in limits.items()
            if self.max_seen[name] > limit
        ]
        for (name, status), value in self.max_by_status.items():
            statuses = bounds.runs_statuses if name == "flujo_runs" else bounds.workflow_statuses
            if value > statuses[status]:
                found.append(
                    f'{name}{{status="{status}"}} reached {value}, more than the {statuses[status]} rows ever so'
                )
        return found


@dataclass
class WebhookReceiver:
    """A real HTTP endpoint taking the stuck-alert webhook's JSON payloads."""

    payloads: list[Any] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def __enter__(self) -> WebhookReceiver:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                owner.payloads.append(json.loads(body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@dataclass
class StressReport:
    settings: StressSettings
    integrity: list[str]
    writer_errors: Counter[str]
    writer_messages: list[str]
    writers_gave_up: int
    tally: Tally
    bounds: Bounds
    checker: ScrapeChecker
    log_lines: list[str]  # daemon log lines mentioning corruption
    unexpected_exits: list[str]
    kills: int
    readyz: Counter[int]
    webhook_payloads: int
    spans_received: int
    seconds: float

    def problems(self) -> list[str]:
        found = []
        if self.integrity != ["ok"]:
            found.append(f"PRAGMA integrity_check: {[line[:300] for line in self.integrity[:3]]}")
        if self.writer_errors["io"]:
            found.append(f"the app saw {self.writer_errors['io']} 'disk I/O error's: {self.writer_messages[:5]}")
        if self.writer_errors["malformed"]:
            found.append(
                f"the app saw {self.writer_errors['malformed']} 'malformed' errors: {self.writer_messages[:5]}"
            )
        if self.checker.max_corrupt:
            found.append(f"the daemon's reads failed {self.checker.max_corrupt:g} times for corruption (one process)")
        if self.log_lines:
            found.append(f"{len(self.log_lines)} daemon log lines about corruption, e.g. {self.log_lines[:3]}")
        found += self.checker.violations[:20]
        found += self.checker.bound_violations(self.bounds)
        found += self.unexpected_exits
        return found

    def inactive(self) -> list[str]:
        """Components that never acted: the run would not have exercised them."""
        checks = {
            "scrapes": self.checker.scrapes >= 5,
            "readyz polls": sum(self.readyz.values()) >= 20,
            "writer runs": self.tally.runs_finished >= 20,
            "cleanup deleted rows": self.checker.cleanup_deleted > 0,
            "spans exported to the OTLP receiver": self.spans_received > 0,
            "stuck-alert webhook payloads": self.webhook_payloads > 0,
            "daemon SIGKILLs": self.kills == self.settings.kills,
        }
        if self.settings.layout == "0.6":
            checks["stale background tasks failed"] = self.checker.stale_failed > 0
        return [name for name, ok in checks.items() if not ok]

    def summary(self) -> str:
        t = self.tally
        lines = [
            f"{self.settings.name}: {self.seconds:.1f}s, {self.settings.writers} writers, {t.writes} writes, "
            f"{t.runs_started} runs ({dict(t.outcomes)}), {t.background_tasks} background tasks, "
            f"{self.settings.seed_runs} seeded",
            f"  integrity_check: {[line[:200] for line in self.integrity[:3]]}",
            f"  app errors: {dict(self.writer_errors)} (gave up {self.writers_gave_up} calls)",
            f"  daemon: corrupt reads {self.checker.max_corrupt:g}, corruption log lines {len(self.log_lines)}, "
            f"kills {self.kills}, unexpected exits {len(self.unexpected_exits)}",
            f"  scrapes {self.checker.scrapes} (failed {self.checker.failed_scrapes}), readyz {dict(self.readyz)}, "
            f"violations {len(self.checker.violations)}",
            f"  max seen {dict(self.checker.max_seen)} vs bounds {self.bounds}",
            f"  cleanup deleted {self.checker.cleanup_deleted:g} rows, "
            f"stale tasks failed {self.checker.stale_failed:g}, webhook payloads {self.webhook_payloads}, "
            f"spans received {self.spans_received}",
        ]
        for message in self.writer_messages[:5]:
            lines.append(f"  app error: {message}")
        for line in self.log_lines[:5]:
            lines.append(f"  daemon log: {line[:300]}")
        for violation in self.checker.violations[:5]:
            lines.append(f"  violation: {violation[:300]}")
        return "\n".join(lines)


# --- seeding ------------------------------------------------------------------------------------------


def seed_db(db: Path, settings: StressSettings) -> SeedTally:
    """The real schema, ``settings.journal_mode``, and ``seed_runs`` finished runs from 60 days ago."""
    conn = create_schema(db, settings.layout)  # WAL, like flujo's _init_db
    conn.execute(f"PRAGMA journal_mode = {settings.journal_mode}")
    rng = random.Random(settings.seed)
    base = time.time() - SEED_AGE.total_seconds()
    rows: dict[str, list[tuple[Any, ...]]] = {"workflow_state": [], "runs": [], "steps": [], "spans": []}
    statuses: Counter[str] = Counter()
    for i in range(settings.seed_runs):
        name, version, steps = rng.choice(PIPELINES)
        status = "failed" if rng.random() < 0.2 else "completed"
        start = base + i * 0.5
        run_id = f"run_{uuid.UUID(int=rng.getrandbits(128)).hex}"
        _seed_run(rows, settings.layout, run_id, name, version, steps, status, start)
        statuses[status] += 1
    conn.execute("BEGIN")
    for table, values in rows.items():
        if values:
            conn.executemany(f"INSERT INTO {table} VALUES ({', '.join('?' * len(values[0]))})", values)
    conn.execute("COMMIT")
    conn.close()
    return SeedTally(len(rows["workflow_state"]), len(rows["runs"]), len(rows["steps"]), len(rows["spans"]), statuses)


def _iso(epoch: float, layout: str) -> str:
    instant = datetime.fromtimestamp(epoch, UTC)
    return instant.isoformat() if layout == "0.6" else instant.replace(tzinfo=None).isoformat()


def _seed_run(
    rows: dict[str, list[tuple[Any, ...]]],
    layout: str,
    run_id: str,
    name: str,
    version: str,
    steps: tuple[str, ...],
    status: str,
    start: float,
) -> None:
    end = start + 3.0
    context = json.dumps({"run_id": run_id, "initial_prompt": f"{name} job", "padding": "x" * 400})
    ws = [run_id, name, name, version, len(steps), context, "null", "[]", status, _iso(end, layout)]
    ws += [_iso(end, layout), len(steps), "step failed" if status == "failed" else None, None, 7.62939453125e-05]
    if layout == "0.6":
        ws += [None, 0, None, None, None]
        created, updated = _iso(start, layout), _iso(end, layout)
        run = [run_id, f"{name}@{version}", name, version, status, created, updated, 3000, None, len(steps), None]
        rows["runs"].append((*run, updated, 0.01, None))
    else:
        rows["runs"].append((run_id, name, version, status, _iso(start, layout), _iso(end, layout), 0.01, "{}"))
    rows["workflow_state"].append(tuple(ws))
    root = str(uuid.uuid4())
    spans: list[tuple[Any, ...]] = [(root, run_id, None, "pipeline_root", start, None, "running", "{}")]
    for index, step in enumerate(steps):
        ok = status == "completed" or index < len(steps) - 1
        step_status = "completed" if ok else "failed"
        at = start + index + 1
        if layout == "0.6":
            rows["steps"].append((None, run_id, step, index, step_status, "{}", None, 0.0, 0, 900, _iso(at, layout)))
        else:
            stamp = _iso(at, layout)
            step_row = [f"{run_id}:{index}", run_id, step, index, step_status, stamp, stamp, 900, 0.0, 0, "null"]
            rows["steps"].append((*step_row, "{}", None))
        spans.append((str(uuid.uuid4()), run_id, root, step, at - 1, at, step_status, "{}"))
    created = datetime.fromtimestamp(end, UTC).strftime("%Y-%m-%d %H:%M:%S")
    if layout == "0.6":
        rows["spans"] += [(None, s[1], s[0], *s[2:], created) for s in spans]
    else:
        rows["spans"] += [(*s, created) for s in spans]


# --- the daemon ---------------------------------------------------------------------------------------


def daemon_config(db: Path, tmp: Path, settings: StressSettings, otlp: str, webhook: str) -> str:
    days_old = settings.cleanup_after_s / 86400
    return f"""
db:
  path: {json.dumps(str(db))}
  writer_timezone: UTC
  busy_timeout: 1s
metrics:
  refresh_interval: 1s
  counts_interval: 1s
  aggregate_interval: 2s
  stuck:
    running_after: 2s
logging:
  level: info
traces:
  enabled: true
  protocol: grpc
  endpoint: {otlp}
  state_file: {json.dumps(str(tmp / "traces-state.sqlite"))}
  start_at: end
  poll_interval: 1s
  settle_period: 1s
  grace_period: 1h
jobs:
  write_busy_timeout: 1s
  cleanup:
    enabled: true
    interval: 2s
    jitter: 0s
    days_old: {days_old!r}
    delete_runs: true
    batch_size: 500
  stale_background_tasks:
    enabled: true
    interval: 2s
    jitter: 0s
    stale_hours: {settings.cleanup_after_s / 2 / 3600!r}
  stuck_alerts:
    enabled: true
    interval: 1s
    jitter: 0s
    resend_interval: 3s
    attempts: 1
    webhook:
      url: {webhook}
      timeout: 2s
"""


class DaemonKeeper:
    """The daemon process of the run: started, SIGKILLed and started again, stopped; all its logs kept."""

    def __init__(self, tmp: Path, config: Path) -> None:
        self.tmp = tmp
        self.config = config
        self.logs: list[Path] = []
        self.unexpected_exits: list[str] = []
        self.current: Process | None = None
        self.kills = 0

    def start(self) -> Process:
        port = free_port()
        argv = [sys.executable, "-m", "exporter", "run", "--listen", f"127.0.0.1:{port}", "--config", str(self.config)]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("STATE_EXPORTER_", "OTEL_"))}
        env["STATE_DIRECTORY"] = str(self.tmp / "state")
        log = self.tmp / f"daemon-{len(self.logs)}.log"
        self.logs.append(log)
        process = start(argv, log, f"http://127.0.0.1:{port}", env=env)
        wait_until_up(process, "/healthz")
        self.current = process
        return process

    def kill(self) -> None:
        process = self.current
        assert process is not None
        self._check_alive(process)
        os.kill(process.pid, signal.SIGKILL)
        process.proc.wait(10)
        self.kills += 1
        self.start()

    def stop(self) -> None:
        if self.current is not None:
            self._check_alive(self.current)
            self.current.stop(grace=8.0)

    def _check_alive(self, process: Process) -> None:
        code = process.proc.poll()
        if code is not None:
            self.unexpected_exits.append(f"the daemon exited by itself with {code}: {process.output()[-1500:]}")

    def corruption_lines(self) -> list[str]:
        """Log lines about a damaged file (the paths are left out: a test's name may contain the words)."""
        return [
            line
            for log in self.logs
            if log.exists()
            for line in log.read_text(errors="replace").splitlines()
            if any(word in line.replace(str(self.tmp), "<tmp>").lower() for word in CORRUPTION_WORDS)
        ]


class Pollers:
    """Threads scraping ``/metrics`` (checked) and hammering ``/readyz`` of whatever daemon runs now."""

    def __init__(self, keeper: DaemonKeeper, checker: ScrapeChecker, settings: StressSettings) -> None:
        self.keeper = keeper
        self.checker = checker
        self.readyz: Counter[int] = Counter()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._metrics, daemon=True) for _ in range(settings.metrics_pollers)]
        self._threads += [threading.Thread(target=self._readyz, daemon=True) for _ in range(settings.readyz_pollers)]

    def __enter__(self) -> Pollers:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)

    def _metrics(self) -> None:
        while not self._stop.wait(0.2):
            process = self.keeper.current
            if process is None:
                continue
            try:
                status, body = http_get(process.url + "/metrics", timeout=5.0)
            except OSError:
                self.checker.record_failure()  # the daemon is being killed or restarted
                continue
            if status == 200:
                self.checker.check(process.pid, body)
            else:
                self.checker.record_failure()

    def _readyz(self) -> None:
        while not self._stop.wait(0.01):
            process = self.keeper.current
            if process is None:
                continue
            try:
                status, _ = http_get(process.url + "/readyz", timeout=5.0)
            except OSError:
                status = 0
            with self._lock:
                self.readyz[status] += 1


def integrity_check(db: Path) -> list[str]:
    """``PRAGMA integrity_check`` from a fresh connection, once every process is gone."""
    conn = sqlite3.connect(db)
    try:
        return [str(row[0]) for row in conn.execute("PRAGMA integrity_check(100)")]
    except sqlite3.DatabaseError as exc:
        return [f"integrity_check failed: {exc}"]
    finally:
        conn.close()


@contextlib.contextmanager
def writers(db: Path, tmp: Path, settings: StressSettings) -> Iterator[list[tuple[subprocess.Popen[bytes], Path]]]:
    started: list[tuple[subprocess.Popen[bytes], Path]] = []
    with contextlib.ExitStack() as logs:
        try:
            for i in range(settings.writers):
                out = tmp / f"writer-{i}.json"
                argv = [sys.executable, str(WRITERS_SCRIPT), "--db", str(db), "--pattern", settings.pattern]
                argv += ["--layout", settings.layout, "--seconds", str(settings.seconds)]
                argv += ["--seed", str(settings.seed + i), "--pace", str(settings.pace)]
                argv += ["--restart-every", str(settings.restart_every), "--out", str(out)]
                log = logs.enter_context((tmp / f"writer-{i}.log").open("wb"))
                started.append((subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT), out))
            yield started
        finally:
            for proc, _ in started:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()


def collect_tallies(started: list[tuple[subprocess.Popen[bytes], Path]], timeout: float) -> Tally:
    total = Tally()
    for proc, out in started:
        code = proc.wait(timeout)
        if code != 0 or not out.exists():
            log = out.with_suffix(".log")
            raise RuntimeError(f"writer exited with {code}:\n{log.read_text(errors='replace')[-3000:]}")
        total.add(Tally.from_json(json.loads(out.read_text())))
    return total


def run_stress(tmp: Path, settings: StressSettings) -> StressReport:
    began = time.monotonic()
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "state").mkdir(exist_ok=True)
    db = tmp / "flujo_ops.db"
    seeded = seed_db(db, settings)
    checker = ScrapeChecker(started=time.time())
    with Receiver(record_details=False) as receiver, WebhookReceiver() as hook:
        config = tmp / "daemon.yaml"
        config.write_text(daemon_config(db, tmp, settings, receiver.grpc_endpoint, hook.url))
        keeper = DaemonKeeper(tmp, config)
        keeper.start()
        try:
            with Pollers(keeper, checker, settings) as pollers, writers(db, tmp, settings) as started:
                for _ in range(settings.kills):
                    time.sleep(settings.seconds / (settings.kills + 1))
                    keeper.kill()
                tally = collect_tallies(started, timeout=settings.seconds + 120)
                time.sleep(2.5)  # let the daemon refresh, export and clean once more after the last write
        finally:
            keeper.stop()
        checker.finish()
        spans_received = receiver.received()
    bounds = Bounds(
        seeded.workflows + tally.workflow_rows,
        seeded.runs + tally.runs_rows,
        seeded.steps + tally.steps_rows,
        seeded.spans + tally.spans_rows,
        seeded.statuses + tally.workflow_statuses + Counter(failed=tally.background_tasks),
        seeded.statuses + tally.runs_statuses,
    )
    return StressReport(
        settings=settings,
        integrity=integrity_check(db),
        writer_errors=tally.errors,
        writer_messages=tally.messages,
        writers_gave_up=tally.gave_up,
        tally=tally,
        bounds=bounds,
        checker=checker,
        log_lines=keeper.corruption_lines(),
        unexpected_exits=keeper.unexpected_exits,
        kills=keeper.kills,
        readyz=pollers.readyz,
        webhook_payloads=len(hook.payloads),
        spans_received=spans_received,
        seconds=time.monotonic() - began,
    )
