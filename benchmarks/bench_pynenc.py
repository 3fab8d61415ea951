"""The pynenc engine on a big pynenc file, against a plain status count on the same file in the same run.

    .venv/bin/python benchmarks/bench_pynenc.py [--invocations 1000000] [--repeats 5] [--scrapes 200]

A benchmark, not a test: it prints numbers and ratios and never asserts timings (the machine is
shared and noisy; compare the columns of one run, not numbers across runs).

The file has pynenc 0.4.0's exact tables for one app (``create_schema`` of
``exporter/engines/pynenc/simulator.py``, the DDL of a file pynenc wrote) and N invocations written
with ``INSERT ... SELECT`` over a recursive CTE (about 4 history rows each: registered, pending,
running, final; every 20th finished one retried once), 10 tasks, a fifth of them children, 90 %
success, 6 % failed (with their exception rows), 1 % running, 1 % pending, 2 % registered (with
their broker messages), spread over the last 48 h.  It is generated once into ``--dir`` (default
``var/bench/``, git-ignored) and reused.  History rows are written invocation by invocation
(pynenc interleaves them in time); the rowid cursor reads them the same way either way.

Two child processes run one after the other, on the same file, warm cache for both:

* baseline: ``SELECT status, COUNT(*) FROM <invocations> GROUP BY status`` (what a minimal status
  exporter would run), median of R warm runs, and the process's peak RSS;
* ours: the daemon's ``Refresher`` and exposition in-process: the first refresh (the history cursor
  walks every final and retry row: what the daemon does once at start), a full refresh of every
  tier (snapshot, counts, aggregates, cursor; median of R), the render of the exposition (p50 and
  p99 over S, each with an empty cache, as the first scrape after a refresh), the served scrape
  (``CachedExposition.render`` with its cache, as ``/metrics`` answers until the next refresh), and
  RSS / peak RSS.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the exporter package
sys.path.insert(0, str(Path(__file__).resolve().parent))  # _common
from _common import ROOT, median, mib, ms, percentile, ratio

APP = "bench_app"
TASKS = 10


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def vm_status() -> dict[str, int]:
    found = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) * 1024
    return found


# --- the file ---------------------------------------------------------------------------------------


def generate(db: Path, invocations: int) -> None:
    from exporter.engines.pynenc.layout import table_prefix
    from exporter.engines.pynenc.simulator import PynencWriter

    tmp = db.with_suffix(".tmp")
    for leftover in (tmp, Path(f"{tmp}-journal")):
        leftover.unlink(missing_ok=True)
    writer = PynencWriter(tmp, APP, module="bench_tasks")  # the exact DDL, app info, the external runner
    runners = [writer.start_runner() for _ in range(8)]
    writer.close()
    p = table_prefix(APP)
    now = time.time()
    span = 48 * 3600.0
    conn = sqlite3.connect(tmp, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA journal_mode = OFF")  # a throw-away build: no rollback needed
    conn.execute("PRAGMA cache_size = -262144")
    started = time.monotonic()
    conn.execute("BEGIN")
    # One row per invocation: its id, task, final (or current) status, whether it was retried, its
    # parent and when it was registered.
    conn.execute(
        f"""CREATE TEMP TABLE gen AS
        WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i < {invocations - 1})
        SELECT i,
               printf('%08x-%04x-4%03x-8000-%012x', i, i % 65536, i % 4096, i) AS id,
               'bench_tasks.task_' || (i % {TASKS}) AS task,
               CASE WHEN i % 100 < 90 THEN 'success' WHEN i % 100 < 96 THEN 'failed'
                    WHEN i % 100 = 96 THEN 'running' WHEN i % 100 = 97 THEN 'pending'
                    ELSE 'registered' END AS status,
               (i % 20 = 7 AND i % 100 < 96) AS retried,
               CASE WHEN i % 5 = 4 THEN printf('%08x-%04x-4%03x-8000-%012x', i - 1, (i - 1) % 65536,
                    (i - 1) % 4096, i - 1) END AS parent,
               {now - span} + i * {span / invocations} AS t0
        FROM seq"""
    )
    runner = f"'{runners[0].runner_id}'"
    external = f"'{writer.external_runner}'"
    final_at = "t0 + 2.0 + (i % 7)"
    conn.execute(
        f"""INSERT INTO "{p}state_backend_invocations" SELECT id, task || ':' || printf('%064x', i), task,
        printf('%064x', i), printf('{{"x": "%d", "y": "%d"}}', i, i % 10), parent, NULL, NULL, NULL, NULL, NULL
        FROM gen ORDER BY id"""
    )
    conn.execute(
        f"""INSERT INTO "{p}orchestrator_invocations" SELECT id, task, task || ':' || printf('%064x', i), status,
        CASE status WHEN 'registered' THEN {external} WHEN 'pending' THEN {runner} WHEN 'running' THEN {runner} END,
        CASE status WHEN 'registered' THEN t0 WHEN 'pending' THEN t0 + 0.5 WHEN 'running' THEN t0 + 0.6
             ELSE {final_at} END,
        retried, CASE WHEN status IN ('success', 'failed') THEN {final_at} + 0.001 END
        FROM gen ORDER BY id"""
    )
    # History: (step, status, offset); steps 3-5 only when retried, step 6 is the final status.
    conn.execute(
        f"""INSERT INTO "{p}state_backend_history"
        WITH steps(k, name, delta) AS (VALUES (0, 'registered', 0.0), (1, 'pending', 0.5), (2, 'running', 0.6),
             (3, 'retry', 1.0), (4, 'pending', 1.5), (5, 'running', 1.6), (6, NULL, NULL)),
        hist AS (
            SELECT gen.id, gen.i, k, COALESCE(name, gen.status) AS st,
                   CASE WHEN k = 6 THEN {final_at} ELSE t0 + delta END AS ts,
                   CASE WHEN k = 0 THEN {external} WHEN k IN (3, 6) THEN NULL ELSE {runner} END AS owner
            FROM gen JOIN steps
            WHERE k <= CASE gen.status WHEN 'registered' THEN 0 WHEN 'pending' THEN 1 WHEN 'running' THEN 2 ELSE 6 END
              AND (retried OR k NOT IN (3, 4, 5)))
        SELECT id, ts + 0.0004, st,
               printf('{{"invocation_id": "%s", "_timestamp": "%s", "status_record": {{"status": "%s", '
                      || '"runner_id": %s, "timestamp": "%s"}}, "runner_context_id": "%s", '
                      || '"registered_by_inv_id": null}}',
                      id, strftime('%Y-%m-%dT%H:%M:%f+00:00', ts + 0.0004, 'unixepoch'), st,
                      COALESCE('"' || owner || '"', 'null'), strftime('%Y-%m-%dT%H:%M:%f+00:00', ts, 'unixepoch'),
                      COALESCE(owner, {runner}))
        FROM hist ORDER BY id, k"""
    )
    conn.execute(
        f"""INSERT INTO "{p}state_backend_exceptions" SELECT id,
        '{{"error_name": "ZeroDivisionError", "pynenc_error": false, "error_data": "{{}}"}}'
        FROM gen WHERE status = 'failed' ORDER BY id"""
    )
    conn.execute(
        f"""INSERT INTO "{p}state_backend_results" SELECT id, CAST(i % 1000 AS TEXT)
        FROM gen WHERE status = 'success' ORDER BY id"""
    )
    conn.execute(
        f"""INSERT INTO "{p}broker_message_queue" (invocation_id, queue_name, priority, created_at)
        SELECT id, 'default', 0.0, t0 / 86400.0 + 2440587.5 FROM gen WHERE status = 'registered' ORDER BY i"""
    )
    conn.execute(f'UPDATE "{p}orchestrator_runner_heartbeats" SET last_heartbeat = ?', (now,))
    conn.execute("DROP TABLE gen")
    conn.execute("COMMIT")
    # No ANALYZE: pynenc never runs it, so the planner sees the file as pynenc leaves it.
    [(history,)] = conn.execute(f'SELECT COUNT(*) FROM "{p}state_backend_history"').fetchall()
    conn.close()
    tmp.rename(db)
    log(f"generated {invocations:,} invocations, {history:,} history rows in {time.monotonic() - started:.1f}s")


# --- the two sides (child processes) -------------------------------------------------------------------


def baseline(db: Path, repeats: int) -> dict[str, Any]:
    from exporter.engines.pynenc.layout import table_prefix

    p = table_prefix(APP)
    sql = f'SELECT status, COUNT(*) FROM "{p}orchestrator_invocations" GROUP BY status'
    # The floor of the counts tier: the orchestrator has no parent column, so telling top-level
    # invocations apart takes one state-backend probe per invocation.
    split = (
        "SELECT c.task_id_key, c.status, s.parent_invocation_id IS NULL, COUNT(*) "
        f'FROM "{p}orchestrator_invocations" c '
        f'LEFT JOIN "{p}state_backend_invocations" s ON s.invocation_id = c.invocation_id GROUP BY 1, 2, 3'
    )
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    found: dict[str, list[float]] = {sql: [], split: []}
    rows: list[Any] = []
    for _ in range(repeats + 1):  # the first round warms the cache, as our first refresh does
        for query, times in found.items():
            started = time.perf_counter()
            got = conn.execute(query).fetchall()
            times.append(time.perf_counter() - started)
            rows = got if query == sql else rows
    conn.close()
    return {"query": median(found[sql][1:]), "split": median(found[split][1:]), "statuses": dict(rows), **vm_status()}


def ours(db: Path, repeats: int, scrapes: int) -> dict[str, Any]:
    from datetime import UTC

    from prometheus_client import CollectorRegistry

    from exporter.clock import system_clock
    from exporter.collectors import View, build_registry
    from exporter.config import MetricsConfig
    from exporter.exposition import CachedExposition
    from exporter.reader import StateReader
    from exporter.refresh import Refresher

    settings = MetricsConfig()
    refresher = Refresher(StateReader(db, naive_timezone=UTC), lambda: settings, system_clock)
    live = CollectorRegistry(auto_describe=False)
    registry = build_registry(View(lambda: refresher.state, lambda: settings, system_clock), live=live)
    exposition = CachedExposition(registry, live, lambda: (refresher.state,))
    started = time.perf_counter()
    state = refresher.refresh(force_all=True)
    first = time.perf_counter() - started
    if state.problem is not None or not all(phase.success for phase in state.phases.values()):
        raise SystemExit(f"refresh failed: {state.problem} {state.failing_phases()}")
    refreshes, renders = [], []
    body = b""
    for _ in range(repeats):
        started = time.perf_counter()
        refresher.refresh(force_all=True)
        refreshes.append(time.perf_counter() - started)
        started = time.perf_counter()
        body, _ = exposition.render("text/plain")
        renders.append(time.perf_counter() - started)
    fresh = []
    for _ in range(scrapes):  # a new cache each time: the snapshot part rendered, as after every refresh
        uncached = CachedExposition(registry, live, lambda: (refresher.state,))
        started = time.perf_counter()
        uncached.render("text/plain")
        fresh.append(time.perf_counter() - started)
    served = []
    for _ in range(scrapes):
        started = time.perf_counter()
        exposition.render("text/plain")
        served.append(time.perf_counter() - started)
    phases = {name: phase.duration_s for name, phase in refresher.state.phases.items()}
    text = body.decode()
    finished = sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("pynenc_runs_finished_total{")
    )
    return {
        "first_refresh": first,
        "refresh": median(refreshes),
        "render_after_refresh": median(renders),
        "render_p50": percentile(fresh, 50),
        "render_p99": percentile(fresh, 99),
        "scrape_p50": percentile(served, 50),
        "scrape_p99": percentile(served, 99),
        "phases": {str(k): v for k, v in phases.items()},
        "body_bytes": len(body),
        "top_level_finished": finished,
        **vm_status(),
    }


def child(side: str, db: Path, args: argparse.Namespace) -> dict[str, Any]:
    argv = [sys.executable, __file__, "--child", side, "--db", str(db)]
    argv += ["--repeats", str(args.repeats), "--scrapes", str(args.scrapes)]
    done = subprocess.run(argv, check=False, capture_output=True, text=True)
    sys.stderr.write(done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"the {side} side failed ({done.returncode})")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--invocations", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5, help="full refreshes / baseline queries measured")
    parser.add_argument("--scrapes", type=int, default=200, help="served scrapes measured")
    parser.add_argument("--dir", type=Path, default=ROOT / "var" / "bench", help="where the generated file is kept")
    parser.add_argument("--child", choices=("baseline", "ours"), help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        work = (
            baseline(args.db, args.repeats) if args.child == "baseline" else ours(args.db, args.repeats, args.scrapes)
        )
        print(json.dumps(work))
        return 0
    args.dir.mkdir(parents=True, exist_ok=True)
    db = args.dir / f"pynenc-040-{args.invocations}.db"
    if not db.exists():
        log(f"generating {db} ({args.invocations:,} invocations)")
        generate(db, args.invocations)
    size = db.stat().st_size
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    from exporter.engines.pynenc.layout import table_prefix

    p = table_prefix(APP)
    [(history,)] = conn.execute(f'SELECT COUNT(*) FROM "{p}state_backend_history"').fetchall()
    [(top_level,)] = conn.execute(
        f'SELECT COUNT(*) FROM "{p}state_backend_history" h JOIN "{p}state_backend_invocations" i '
        "USING (invocation_id) WHERE i.parent_invocation_id IS NULL AND h.history_status IN ('success', 'failed')"
    ).fetchall()
    conn.close()
    log("baseline: the status count")
    base = child("baseline", db, args)
    log("ours: refresher and exposition")
    mine = child("ours", db, args)
    print(f"\npynenc 0.4.0 file: {args.invocations:,} invocations, {history:,} history rows, {mib(size)}")
    print(f"{'':44} {'ours':>12} {'status count':>14} {'ratio':>8}")
    rows = (
        ("first refresh (history cursor seeds)", mine["first_refresh"], base["query"]),
        ("full refresh, every tier (median)", mine["refresh"], base["query"]),
        ("scrape: render of the exposition, p50", mine["render_p50"], base["query"]),
        ("scrape: render of the exposition, p99", mine["render_p99"], base["query"]),
        ("served scrape (cached render) p50", mine["scrape_p50"], base["query"]),
        ("served scrape (cached render) p99", mine["scrape_p99"], base["query"]),
    )
    for name, value, against in rows:
        print(f"{name:44} {ms(value):>12} {ms(against):>14} {ratio(value, against):>7.2f}x")
    print(f"{'RSS':44} {mib(mine['VmRSS']):>12} {mib(base['VmRSS']):>14} {ratio(mine['VmRSS'], base['VmRSS']):>7.2f}x")
    print(
        f"{'peak RSS':44} {mib(mine['VmHWM']):>12} {mib(base['VmHWM']):>14} "
        f"{ratio(mine['VmHWM'], base['VmHWM']):>7.2f}x"
    )
    counts = mine["phases"]["counts"]
    print(
        f"counts tier alone: {ms(counts)}; its plain GROUP BY task, status, top-level (join on the state "
        f"backend's invocations): {ms(base['split'])} ({ratio(counts, base['split']):.2f}x)"
    )
    print(
        f"top-level finished: {mine['top_level_finished']:,.0f} in pynenc_runs_finished_total, "
        f"{top_level:,} final history rows of top-level invocations in the file"
    )
    print("full refresh by phase (last):", ", ".join(f"{k} {ms(v)}" for k, v in mine["phases"].items()))
    print(f"exposition: {mine['body_bytes']:,} bytes; statuses: {base['statuses']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
