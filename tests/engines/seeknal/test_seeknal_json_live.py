"""A real daemon following a seeknal ``target/`` directory while a writer saves runs into it exactly
as seeknal 2.13.0's ``save_state`` does: copy the current ``run_state.json`` to
``run_state.json.bak.<new run_id>`` (``shutil.copy2``), write ``run_state.tmp``, rename it over
``run_state.json``.  Each run is counted once and exported once (its trace, to a real OTLP receiver,
across a restart of the daemon too); a truncated file keeps the daemon up with the last good values
and /readyz says why; the daemon creates nothing in the directory."""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path

from processes import http_get, running_daemon
from support import FIXTURES, parse_exposition, wait_for
from traces.receiver import Receiver

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
TARGET = FIXTURES / "seeknal" / "seeknal-2.13.0-sample.target"
# The sample's three runs, oldest first: each backup holds the run that the next one replaced.
RUNS = (
    TARGET / "run_state.json.bak.20261205_090130",  # 20261204_080123: failed
    TARGET / "run_state.json.bak.20261205_100136",  # 20261205_090130: failed
    TARGET / "run_state.json",  # 20261205_100136: success
)
NEXT_RUN_IDS = ("20261205_090130", "20261205_100136")
RUN_IDS = ("20261204_080123", *NEXT_RUN_IDS)  # the run inside each of RUNS
SPANS = (4, 3, 4)  # each run's span and one per node it executed (the second carries one row over)
CONFIG = (
    "metrics:\n  refresh_interval: 1s\n  counts_interval: 1s\n  aggregate_interval: 1s\n"
    "db:\n  writer_timezone: Europe/Berlin\n"
    "web:\n  readyz_detail: full\n"
)


def traced(receiver: Receiver, state: Path) -> str:
    return CONFIG + (
        f"traces:\n  enabled: true\n  endpoint: {receiver.grpc_endpoint}\n  tls: {{insecure: true}}\n"
        f"  poll_interval: 200ms\n  settle_period: 0s\n  state_file: {state}\n"
    )


def trace_hex(run_id: str) -> str:
    return hashlib.sha256(b"seeknal-trace:" + run_id.encode()).digest()[:16].hex()


def save_state(target: Path, content: bytes, run_id: str | None) -> None:
    """seeknal.workflow.state.save_state: backup (named after the new run), temp file, atomic rename.
    ``run_id`` None: no backup (the first save, or rewriting the same run)."""
    main = target / "run_state.json"
    if main.exists() and run_id is not None:
        shutil.copy2(main, target / f"run_state.json.bak.{run_id}")
    temp = main.with_suffix(".tmp")
    temp.write_bytes(content)
    temp.replace(main)


def metrics(url: str) -> Samples:
    status, body = http_get(url + "/metrics")
    assert status == 200
    return parse_exposition(body)


