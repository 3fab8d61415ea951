"""Our /metrics daemon vs flujo 0.4.35's built-in PrometheusCollector, side by side on the same DBs.

    .venv/bin/python benchmarks/bench_metrics.py [--sizes 100000,1000000] [--requests 200] [--diagnose]

A benchmark, not a test: it prints numbers and ratios and never asserts timings (the CI machine is
shared and noisy; compare the two columns of one run, not numbers across runs).

For each size N it uses a Flujo-0.4.35-layout DB of N runs with flujo's own indexes only
(``gen_flujo_db.py``, cached in ``benchmarks/.data/``) and measures, in this order:

1. OUR daemon (``python -m exporter run``, ``metrics.refresh_interval`` 15 s by default) on the DB:
   time until ``/readyz`` is 200 and until the first full refresh is done
   (``state_exporter_collector_success{collector="aggregates"} == 1``); ``/metrics`` latency over R
   sequential requests on one keep-alive connection, with Prometheus' Accept and gzip headers (and
   again without gzip); ``state_exporter_collector_duration_seconds`` per collector over a few
   refresh cycles; VmRSS/VmHWM from ``/proc/<pid>/status`` after all that.
2. OUR Refresher in this process, interleaved round by round with flujo's ``collect()`` (so that
   noise hits both sides alike): the first refresh (watermark seed + aggregates), steady-state
   ``refresh()`` (snapshot + watermarks phases; aggregates not due) and aggregate passes
   (``refresh(force_all=True)``; the daemon runs one every ``metrics.aggregate_interval``,
   default 5 min).
3. flujo: ``flujo_probe.py`` in ``benchmarks/.venv-flujo`` (created here when missing:
   ``python3 -m venv`` + ``pip install "flujo[sql,prometheus]==0.4.35"``; the ``[sql]`` extra is needed
   or ``import flujo`` fails) on its OWN copy of the DB, because flujo's SQLiteBackend migrates the
   file on first use: ``collect()`` times, then ``/metrics`` latency of flujo's own server
   (``start_prometheus_server``; it answers HTTP/1.0 and closes the connection, so each of its
   requests includes a localhost TCP connect) and the probe's RSS.

Goals (from the issue): served scrape <= 5 ms median at 1M runs; refresh (fast phases) <= 0.25x
flujo's collector time on the same DB; RSS <= 80 MB.  Results also go to
``benchmarks/.data/results-metrics.json``.  ``--diagnose`` adds per-query timings and query plans of
the reader's queries (exporter/reader/workflows.py, runs.py, spans.py).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import http.client
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the exporter package
sys.path.insert(0, str(Path(__file__).resolve().parent))  # gen_flujo_db, _common
import gen_flujo_db
from _common import BENCH_DIR, DATA_DIR, ROOT, median, mib, ms, percentile, ratio

FLUJO_VENV = BENCH_DIR / ".venv-flujo"
FLUJO_REQUIREMENT = "flujo[sql,prometheus]==0.4.35"
PROBE = BENCH_DIR / "flujo_probe.py"
RESULTS = DATA_DIR / "results-metrics.json"
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,"
    "text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)
SCRAPE_GOAL_S = 0.005
REFRESH_RATIO_GOAL = 0.25
RSS_GOAL_BYTES = 80 * 10**6
ONE_MILLION = 1_000_000


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# --- HTTP -----------------------------------------------------------------------------------------------


class Scraper:
    """Sequential GETs on one keep-alive connection (reopened only when the server closes it)."""

    def __init__(self, port: int, *, compressed: bool = True, timeout: float = 120.0) -> None:
        self.port = port
        self.timeout = timeout
        self.headers = {"Accept": PROMETHEUS_ACCEPT, "User-Agent": "bench-metrics"}
        if compressed:
            self.headers["Accept-Encoding"] = "gzip"
        self._conn: http.client.HTTPConnection | None = None
        self.reconnects = 0

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
        if self._conn is None:
            self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            self.reconnects += 1
        try:
            self._conn.request("GET", path, headers=headers if headers is not None else self.headers)
            response = self._conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException):
            self.close()
            raise
        if response.will_close:
            self.close()
        return response.status, body, dict(response.getheaders())

    def timed(self, path: str, count: int, warmup: int = 5) -> tuple[list[float], int]:
        """Latencies (s) of ``count`` requests after ``warmup`` untimed ones; and the last body size."""
        size = 0
        for _ in range(warmup):
            self.get(path)
        latencies = []
        for _ in range(count):
            started = time.perf_counter()
            status, body, _ = self.get(path)
            latencies.append(time.perf_counter() - started)
            if status != 200:
                raise RuntimeError(f"GET {path} -> {status}")
            size = len(body)
        return latencies, size

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def parse_exposition(text: str) -> dict[str, float]:
    """``name{labels}`` -> value for every sample of a text-format exposition."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        with contextlib.suppress(ValueError):
            values[key] = float(value)
    return values


