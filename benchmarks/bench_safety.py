"""Benchmark (long stress run): can the daemon corrupt or mis-read a Flujo DB that is being written?

    .venv/bin/python benchmarks/bench_safety.py [--seconds 120] [--seed-runs 20000] [--kills 6]
        [--writers 2] [--restart-every 0.5] [--case per_write-0.4.35-wal ...] [--dir DIR] [--keep]

The long variant of tests/stress/test_data_safety.py, with the same harness (tests/stress/harness.py):
for each case (writer pattern x journal mode) it seeds ``--seed-runs`` old runs, runs the application
writers for ``--seconds`` against the real daemon with every component on (refresh 1 s, span export to
a real OTLP receiver, cleanup deleting the seeded rows and then the writers' rows a few seconds
after they are written, stale-task job, stuck alerts to a webhook, /metrics and /readyz pollers),
SIGKILLs the daemon ``--kills`` times, then prints:

* ``PRAGMA integrity_check`` of the DB once every process is gone (must be ``ok``);
* the app's sqlite errors by kind (``malformed`` must be 0; ``locked`` calls flujo would have retried);
* the daemon's corrupt reads (``state_exporter_query_errors_total{reason="corrupt"}``, must be 0) and
  log lines about corruption;
* scrape invariant violations (counters decreasing, bad values, labels or counts nobody wrote);
* what every component did (rows deleted by cleanup, stale tasks failed, alerts, spans exported).

Exit status 1 when any case had a problem.  Work files go to ``--dir`` (default: a temporary
directory, removed unless ``--keep``).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from stress.harness import StressSettings, run_stress

CASES = {
    settings.name: settings
    for settings in (
        StressSettings("0.4.35", "per_write", "wal"),
        StressSettings("0.4.35", "per_write", "delete"),
        StressSettings("0.6", "pooled", "wal", writers=1),
        StressSettings("0.6", "pooled", "delete", writers=1),
    )
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=120.0, help="how long the writers write, per case")
    parser.add_argument("--seed-runs", type=int, default=20_000, help="old runs seeded before the start")
    parser.add_argument("--kills", type=int, default=6, help="SIGKILLs of the daemon per case")
    parser.add_argument("--writers", type=int, default=None, help="writer processes (default: 2 per_write, 1 pooled)")
    parser.add_argument("--restart-every", type=float, default=0.5, help="pooled writers re-open their pool (s)")
    parser.add_argument("--case", action="append", choices=sorted(CASES), help="run only these cases")
    parser.add_argument("--dir", type=Path, default=None, help="work directory (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the work files")
    args = parser.parse_args()

    work = args.dir or Path(tempfile.mkdtemp(prefix="bench-safety-"))
    failed = []
    started = time.monotonic()
    try:
        for name in args.case or list(CASES):
            settings = replace(
                CASES[name],
                seconds=args.seconds,
                seed_runs=args.seed_runs,
                kills=args.kills,
                restart_every=args.restart_every,
                writers=args.writers or CASES[name].writers,
            )
            report = run_stress(work / name, settings)
            problems = report.problems()
            inactive = report.inactive()
            print(report.summary())
            print(f"  => {'OK' if not problems and not inactive else 'FAIL'}: {len(problems)} problems", end="")
            print(f", inactive: {inactive}" if inactive else "")
            for problem in problems[:10]:
                print(f"     - {problem[:400]}")
            sys.stdout.flush()
            if problems or inactive:
                failed.append(name)
    finally:
        if args.dir is None and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\n{len(failed)} of {len(args.case or CASES)} cases failed {failed} in {time.monotonic() - started:.0f}s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
