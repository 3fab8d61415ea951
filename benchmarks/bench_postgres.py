"""Flujo on Postgres: our refresh against flujo 0.6.11's own ``PostgresBackend.get_workflow_stats()``, same database,
same run.

    .venv/bin/python benchmarks/bench_postgres.py [--runs 1000000] [--repeats 10] [--scrapes 200]

A benchmark, not a test: it prints numbers and ratios and never asserts timings (compare the columns of one run).

A throwaway PostgreSQL 15 is started the way the test suite starts it (tests/postgres.py: ``runuser -u postgres``,
so run this as root), a database is filled with N Flujo 0.6.11 runs (``gen_flujo_pg.py``: flujo's own DDL and
indexes, about 3.5 min per million runs) and handed to the app's role ``flujo``; the exporter reads as a SELECT-only
role with ``default_transaction_read_only``, as the README documents.  Then, one after the other, warm cache for
both:

* flujo: ``flujo06_pg_probe.py`` in a virtualenv holding flujo 0.6.11 and asyncpg: the median of R calls of
  ``get_workflow_stats()``, what flujo's own Prometheus collector runs on every scrape;
* ours, in a child process: the daemon's ``Refresher`` over ``PostgresReader`` and its exposition: the first refresh
  (every tier, the finished-run cursor seeded), the steady refresh (what runs every ``metrics.refresh_interval``:
  the fast tier and the finished-run cursor; counts and aggregates are due only every minute or five), a full
  refresh of every tier (medians of R), the served scrape (the cached render ``/metrics`` answers with; p50/p99
  over S) and RSS / peak RSS.

The goal (issue 15): a refresh <= 0.25x flujo's ``get_workflow_stats()``.  flujo 0.6.11 needs Python >= 3.13 from
PyPI; where that is not available, ``FLUJO_SRC`` names a checkout of flujo's v0.6.11 tag, installed with
``--ignore-requires-python`` and the few packages its Postgres backend imports (it runs on 3.11), or
``FLUJO06_PYTHON`` names an interpreter that already imports it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the exporter package
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the suite's throwaway Postgres
sys.path.insert(0, str(Path(__file__).resolve().parent))  # _common, gen_flujo_pg
from _common import BENCH_DIR, median, mib, ms, percentile, ratio

FLUJO_VENV = BENCH_DIR / ".venv-flujo06"
FLUJO_VERSION = "0.6.11"
PROBE = BENCH_DIR / "flujo06_pg_probe.py"
# What flujo 0.6.11's Postgres backend imports, installed next to a source checkout (FLUJO_SRC).
FLUJO_IMPORT_DEPS = (
    "asyncpg",
    "pydantic>=2.11.7,<2.13",
    "pydantic-settings",
    "pydantic-ai-slim>=1.0.15,<1.26.0",
    "pydantic-evals",
    "openai>=2.1.0,<3.0",
    "opentelemetry-api==1.38.0",
    "opentelemetry-sdk==1.38.0",
    "aiosqlite",
    "anyio",
    "tenacity",
    "orjson",
    "blake3",
    "numpy",
    "PyYAML",
    "ruamel.yaml",
    "typer",
    "rich",
    "uvloop",
    "packaging",
)
DATABASE = "flujo_bench"


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def vm_status() -> dict[str, int]:
    found = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) * 1024
    return found


# --- flujo's side ------------------------------------------------------------------------------------------------


def flujo_python() -> Path:
    if os.environ.get("FLUJO06_PYTHON"):
        return Path(os.environ["FLUJO06_PYTHON"])
    python = FLUJO_VENV / "bin" / "python"
    check = "import flujo.state.backends.postgres, importlib.metadata as m; print(m.version('flujo'))"
    if python.exists():
        done = subprocess.run([python, "-c", check], capture_output=True, text=True, check=False)
        if done.returncode == 0 and done.stdout.strip() == FLUJO_VERSION:
            return python
    base = shutil.which("python3.13") or shutil.which("python3.14")
    source = os.environ.get("FLUJO_SRC")
    if base is None and source is None:
        raise SystemExit(
            f"flujo {FLUJO_VERSION} needs Python >= 3.13 (none on PATH): set FLUJO_SRC to a checkout of its "
            f"v{FLUJO_VERSION} tag, or FLUJO06_PYTHON to an interpreter that imports it"
        )
    log(f"creating {FLUJO_VENV}")
    subprocess.run([base or sys.executable, "-m", "venv", "--clear", str(FLUJO_VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    if base is not None:
        subprocess.run([*pip, f"flujo=={FLUJO_VERSION}", "asyncpg"], check=True)
    else:
        subprocess.run([*pip, "--ignore-requires-python", "--no-deps", str(source)], check=True)
        subprocess.run([*pip, *FLUJO_IMPORT_DEPS], check=True)
    done = subprocess.run([python, "-c", check], capture_output=True, text=True, check=False)
    if done.returncode != 0 or done.stdout.strip() != FLUJO_VERSION:
        raise SystemExit(f"flujo {FLUJO_VERSION} does not import in {FLUJO_VENV}:\n{done.stderr}")
    return python


def theirs(url: str, repeats: int) -> dict[str, Any]:
    argv = [str(flujo_python()), str(PROBE), "--url", url, "--repeats", str(repeats)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"flujo's probe failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# --- our side (a child process, for its own RSS) -----------------------------------------------------------------


def ours(url: str, repeats: int, scrapes: int) -> dict[str, Any]:
    from prometheus_client import CollectorRegistry

    from exporter.clock import system_clock
    from exporter.collectors import View, build_registry
    from exporter.config import MetricsConfig
    from exporter.exposition import CachedExposition
    from exporter.reader.postgres import PostgresReader
    from exporter.refresh import Refresher

    settings = MetricsConfig()
    refresher = Refresher(PostgresReader(url), lambda: settings, system_clock)
    live = CollectorRegistry(auto_describe=False)
    registry = build_registry(View(lambda: refresher.state, lambda: settings, system_clock), live=live)
    exposition = CachedExposition(registry, live, lambda: (refresher.state,))
    started = time.perf_counter()
    state = refresher.refresh(force_all=True)
    first = time.perf_counter() - started
    if state.problem is not None or not all(phase.success for phase in state.phases.values()):
        raise SystemExit(f"refresh failed: {state.problem} {state.failing_phases()}")
    steady, full = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        refresher.refresh()
        steady.append(time.perf_counter() - started)
        started = time.perf_counter()
        refresher.refresh(force_all=True)
        full.append(time.perf_counter() - started)
    body, _ = exposition.render("text/plain")
    served = []
    for _ in range(scrapes):
        started = time.perf_counter()
        exposition.render("text/plain")
        served.append(time.perf_counter() - started)
    workflows = sum(
        float(line.rsplit(" ", 1)[1])
        for line in body.decode().splitlines()
        if line.startswith("flujo_workflows{") and 'kind="' not in line
    )
    return {
        "first_refresh": first,
        "steady_refresh": median(steady),
        "full_refresh": median(full),
        "phases": {str(k): v.duration_s for k, v in refresher.state.phases.items()},
        "scrape_p50": percentile(served, 50),
        "scrape_p99": percentile(served, 99),
        "body_bytes": len(body),
        "workflows": workflows,
        **vm_status(),
    }


def child(url: str, args: argparse.Namespace) -> dict[str, Any]:
    argv = [sys.executable, __file__, "--child", "--url", url, "--repeats", str(args.repeats)]
    done = subprocess.run([*argv, "--scrapes", str(args.scrapes)], check=False, capture_output=True, text=True)
    sys.stderr.write(done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"our side failed ({done.returncode})")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


# --- the run -----------------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=10, help="refreshes / get_workflow_stats calls measured")
    parser.add_argument("--scrapes", type=int, default=200, help="served scrapes measured")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(ours(args.url, args.repeats, args.scrapes)))
        return 0

    import gen_flujo_pg
    from postgres import EXPORTER_PASSWORD, OWNER, PostgresServer, pg_bindir

    bindir = pg_bindir()
    if bindir is None or os.geteuid() != 0:
        raise SystemExit("needs root and PostgreSQL's server binaries (scripts/install-test-tools.sh)")
    root = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    root.chmod(0o711)
    server = PostgresServer(bindir, root)
    try:
        server.init()
        server.start()
        server.psql(
            "postgres",
            f"CREATE ROLE {OWNER} LOGIN; CREATE ROLE exporter LOGIN PASSWORD '{EXPORTER_PASSWORD}';\n"
            "ALTER ROLE exporter SET default_transaction_read_only = on;\n"
            f"CREATE DATABASE {DATABASE} OWNER {OWNER} TEMPLATE template0 ENCODING 'UTF8';\n",
        )
        log(f"generating {args.runs:,} Flujo 0.6.11 runs")
        started = time.perf_counter()
        rows = gen_flujo_pg.populate(
            f"postgresql://postgres@127.0.0.1:{server.port}/{DATABASE}", OWNER, args.runs, datetime.now(UTC)
        )
        log(f"generated in {time.perf_counter() - started:.0f} s: {rows}")
        server.psql(
            DATABASE,
            "GRANT USAGE ON SCHEMA public TO exporter; GRANT SELECT ON ALL TABLES IN SCHEMA public TO exporter;",
        )
        size = int(server.psql(DATABASE, "SELECT pg_database_size(current_database())").strip().split()[-1])
        log("flujo: get_workflow_stats()")
        flujo = theirs(server.owner_url(DATABASE), args.repeats)
        log("ours: refresher and exposition")
        mine = child(server.exporter_url(DATABASE), args)
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)

    stats = median(flujo["stats_s"])
    print(f"\nflujo {flujo['versions']['flujo']} on PostgreSQL 15: {args.runs:,} runs, {rows}, {mib(size)}")
    print(f"{'':44} {'ours':>12} {'get_workflow_stats':>19} {'ratio':>8}")
    for name, value in (
        ("steady refresh (median)", mine["steady_refresh"]),
        ("full refresh, every tier (median)", mine["full_refresh"]),
        ("first refresh (cursor seeded)", mine["first_refresh"]),
        ("served scrape p50", mine["scrape_p50"]),
        ("served scrape p99", mine["scrape_p99"]),
    ):
        print(f"{name:44} {ms(value):>12} {ms(stats):>19} {ratio(value, stats):>7.2f}x")
    print(f"{'RSS / peak RSS (ours)':44} {mib(mine['VmRSS']):>12} {mib(mine['VmHWM']):>19}")
    print(f"tiers of the last full refresh: { {k: ms(v) for k, v in mine['phases'].items()} }")
    print(
        f"workflows: ours {mine['workflows']:,.0f} top-level (flujo_workflows), flujo's total_workflows "
        f"{flujo['stats']['total_workflows']:,} (it counts background-task rows too)"
    )
    print("goal: steady refresh <= 0.25x get_workflow_stats()")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
