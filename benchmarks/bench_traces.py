"""Benchmark of the span export: our replay vs the OpenTelemetry SDK's OTLPSpanExporter, same run, same receiver.

    .venv/bin/python benchmarks/bench_traces.py [--spans 500000] [--batch-size 512] [--rounds 3] [--rebuild]

* A 0.4.35-layout DB of ``--spans`` spans (runs of 2-6 spans with the attributes flujo writes, a quarter of
  the runs with a failed step) is built once and cached in ``benchmarks/.data/`` (git-ignored).
* A local OTLP/gRPC receiver runs in its own process: it decodes every request and counts the spans.
* **Ours**: ``python -m exporter.traces replay`` as a subprocess (fresh state file): DB reads, encoding,
  gRPC export and the state commits, end to end, timed from its start to the last span counted by the
  receiver (its interpreter start-up and imports excluded).  RSS = the subprocess's peak resident set
  (``VmHWM``, read by the subprocess itself at its end).
* **SDK**: ``OTLPSpanExporter`` (gRPC, same batch size) exporting the same number of spans, built from the
  same rows as ``ReadableSpan`` objects beforehand (building them is not timed; done in chunks of 50k to
  keep memory flat).  Only ``export()`` calls are timed.

Rounds alternate which side goes first (the machine may be shared); prints spans/s for both (medians),
the ratio (goal >= 1.2) and our peak RSS.  Exit status 1 when the ratio is under the goal.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent import futures
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(__file__).resolve().parent / ".data"
GENERATOR_VERSION = 1
FIXTURE_SCHEMA_DB = ROOT / "tests" / "fixtures" / "sample-small.db"
PIPELINES = [
    ("etl_daily", "1.4.0", ["extract", "transform", "load", "notify_team"]),
    ("llm_summarize", "2.1.0", ["fetch_docs", "summarize", "classify"]),
    ("approval_flow", "0.9.2", ["prepare", "human_approval", "apply"]),
    ("adhoc_query", "latest", ["run_query", "format"]),
    ("doc_ingest", "3.0.1", ["fetch", "embed", "index_docs", "publish", "audit_log"]),
]


# --- the DB ---------------------------------------------------------------------------------------


def build_db(path: Path, spans_wanted: int, seed: int = 42) -> int:
    """A DB with the 0.4.35 schema (taken from the real fixture) and ``spans_wanted`` spans."""
    rng = random.Random(seed)
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    src = sqlite3.connect(f"file:{FIXTURE_SCHEMA_DB}?mode=ro&immutable=1", uri=True)  # leaves no -wal/-shm
    ddl = [row[0] for row in src.execute("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL")]
    src.close()
    conn = sqlite3.connect(tmp)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = OFF")
    for statement in ddl:
        conn.execute(statement)
    start = 1_790_000_000.0
    total = run_no = 0
    runs: list[tuple[Any, ...]] = []
    spans: list[tuple[Any, ...]] = []
    while total < spans_wanted:
        name, version, steps = PIPELINES[run_no % len(PIPELINES)]
        run_id = f"run_{rng.getrandbits(128):032x}"
        t0 = start + run_no * 7.0
        failed = rng.random() < 0.25
        n_steps = min(len(steps), spans_wanted - total - 1) if spans_wanted - total > 1 else 0
        root_id = f"{rng.getrandbits(128):032x}"
        root_id = f"{root_id[:8]}-{root_id[8:12]}-{root_id[12:16]}-{root_id[16:20]}-{root_id[20:]}"
        spans.append(
            (root_id, run_id, None, "pipeline_root", t0, None, "running", json.dumps({"initial_input": f"{name} job"}))
        )
        t = t0
        for index, step in enumerate(steps[:n_steps]):
            latency = rng.uniform(0.05, 20.0)
            bad = failed and index == n_steps - 1
            attrs: dict[str, Any] = {
                "step_type": "Step",
                "step_input": f"{name} job #{rng.randint(0, 99999):05d}",
                "success": not bad,
                "attempts": 1 if not bad else 3,
                "latency_s": 0.0 if bad else latency,
                "cost_usd": round(rng.uniform(0, 0.02), 6),
                "token_counts": rng.randint(0, 5000),
            }
            if bad:
                attrs["feedback"] = "Agent execution failed with TimeoutError: model did not respond within 60s"
            sid = f"{rng.getrandbits(128):032x}"
            sid = f"{sid[:8]}-{sid[8:12]}-{sid[12:16]}-{sid[16:20]}-{sid[20:]}"
            spans.append(
                (sid, run_id, root_id, step, t, t + latency, "failed" if bad else "completed", json.dumps(attrs))
            )
            t += latency
        total += 1 + n_steps
        iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t0))
        end = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t + 0.01))
        runs.append((run_id, name, version, "failed" if failed else "completed", iso + ".000001", end + ".000001"))
        run_no += 1
        if len(spans) >= 50_000:
            _flush(conn, runs, spans)
    _flush(conn, runs, spans)
    conn.commit()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{tmp}{suffix}").unlink(missing_ok=True)
    tmp.rename(path)
    return total


def _flush(conn: sqlite3.Connection, runs: list[tuple[Any, ...]], spans: list[tuple[Any, ...]]) -> None:
    conn.executemany(
        "INSERT INTO runs (run_id, pipeline_name, pipeline_version, status, start_time, end_time, total_cost)"
        " VALUES (?, ?, ?, ?, ?, ?, 0.0)",
        runs,
    )
    conn.executemany(
        "INSERT INTO spans (span_id, run_id, parent_span_id, name, start_time, end_time, status, attributes,"
        " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, '2026-11-21 11:00:00')",
        spans,
    )
    runs.clear()
    spans.clear()


# --- the receiver (own process) ---------------------------------------------------------------------


def _receiver_main(port: int, counter: Synchronized[int], ready: Any) -> None:  # pragma: no cover - subprocess
    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    class Servicer(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request: Any, context: Any) -> Any:
            n = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
            with counter.get_lock():
                counter.value += n
            return ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Servicer(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    ready.set()
    server.wait_for_termination()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_count(counter: Synchronized[int], target: int, timeout: float = 600.0) -> float:
    deadline = time.monotonic() + timeout
    while counter.value < target:
        if time.monotonic() > deadline:
            raise TimeoutError(f"receiver got {counter.value} of {target} spans")
        time.sleep(0.002)
    return time.monotonic()


# --- ours ------------------------------------------------------------------------------------------


def run_ours(
    db: Path, port: int, counter: Synchronized[int], total: int, batch: int
) -> tuple[float, float, float, str]:
    """(spans/s, CPU seconds of the replay process, peak RSS bytes, replay's own summary line)."""
    with tempfile.TemporaryDirectory() as tmp:
        marker = Path(tmp) / "started"
        # Imports first; the clock starts (CLOCK_MONOTONIC is system-wide) when main() is entered.
        code = (
            "import sys, time, pathlib\n"
            "import exporter.traces.__main__ as m\n"
            "pathlib.Path(sys.argv[1]).write_text(repr(time.monotonic()))\n"
            "cpu = time.process_time()\n"
            "code = m.main(sys.argv[2:])\n"
            "cpu = time.process_time() - cpu\n"
            "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
            "pathlib.Path(sys.argv[1] + '.rss').write_text(hwm + ' ' + repr(cpu))\n"
            "sys.exit(code)\n"
        )
        argv = [sys.executable, "-c", code, str(marker), "replay", "--db", str(db), "--state", f"{tmp}/state.sqlite"]
        argv += ["--endpoint", f"http://127.0.0.1:{port}", "--batch-size", str(batch), "--no-progress"]
        before = counter.value
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        out, err = proc.communicate(timeout=1200)
        done = wait_count(counter, before + total)
        if proc.returncode != 0:
            raise RuntimeError(f"replay failed ({proc.returncode}):\n{err.decode()[-3000:]}")
        started = float(marker.read_text())
        peak_kib, cpu = (float(v) for v in Path(f"{marker}.rss").read_text().split())  # VmHWM after exec
    rate = total / (done - started)
    return rate, cpu, peak_kib * 1024.0, out.decode().strip()


# --- the SDK ---------------------------------------------------------------------------------------


def run_sdk(db: Path, port: int, counter: Synchronized[int], total: int, batch: int) -> tuple[float, float]:
    """(spans/s, CPU seconds of this process during the export calls)."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import SpanExportResult
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

    from exporter.traces import ids

    exporter = OTLPSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True)
    shared = Resource.create({"service.name": "flujo"})
    scope = InstrumentationScope("flujo-state-exporter", "0.1.0")
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    cursor = conn.execute(
        "SELECT run_id, span_id, parent_span_id, name, start_time, end_time, status, attributes FROM spans"
    )
    before = counter.value
    exported = 0
    timed = cpu = 0.0
    while True:
        rows = cursor.fetchmany(50_000)
        if not rows:
            break
        built = []
        for run_id, span_key, parent, name, start, end, status, attributes in rows:
            trace = int.from_bytes(ids.trace_id(run_id), "big")
            context = SpanContext(trace, int.from_bytes(ids.span_id(run_id, span_key), "big"), False, TraceFlags(1))
            parent_ctx = (
                SpanContext(trace, int.from_bytes(ids.span_id(run_id, parent), "big"), False) if parent else None
            )
            code = (
                StatusCode.OK if status == "completed" else StatusCode.ERROR if status == "failed" else StatusCode.UNSET
            )
            built.append(
                ReadableSpan(
                    name=name,
                    context=context,
                    parent=parent_ctx,
                    resource=shared,
                    attributes=json.loads(attributes),
                    kind=SpanKind.INTERNAL,
                    status=Status(code),
                    start_time=int(start * 1e9),
                    end_time=int((end if end is not None else start) * 1e9),
                    instrumentation_scope=scope,
                )
            )
        started, cpu_started = time.monotonic(), time.process_time()
        for i in range(0, len(built), batch):
            if exporter.export(built[i : i + batch]) is not SpanExportResult.SUCCESS:
                raise RuntimeError("SDK export failed")
        timed += time.monotonic() - started
        cpu += time.process_time() - cpu_started
        exported += len(built)
    wait_count(counter, before + exported)
    exporter.shutdown()
    assert exported == total
    return total / timed, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spans", type=int, default=500_000)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (the machine may be shared)")
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args()
    DATA_DIR.mkdir(exist_ok=True)
    db = DATA_DIR / f"traces-{args.spans}-v{GENERATOR_VERSION}.db"
    if args.rebuild or not db.exists():
        t0 = time.monotonic()
        print(f"building {db.name} ...", flush=True)
        build_db(db, args.spans)
        print(f"  built in {time.monotonic() - t0:.1f}s", flush=True)
    total = sqlite3.connect(f"file:{db}?mode=ro", uri=True).execute("SELECT COUNT(*) FROM spans").fetchone()[0]
    print(f"load average at start: {' '.join(Path('/proc/loadavg').read_text().split()[:3])} on {os.cpu_count()} CPUs")

    context = multiprocessing.get_context("spawn")
    counter = context.Value("q", 0)
    ready = context.Event()
    port = free_port()
    receiver = context.Process(target=_receiver_main, args=(port, counter, ready), daemon=True)
    receiver.start()
    ready.wait(30)
    ours: list[float] = []
    sdk: list[float] = []
    ours_cpu: list[float] = []
    sdk_cpu: list[float] = []
    rss = 0.0
    summary = ""
    try:
        for round_no in range(args.rounds):
            order = ("ours", "sdk") if round_no % 2 == 0 else ("sdk", "ours")
            for who in order:
                if who == "ours":
                    rate, cpu, peak, summary = run_ours(db, port, counter, total, args.batch_size)
                    ours.append(rate)
                    ours_cpu.append(cpu)
                    rss = max(rss, peak)
                else:
                    rate, cpu = run_sdk(db, port, counter, total, args.batch_size)
                    sdk.append(rate)
                    sdk_cpu.append(cpu)
            print(
                f"  round {round_no + 1}: ours {ours[-1]:,.0f}/s  SDK {sdk[-1]:,.0f}/s  ratio {ours[-1] / sdk[-1]:.2f}x"
                f"  (load {Path('/proc/loadavg').read_text().split()[0]})",
                flush=True,
            )
    finally:
        receiver.terminate()
        receiver.join(10)
    ours_median, sdk_median = statistics.median(ours), statistics.median(sdk)
    ratio = statistics.median(o / s for o, s in zip(ours, sdk, strict=True))
    ours_us = statistics.median(ours_cpu) / total * 1e6
    sdk_us = statistics.median(sdk_cpu) / total * 1e6
    print(f"spans: {total:,}  batch size: {args.batch_size}  receiver: OTLP/gRPC on 127.0.0.1 (own process)")
    print(f"  ours (replay, DB -> OTLP/gRPC, end to end): {ours_median:>10,.0f} spans/s (median of {len(ours)})")
    print(f"  SDK OTLPSpanExporter (pre-built spans):     {sdk_median:>10,.0f} spans/s (median of {len(sdk)})")
    print(f"  ratio ours/SDK: {ratio:.2f}x median per round (goal >= 1.2x); best vs best {max(ours) / max(sdk):.2f}x")
    print(f"  CPU per span: ours {ours_us:.1f} us (DB read included), SDK {sdk_us:.1f} us -> {sdk_us / ours_us:.2f}x")
    print(f"  our peak RSS: {rss / 2**20:.1f} MiB")
    print(f"  replay said: {summary}")
    return 0 if ratio >= 1.2 else 1


if __name__ == "__main__":
    sys.exit(main())
