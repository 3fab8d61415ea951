"""Run every benchmark in turn (``make bench``): each prints its own medians and ratios side by side.

``--quick`` uses small sizes (a few minutes in all) to check that every benchmark still runs; the
numbers the README quotes come from the full sizes (the default), which take much longer.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent

# name -> (full arguments, quick arguments)
BENCHMARKS: dict[str, tuple[list[str], list[str]]] = {
    "bench_backend.py": ([], ["--sizes", "20000", "--repeat", "3"]),
    "bench_metrics.py": ([], ["--sizes", "20000", "--requests", "50", "--repeats", "3"]),
    "bench_traces.py": ([], ["--spans", "50000", "--rounds", "1"]),
    "bench_cleanup.py": ([], ["--rows", "50000", "--baseline", "2"]),
    "bench_safety.py": ([], ["--seconds", "20", "--seed-runs", "5000", "--kills", "2"]),
    "bench_pynenc.py": ([], ["--invocations", "50000", "--repeats", "3", "--scrapes", "50"]),
    "bench_postgres.py": ([], ["--runs", "20000", "--repeats", "3", "--scrapes", "50"]),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: check that every benchmark runs")
    parser.add_argument("--only", action="append", default=[], help="run only this benchmark (repeatable)")
    args = parser.parse_args()
    scripts = sorted(path.name for path in BENCH_DIR.glob("bench_*.py"))
    failed = []
    for name in scripts:
        if args.only and name not in args.only:
            continue
        full, quick = BENCHMARKS.get(name, ([], []))
        argv = [sys.executable, str(BENCH_DIR / name), *(quick if args.quick else full)]
        print(f"\n=== {name} {' '.join(argv[2:])}", flush=True)
        started = time.monotonic()
        if subprocess.run(argv, check=False).returncode != 0:
            failed.append(name)
        print(f"=== {name}: {time.monotonic() - started:.0f}s", flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