def values(samples: Samples, name: str, label: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for (sample, labels), value in samples.items():
        if sample == name:
            key = dict(labels)[label]
            found[key] = found.get(key, 0) + value
    return found


def runs_and_executions(url: str) -> tuple[dict[str, float], float]:
    m = metrics(url)
    return values(m, "seeknal_runs", "status"), sum(values(m, "seeknal_node_executions_total", "node").values())


def traces_by_run(receiver: Receiver) -> dict[str, int]:
    """Spans received per run (trace), each (trace, span) counted as often as it arrived."""
    runs = {trace_hex(run_id): run_id for run_id in RUN_IDS}
    found: dict[str, int] = {}
    for (trace, _), times in receiver.keys.items():
        found[runs.get(trace, trace)] = found.get(runs.get(trace, trace), 0) + times
    return found


def test_runs_saved_while_the_daemon_runs_are_counted_and_exported_once(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.mkdir()
    save_state(target, RUNS[0].read_bytes(), None)
    receiver = Receiver().start()
    state = tmp_path / "traces-state.sqlite"
    try:
        _saved_while_running(tmp_path, target, receiver, state)
        # A restart on the same state file: a whole cycle later, nothing was sent again.
        with running_daemon(tmp_path, "--db", str(target), config=traced(receiver, state)) as daemon:
            started = time.time()
            wait_for(
                lambda: (
                    metrics(daemon.url).get(("state_exporter_span_watermark_timestamp_seconds", frozenset()), 0)
                    > started
                ),
                20,
                "a whole span-export cycle after the restart",
            )
            assert metrics(daemon.url)[("state_exporter_span_backlog_runs", frozenset())] == 0
        assert traces_by_run(receiver) == dict(zip(RUN_IDS, SPANS, strict=True))
        assert set(receiver.keys.values()) == {1}, "each span once"
    finally:
        receiver.stop()
    # The writer's files only: no -wal, -shm, lock or temp file from the daemon.
    assert sorted(p.name for p in target.iterdir()) == sorted(p.name for p in TARGET.iterdir())
    for name in ("run_state.json", *(f"run_state.json.bak.{run_id}" for run_id in NEXT_RUN_IDS)):
        assert (target / name).read_bytes() == (TARGET / name).read_bytes()


def _saved_while_running(tmp_path: Path, target: Path, receiver: Receiver, state: Path) -> None:
    with running_daemon(tmp_path, "--db", str(target), config=traced(receiver, state)) as daemon:
        # executions: the first run's 3, the second's 2 (one row carried over), the third's 3.
        expected = [
            ({"failed": 1, "running": 0, "success": 0}, 3.0),
            ({"failed": 2, "running": 0, "success": 0}, 5.0),
            ({"failed": 2, "running": 0, "success": 1}, 8.0),
        ]
        for step, (runs, executions) in enumerate(expected):
            if step:
                save_state(target, RUNS[step].read_bytes(), NEXT_RUN_IDS[step - 1])
            wait_for(
                lambda runs=runs, executions=executions: runs_and_executions(daemon.url) == (runs, executions),
                20,
                lambda step=step: f"step {step}: {runs_and_executions(daemon.url)}",
            )
            # Its trace arrives whole, and the earlier runs' (now in backups) do not come again.
            sent = dict(zip(RUN_IDS[: step + 1], SPANS[: step + 1], strict=True))
            wait_for(
                lambda sent=sent: traces_by_run(receiver) == sent, 20, lambda: f"traces: {traces_by_run(receiver)}"
            )
        assert http_get(daemon.url + "/readyz")[0] == 200
        taken = ("state_exporter_snapshot_timestamp_seconds", frozenset())
        first = metrics(daemon.url)
        assert first[("state_exporter_db_ready", frozenset())] == 1
        # Later refreshes over the same files count nothing again.
        wait_for(lambda: metrics(daemon.url)[taken] > first[taken], 10, "another refresh")
        assert runs_and_executions(daemon.url) == expected[-1]

        # A crash mid-write (not seeknal's own atomic path): the daemon keeps the last good values.
        good = {k: v for k, v in metrics(daemon.url).items() if k[0].startswith("seeknal_")}
        content = (target / "run_state.json").read_bytes()
        (target / "run_state.json").write_bytes(content[: len(content) // 3])
        _, body = wait_for(
            lambda: (answer := http_get(daemon.url + "/readyz"))[0] == 503 and answer,
            20,
            "/readyz to say the file is truncated",
        )
        assert body.startswith("corrupt: ") and "run_state.json: not valid JSON" in body
        m = metrics(daemon.url)
        assert {k: v for k, v in m.items() if k[0].startswith("seeknal_")} == good
        assert m[("state_exporter_query_errors_total", frozenset({("reason", "corrupt")}))] >= 1
        assert http_get(daemon.url + "/healthz")[0] == 200
        save_state(target, content, None)  # the same run written whole again
        wait_for(lambda: http_get(daemon.url + "/readyz")[0] == 200, 20, "/readyz to recover")
        assert runs_and_executions(daemon.url) == expected[-1]