def parse_body(body: bytes, headers: dict[str, str]) -> dict[str, float]:
    if headers.get("Content-Encoding") == "gzip":
        body = gzip.decompress(body)
    return parse_exposition(body.decode())


def scrape_values(port: int) -> dict[str, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("GET", "/metrics")
        return parse_exposition(conn.getresponse().read().decode())
    finally:
        conn.close()


def http_status(port: int, path: str) -> int:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            return response.status
        finally:
            conn.close()
    except OSError:
        return 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def proc_memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of ``pid`` in bytes."""
    found: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(rest.split()[0]) * 1024
    return found


# --- our daemon -----------------------------------------------------------------------------------------


def collector_key(metric: str, collector: str) -> str:
    return f'{metric}{{collector="{collector}"}}'


@dataclass
class DaemonResult:
    port: int = 0
    ready_s: float = math.nan
    first_full_refresh_s: float = math.nan
    aggregates_ok: bool = False
    scrape_gzip_s: list[float] = field(default_factory=list)
    scrape_plain_s: list[float] = field(default_factory=list)
    scrape_fresh_s: list[float] = field(default_factory=list)  # first scrape of each new snapshot
    body_gzip_bytes: int = 0
    body_plain_bytes: int = 0
    reconnects: int = 0
    collector_durations_s: dict[str, list[float]] = field(default_factory=dict)
    memory: dict[str, int] = field(default_factory=dict)
    log_tail: str = ""
    log_problems: list[str] = field(default_factory=list)  # ERROR/WARNING lines of the daemon's log


@contextlib.contextmanager
def running_daemon(db: Path, refresh_interval: float, log_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-metrics-") as tmp:
        config = Path(tmp) / "exporter.yaml"
        config.write_text(f"metrics:\n  refresh_interval: {refresh_interval}s\nlogging:\n  level: info\n")
        command = [
            sys.executable,
            "-m",
            "exporter",
            "run",
            "--db",
            str(db),
            "--timezone",
            "UTC",
            "--listen",
            f"127.0.0.1:{port}",
            "--config",
            str(config),
        ]
        with log_path.open("wb") as log_file:
            proc = subprocess.Popen(command, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT)
            try:
                yield proc, port
            finally:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(timeout=15)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()


def measure_daemon(db: Path, args: argparse.Namespace, log_path: Path) -> DaemonResult:
    result = DaemonResult()
    with running_daemon(db, args.refresh_interval, log_path) as (proc, port):
        result.port = port
        started = time.perf_counter()
        deadline = started + args.ready_timeout
        log(f"our daemon: pid {proc.pid}, port {port}; waiting for /readyz")
        while http_status(port, "/readyz") != 200:
            if proc.poll() is not None:
                raise RuntimeError(f"our daemon exited with {proc.returncode}; see {log_path}")
            if time.perf_counter() > deadline:
                raise RuntimeError(f"our daemon not ready after {args.ready_timeout} s; see {log_path}")
            time.sleep(0.2)
        result.ready_s = time.perf_counter() - started
        success = collector_key("state_exporter_collector_success", "aggregates")
        while True:
            values = scrape_values(port)
            if values.get(success) == 1.0:
                result.aggregates_ok = True
                result.first_full_refresh_s = time.perf_counter() - started
                break
            if time.perf_counter() > deadline:
                log(f"our daemon: aggregates not successful after {args.ready_timeout} s (see {log_path})")
                break
            time.sleep(0.5)
        log(
            f"our daemon: ready after {result.ready_s:.1f} s,"
            f" first full refresh after {result.first_full_refresh_s:.1f} s"
        )

        gzip_client = Scraper(port, compressed=True)
        result.scrape_gzip_s, result.body_gzip_bytes = gzip_client.timed("/metrics", args.requests)
        result.reconnects = gzip_client.reconnects
        gzip_client.close()
        plain_client = Scraper(port, compressed=False)
        result.scrape_plain_s, result.body_plain_bytes = plain_client.timed("/metrics", args.requests)
        plain_client.close()
        log(f"our daemon: {args.requests} scrapes, median {ms(median(result.scrape_gzip_s))}")

        # Collector durations of a few fresh refresh cycles (the seed cycle excluded), and the latency of
        # the first scrape that serves each new snapshot (what Prometheus sees when it scrapes about
        # once per refresh, so that per-snapshot work done lazily at scrape time is not hidden).
        taken_key = "state_exporter_snapshot_timestamp_seconds"
        poller = Scraper(port, compressed=True)
        last_taken = parse_body(*poller.get("/metrics")[1:]).get(taken_key)
        durations: dict[str, list[float]] = {"snapshot": [], "watermarks": [], "aggregates": []}
        cycle_deadline = time.perf_counter() + (args.cycles + 1) * args.refresh_interval * 3 + 60
        log(f"our daemon: waiting for {args.cycles} refresh cycles of {args.refresh_interval:g} s")
        # The first new snapshot was usually refreshed while the scrape burst above ran (GIL contention):
        # its durations are read but dropped.
        while len(durations["snapshot"]) <= args.cycles and time.perf_counter() < cycle_deadline:
            time.sleep(0.25)
            started = time.perf_counter()
            _, body, headers = poller.get("/metrics")
            elapsed = time.perf_counter() - started
            values = parse_body(body, headers)
            taken = values.get(taken_key)
            if taken is not None and taken != last_taken:
                last_taken = taken
                result.scrape_fresh_s.append(elapsed)
                for collector, samples in durations.items():
                    samples.append(
                        values.get(collector_key("state_exporter_collector_duration_seconds", collector), math.nan)
                    )
        poller.close()
        result.collector_durations_s = {name: samples[1:] for name, samples in durations.items()}
        result.memory = proc_memory(proc.pid)
    lines = log_path.read_text(errors="replace").splitlines(keepends=True)
    result.log_problems = [line.rstrip() for line in lines if " ERROR " in line or " WARNING " in line][:10]
    result.log_tail = "".join(lines[-5:])
    return result


# --- flujo probe ----------------------------------------------------------------------------------------


def ensure_flujo_venv() -> Path:
    python = FLUJO_VENV / "bin" / "python"
    check = "import flujo.telemetry.prometheus, importlib.metadata as m; print(m.version('flujo'))"
    if python.exists():
        done = subprocess.run([python, "-c", check], capture_output=True, text=True, check=False)
        if done.returncode == 0 and done.stdout.strip() == "0.4.35":
            return python
    log(f"creating {FLUJO_VENV} with {FLUJO_REQUIREMENT}")
    base = shutil.which("python3") or sys.executable
    subprocess.run([base, "-m", "venv", "--clear", str(FLUJO_VENV)], check=True)
    subprocess.run([python, "-m", "pip", "install", "--quiet", FLUJO_REQUIREMENT], check=True)
    done = subprocess.run([python, "-c", check], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"flujo does not import in {FLUJO_VENV}:\n{done.stderr}")
    return python


class Probe:
    """flujo_probe.py as a child process speaking JSON lines."""

    def __init__(self, python: Path, db: Path, log_path: Path) -> None:
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [python, str(PROBE), "--db", str(db)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            bufsize=1,
        )
        self.hello = self._read()

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"flujo probe exited ({self.proc.poll()}); see {self._log.name}")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"flujo probe: {reply['error']}")
        return reply

    def ask(self, command: str) -> dict[str, Any]:
        stdin: IO[str] | None = self.proc.stdin
        assert stdin is not None
        stdin.write(command + "\n")
        stdin.flush()
        return self._read()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


# --- our Refresher in-process, interleaved with flujo's collect() -----------------------------------------


@dataclass
class SideBySide:
    first_refresh_s: float = math.nan
    first_refresh_phases_s: dict[str, float] = field(default_factory=dict)
    refresh_s: list[float] = field(default_factory=list)
    snapshot_s: list[float] = field(default_factory=list)
    watermarks_s: list[float] = field(default_factory=list)
    aggregates_s: list[float] = field(default_factory=list)
    counts_s: list[float] = field(default_factory=list)
    flujo_first_collect_s: float = math.nan
    flujo_collect_s: list[float] = field(default_factory=list)
    flujo_samples: dict[str, float] = field(default_factory=dict)
    ours_values: dict[str, float] = field(default_factory=dict)


def side_by_side(db: Path, probe: Probe, args: argparse.Namespace) -> tuple[SideBySide, Any]:
    """Interleaved rounds of our refresh and flujo's collect(); also returns our Refresher."""
    from exporter.clock import ManualClock
    from exporter.config import load_config
    from exporter.daemon import make_reader
    from exporter.refresh import AGGREGATES, COUNTS, SNAPSHOT, WATERMARKS, Refresher

    config = load_config(None, env={}, overrides={"db": {"path": str(db), "writer_timezone": "UTC"}})
    clock = ManualClock(datetime.now(UTC))
    refresher = Refresher(make_reader(config), lambda: config.metrics, clock)
    out = SideBySide()

    first = probe.ask("collect 2")  # includes flujo's _init_db on its copy, then one warm call
    out.flujo_first_collect_s = first["first_collect_s"]
    started = time.perf_counter()
    state = refresher.refresh()
    out.first_refresh_s = time.perf_counter() - started
    out.first_refresh_phases_s = {name: health.duration_s for name, health in state.phases.items()}
    if state.problem is not None:
        log(f"our first refresh reported a problem: {state.problem.message}")
    log(
        f"first refresh (seed + aggregates): ours {ms(out.first_refresh_s)};"
        f" flujo first collect {ms(out.flujo_first_collect_s)}"
    )

    interval = config.metrics.refresh_interval.total_seconds()
    for _ in range(args.repeats):
        clock.advance(interval)
        slow_before = [refresher.state.phases[p].last_success for p in (COUNTS, AGGREGATES)]
        started = time.perf_counter()
        state = refresher.refresh()
        elapsed = time.perf_counter() - started
        if [state.phases[p].last_success for p in (COUNTS, AGGREGATES)] != slow_before:
            continue  # a counts or aggregate pass became due: not a steady-state sample
        out.refresh_s.append(elapsed)
        out.snapshot_s.append(state.phases[SNAPSHOT].duration_s)
        out.watermarks_s.append(state.phases[WATERMARKS].duration_s)
        reply = probe.ask(f"collect {args.collect_per_round}")
        out.flujo_collect_s.extend(reply["collect_s"])
        out.flujo_samples = reply["samples"]
    log(f"steady-state refresh: ours {ms(median(out.refresh_s))}; flujo collect {ms(median(out.flujo_collect_s))}")
    for _ in range(args.aggregate_repeats):
        clock.advance(interval)
        state = refresher.refresh(force_all=True)
        out.aggregates_s.append(state.phases[AGGREGATES].duration_s)
        out.counts_s.append(state.phases[COUNTS].duration_s)
        out.flujo_collect_s.extend(probe.ask("collect 1")["collect_s"])
    log(f"aggregates pass: ours {ms(median(out.aggregates_s))}")
    fast, counts = state.fast, state.counts
    if fast is not None and counts is not None:
        out.ours_values = {
            "workflows_total": float(sum(counts.workflows_by_status.values())),
            "created_24h": float(fast.created_24h.top_level),
            "failed_24h": float(counts.failed_24h.top_level),
            "active": float(sum(g.count for g in fast.active.values())),
        }
    if state.aggregates is not None:
        out.ours_values["average_execution_time_ms"] = state.aggregates.average_execution_time_ms
    return out, refresher


# --- diagnosis: per-query timings and plans ---------------------------------------------------------------


@dataclass
class QueryTiming:
    name: str
    tier: str
    median_s: float
    rows: int
    statements: list[str]
    plans: list[list[str]]


def diagnose(db: Path, repeats: int) -> list[QueryTiming]:
    from exporter.engines.flujo import runs as run_queries
    from exporter.engines.flujo import spans as span_queries
    from exporter.engines.flujo import workflows as wf
    from exporter.engines.flujo.groups import value_counts
    from exporter.engines.flujo.tracking import FinishTracker
    from exporter.reader import StateReader

    reader = StateReader(db, naive_timezone=UTC, query_timeout=600)
    now = datetime.now(UTC)
    since = now - timedelta(hours=24)
    with reader.session() as s:
        schema = s.schema
        max_run, max_step = run_queries.max_rowid(s.conn, "runs"), run_queries.max_rowid(s.conn, "steps")
        seeded = FinishTracker(max_pipelines=50, max_steps=100, duration_window=timedelta(hours=24))
        seeded._follow_pending(s.conn, schema, max_run)  # bench-only: the runs the seed leaves pending
        seeded_workflow_rowid = run_queries.max_rowid(s.conn, "workflow_state")

    def count(value: object) -> int:
        if isinstance(value, dict | list | tuple):
            return len(value)
        if hasattr(value, "top_level"):
            return int(value.top_level)
        return 1

    def steady_tracker(conn: Any, schema: Any) -> int:
        # What every steady-state watermarks phase does: re-check the runs not ended (running in runs, or
        # paused in workflow_state), then look past the marks.
        tracker = FinishTracker(max_pipelines=50, max_steps=100, duration_window=timedelta(hours=24))
        tracker._pending = {rowid: replace(entry) for rowid, entry in seeded._pending.items()}  # bench-only
        tracker._run_rowid, tracker._step_rowid, tracker._seeded = max_run, max_step, True
        tracker._workflow_rowid = seeded_workflow_rowid
        tracker.update(conn, schema, now)
        return tracker.pending_runs

    cases: list[tuple[str, str, Callable[[Any], object]]] = [
        ("workflows.status_counts", "fast", lambda c: wf.status_counts(c, schema, [])[0]),
        ("workflows.created_since(24h)", "fast", lambda c: wf.created_since(c, schema, since, now, UTC, [])),
        ("workflows.failed_since(24h)", "fast", lambda c: wf.failed_since(c, schema, since, now, UTC, [])),
        ("workflows.active_workflows", "fast", lambda c: wf.active_workflows(c, schema, UTC, [])),
        ("runs.status_counts", "fast", lambda c: value_counts(c, "runs", "status", [])),
        ("spans.total", "fast", lambda c: span_queries.total(c)),
        ("watermarks steady state (unfinished runs + after marks)", "fast", lambda c: steady_tracker(c, schema)),
        ("workflows.pipeline_status_counts", "aggregate", lambda c: wf.pipeline_status_counts(c, schema, [])),
        ("runs.pipeline_status_counts", "aggregate", lambda c: run_queries.pipeline_status_counts(c, [])),
        ("spans.totals", "aggregate", lambda c: span_queries.totals(c, [])),
        ("workflows.average_execution_time_ms", "aggregate", lambda c: wf.average_execution_time_ms(c, schema)),
    ]
    found: list[QueryTiming] = []
    for name, tier, run in cases:
        times: list[float] = []
        statements: list[str] = []
        rows = 0
        for attempt in range(repeats + 1):
            with reader.session() as s:
                seen: list[str] = []
                s.conn.set_trace_callback(seen.append)
                started = time.perf_counter()
                value = run(s.conn)
                elapsed = time.perf_counter() - started
                s.conn.set_trace_callback(None)
                if attempt:  # the first call warms the page cache
                    times.append(elapsed)
                statements = [q for q in seen if q.lstrip().upper().startswith("SELECT")]
                rows = count(value)
        plans: list[list[str]] = []
        with reader.session() as s:
            for statement in dict.fromkeys(statements):
                if len(plans) == 3:
                    break
                plans.append([row[3] for row in s.conn.execute(f"EXPLAIN QUERY PLAN {statement}")])
        found.append(QueryTiming(name, tier, median(times), rows, list(dict.fromkeys(statements))[:3], plans))
    return found


def diagnose_render(refresher: Any, repeats: int = 20) -> list[tuple[str, float, int]]:
    """Scrape-time cost per collector on the in-process snapshot: (collector, median s, samples)."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest

    from exporter.clock import system_clock
    from exporter.collectors import COLLECTORS, View
    from exporter.config import MetricsConfig

    settings = MetricsConfig()
    view = View(lambda: refresher.state, lambda: settings, system_clock)
    found = []
    for collector_type in COLLECTORS:
        registry = CollectorRegistry(auto_describe=False)
        collector = collector_type(view)
        registry.register(collector)
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            openmetrics_latest(registry)  # type: ignore[no-untyped-call]
            times.append(time.perf_counter() - started)
        samples = sum(len(family.samples) for family in collector.collect())
        found.append((collector_type.__name__, median(times), samples))
    return found


def print_diagnosis(size: int, timings: list[QueryTiming]) -> None:
    print(f"\nPer-query timings at {size:,} runs (median of warm calls, one read session each):")
    for t in timings:
        print(f"  {t.tier:9} {ms(t.median_s):>10}  {t.name}  [{t.rows:,} rows/items]")
        for statement, plan in zip(t.statements, t.plans, strict=False):
            short = statement if len(statement) <= 160 else statement[:157] + "..."
            print(f"              SQL: {short}")
            for step in plan:
                print(f"                   plan: {step}")


# --- report ---------------------------------------------------------------------------------------------


@dataclass
class Row:
    metric: str
    ours: float
    flujo: float
    unit: str  # "s" or "bytes"
    goal: str = ""
    passed: bool | None = None

    @property
    def ratio(self) -> float:
        return ratio(self.ours, self.flujo)


def fmt_value(value: float, unit: str) -> str:
    if math.isnan(value):
        return "n/a"
    return ms(value) if unit == "s" else f"{value / 1e6:.1f} MB"


def print_table(size: int, rows: list[Row]) -> None:
    header = ("metric", "ours", "flujo", "ratio", "goal", "result")
    cells = [
        (
            r.metric,
            fmt_value(r.ours, r.unit),
            fmt_value(r.flujo, r.unit),
            "n/a" if math.isnan(r.ratio) else f"{r.ratio:.3f}x",
            r.goal,
            "" if r.passed is None else "PASS" if r.passed else "FAIL",
        )
        for r in rows
    ]
    widths = [max(len(str(line[i])) for line in (header, *cells)) for i in range(len(header))]
    print(f"\n=== {size:,} runs (Flujo 0.4.35 layout, flujo's indexes only) ===")
    print("  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths, strict=True))))
    print("  ".join("-" * w for w in widths))
    for line in cells:
        print(
            "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths, strict=True)))
        )


def build_rows(
    size: int, daemon: DaemonResult, sbs: SideBySide, flujo_scrape: list[float], flujo_mem: dict[str, int]
) -> list[Row]:
    at_1m = size >= ONE_MILLION
    flujo_collect = median(sbs.flujo_collect_s)
    ours_scrape = median(daemon.scrape_gzip_s)
    fast = median(sbs.refresh_s)
    daemon_fast = median(
        [
            a + b
            for a, b in zip(
                daemon.collector_durations_s.get("snapshot", []),
                daemon.collector_durations_s.get("watermarks", []),
                strict=False,
            )
        ]
    )
    rows = [
        Row(
            "scrape /metrics median (gzip, Prometheus headers)",
            ours_scrape,
            median(flujo_scrape),
            "s",
            "<= 5 ms at 1M" if at_1m else "<= 5 ms (goal is at 1M)",
            ours_scrape <= SCRAPE_GOAL_S if at_1m else None,
        ),
        Row("scrape /metrics p99", percentile(daemon.scrape_gzip_s, 99), percentile(flujo_scrape, 99), "s", "info"),
        Row("scrape /metrics median, no gzip (ours)", median(daemon.scrape_plain_s), math.nan, "s", "info"),
        Row(
            "first scrape of each new snapshot, median (ours)",
            median(daemon.scrape_fresh_s),
            median(flujo_scrape),
            "s",
            "info (~ what a 15 s scrape sees)",
        ),
        Row(
            "refresh, fast phases (snapshot+watermarks) vs flujo collect()",
            fast,
            flujo_collect,
            "s",
            "ratio <= 0.25",
            ratio(fast, flujo_collect) <= REFRESH_RATIO_GOAL if not math.isnan(ratio(fast, flujo_collect)) else None,
        ),
        Row("  of which snapshot phase", median(sbs.snapshot_s), flujo_collect, "s", "info"),
        Row("  of which watermarks phase", median(sbs.watermarks_s), flujo_collect, "s", "info"),
        Row("  same, reported by the daemon (collector_duration)", daemon_fast, flujo_collect, "s", "info"),
        Row(
            "counts pass (every counts_interval, default 1 min)",
            median(sbs.counts_s),
            flujo_collect,
            "s",
            "info",
        ),
        Row(
            "amortized per 15 s refresh (fast + counts/4 + aggregates/20)",
            fast + median(sbs.counts_s) / 4 + median(sbs.aggregates_s) / 20,
            flujo_collect,
            "s",
            "info",
        ),
        Row(
            "aggregates pass (every aggregate_interval, default 5 min)",
            median(sbs.aggregates_s),
            flujo_collect,
            "s",
            "info",
        ),
        Row(
            "first refresh (watermark seed + aggregates)",
            sbs.first_refresh_s,
            sbs.flujo_first_collect_s,
            "s",
            "info (flujo: first collect incl. _init_db)",
        ),
        Row("daemon start -> first full refresh served", daemon.first_full_refresh_s, math.nan, "s", "info"),
        Row(
            "RSS after measurements (VmRSS)",
            float(daemon.memory.get("VmRSS", math.nan)),
            float(flujo_mem.get("VmRSS", math.nan)),
            "bytes",
            "<= 80 MB",
            daemon.memory.get("VmRSS", math.inf) <= RSS_GOAL_BYTES,
        ),
        Row(
            "peak RSS (VmHWM)",
            float(daemon.memory.get("VmHWM", math.nan)),
            float(flujo_mem.get("VmHWM", math.nan)),
            "bytes",
            "<= 80 MB",
            daemon.memory.get("VmHWM", math.inf) <= RSS_GOAL_BYTES,
        ),
    ]
    return rows


def run_size(size: int, args: argparse.Namespace, flujo_python: Path) -> dict[str, Any]:
    started = time.perf_counter()
    db, meta = gen_flujo_db.ensure_db(size, rebuild=args.rebuild, progress=log)
    generated_now = time.perf_counter() - started
    log(
        f"{db.name}: {meta['file_bytes'] / 1e9:.2f} GB, built in {meta['build_seconds']} s"
        + (" (now)" if generated_now > 5 else f" (cached, anchor {meta['anchor_utc']})")
    )
    anchor_age_h = (time.time() - meta["anchor_epoch"]) / 3600
    if anchor_age_h > 24:
        log(f"note: the DB's 'now' is {anchor_age_h:.0f} h old, its last-24h windows are emptier than live (--rebuild)")
    copy, copy_s = gen_flujo_db.ensure_flujo_copy(size, db, meta)
    if copy_s:
        log(f"copied {db.name} -> {copy.name} for flujo in {copy_s:.1f} s")

    daemon = measure_daemon(db, args, DATA_DIR / f"daemon-{size}.log")
    log(f"our daemon RSS {mib(daemon.memory.get('VmRSS', math.nan))}, HWM {mib(daemon.memory.get('VmHWM', math.nan))}")

    probe = Probe(flujo_python, copy, DATA_DIR / f"flujo-probe-{size}.log")
    try:
        sbs, refresher = side_by_side(db, probe, args)
        render = diagnose_render(refresher) if args.diagnose else []
        serving = probe.ask("serve")
        flujo_client = Scraper(int(serving["port"]), compressed=True)
        flujo_scrape, flujo_body = flujo_client.timed("/metrics", args.requests)
        flujo_reconnects = flujo_client.reconnects
        flujo_client.close()
        flujo_mem = proc_memory(probe.proc.pid)
        log(f"flujo server: {args.requests} scrapes, median {ms(median(flujo_scrape))}")
    finally:
        probe.close()

    diagnosis = diagnose(db, args.repeats) if args.diagnose else []
    rows = build_rows(size, daemon, sbs, flujo_scrape, flujo_mem)
    print_table(size, rows)
    print(
        f"requests={args.requests} per side; ours: 1 keep-alive connection ({daemon.reconnects} connect), "
        f"body {daemon.body_gzip_bytes:,} B gzip / {daemon.body_plain_bytes:,} B plain; flujo: HTTP/1.0 server, "
        f"{flujo_reconnects} connects, body {flujo_body:,} B; refresh samples={len(sbs.refresh_s)}, "
        f"flujo collect samples={len(sbs.flujo_collect_s)}, aggregate samples={len(sbs.aggregates_s)}"
    )
    print(
        f"values: ours {sbs.ours_values}; flujo flujo_runs_total={sbs.flujo_samples.get('flujo_runs_total')}, "
        f"flujo_avg_duration_ms={sbs.flujo_samples.get('flujo_avg_duration_ms')}"
    )
    for line in daemon.log_problems:
        print(f"our daemon logged: {line}")
    if not daemon.aggregates_ok:
        print(f"WARNING: our daemon's aggregates collector never succeeded; log tail:\n{daemon.log_tail}")
    if render:
        print(f"\nScrape-time cost per collector at {size:,} runs (OpenMetrics render, in-process, median):")
        for name, seconds, samples in render:
            print(f"  {ms(seconds):>10}  {name}  [{samples:,} samples]")
    if diagnosis:
        print_diagnosis(size, diagnosis)
    return {
        "size": size,
        "measured_at": datetime.now(UTC).isoformat(),
        "db": {"path": str(db), **meta},
        "flujo_versions": probe.hello.get("versions"),
        "rows": [{**asdict(r), "ratio": r.ratio} for r in rows],
        "daemon": asdict(daemon),
        "side_by_side": asdict(sbs),
        "flujo_scrape_s": flujo_scrape,
        "flujo_memory": flujo_mem,
        "diagnosis": [asdict(t) for t in diagnosis],
        "render_per_collector": [{"collector": n, "median_s": t, "samples": c} for n, t, c in render],
        "settings": {k: v for k, v in vars(args).items() if k != "sizes"},
    }


def write_results(results: list[dict[str, Any]]) -> None:
    previous: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        previous = json.loads(RESULTS.read_text())
    by_size = previous.get("by_size", {}) if isinstance(previous, dict) else {}
    for result in results:
        by_size[str(result["size"])] = result
    payload = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}, "by_size": by_size}
    RESULTS.write_text(json.dumps(_clean(payload), indent=2) + "\n")


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf become null, paths and other objects strings."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(value)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated run counts")
    parser.add_argument("--requests", type=int, default=200, help="sequential /metrics requests per side")
    parser.add_argument(
        "--refresh-interval", type=float, default=15.0, help="our daemon's metrics.refresh_interval (s)"
    )
    parser.add_argument("--cycles", type=int, default=3, help="daemon refresh cycles to read collector durations from")
    parser.add_argument("--repeats", type=int, default=7, help="steady-state refresh rounds (in-process)")
    parser.add_argument("--collect-per-round", type=int, default=3, help="flujo collect() calls per round")
    parser.add_argument("--aggregate-repeats", type=int, default=3, help="aggregate passes (in-process)")
    parser.add_argument(
        "--ready-timeout", type=float, default=1800.0, help="max wait for our daemon's first refresh (s)"
    )
    parser.add_argument("--rebuild", action="store_true", help="regenerate the DBs")
    parser.add_argument("--diagnose", action="store_true", help="per-query timings and plans of our reader")
    args = parser.parse_args()
    # SIGTERM unwinds like Ctrl-C, so the daemon and probe child processes are stopped on the way out.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    flujo_python = ensure_flujo_venv()
    results = []
    for size in sizes:
        results.append(run_size(size, args, flujo_python))
        write_results(results)
    print(f"\nresults written to {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
