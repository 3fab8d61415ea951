"""``replay``: filters, resumption, completion, the command line."""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support import LEGACY, SMALL, SMALL06, expected
from traces.conftest import make_config
from traces.flujo_db import FlujoWriter, Span, new_span_id, span_hex, stored_spans, trace_hex
from traces.receiver import Receiver

from exporter.reader import StateReader
from exporter.timeparse import parse_instant
from exporter.traces import replay
from exporter.traces.__main__ import main


def reader(db: Path) -> StateReader:
    return StateReader(db, naive_timezone=UTC)


def all_keys(db: Path, run_ids: set[str] | None = None) -> set[tuple[str, str]]:
    return {
        (trace_hex(row["run_id"]), span_hex(row["run_id"], row["span_id"]))
        for row in stored_spans(db)
        if run_ids is None or row["run_id"] in run_ids
    }


def test_filters_by_run_start_and_run_id(fixture_copy, tmp_path: Path, receiver: Receiver) -> None:
    db = fixture_copy(SMALL)
    conn = sqlite3.connect(db)
    starts = {r: parse_instant(s) for r, s in conn.execute("SELECT run_id, start_time FROM runs")}
    conn.close()
    since, until = datetime(2026, 11, 20, tzinfo=UTC), datetime(2026, 11, 21, 6, tzinfo=UTC)
    chosen = {r for r, s in starts.items() if s is not None and since <= s < until}
    assert 5 < len(chosen) < 50
    config = make_config(receiver)
    result = replay(config, reader(db), tmp_path / "state.sqlite", since=since, until=until)
    assert result.complete and not result.resumed
    assert set(receiver.keys) == all_keys(db, chosen) and result.spans_exported == len(all_keys(db, chosen))
    assert result.runs == len(chosen)

    receiver.clear()
    one = "run_4737819096da1dac72ff5d2a386ecbe0"
    result = replay(config, reader(db), tmp_path / "state.sqlite", run_id=one)
    assert set(receiver.keys) == all_keys(db, {one}) and result.runs == 1


def test_replay_of_06_fixture_sends_what_the_tailer_sends(fixture_copy, tmp_path: Path, receiver: Receiver) -> None:
    db = fixture_copy(SMALL06)
    result = replay(make_config(receiver, "http/protobuf"), reader(db), tmp_path / "state.sqlite", progress=True)
    assert result.complete and result.spans_exported == expected(SMALL06)["spans_total_via_get_spans"]
    assert set(receiver.keys) == all_keys(db)
    roots = {s.trace_id: s for s in receiver.spans if not s.parent_span_id}
    for run in expected(SMALL06)["per_run"]:
        if run.get("root_span_start_wall_utc_truth"):
            truth = datetime.fromisoformat(run["root_span_start_wall_utc_truth"]).timestamp()
            root = roots[trace_hex(run["run_id"])]
            bound = root.attributes["flujo.exporter.clock_error_bound_s"]
            assert abs(root.start_ns / 1e9 - truth) <= bound + 1e-6 and bound <= 0.002


def build_db(path: Path, runs: int, big_run_spans: int = 700) -> int:
    """Finished runs of 4 spans, and one run with ``big_run_spans`` spans in the middle (read page by page)."""
    rng = random.Random(9)
    w = FlujoWriter(path)
    base = datetime(2026, 11, 1, tzinfo=UTC)
    total = 0
    for i in range(runs):
        run_id = f"run_{i:05d}"
        start = base + timedelta(minutes=i)
        w.start_run(run_id, start)
        t = start.timestamp()
        root = Span(new_span_id(rng), "pipeline_root", t, t + 50, "completed")
        count = big_run_spans if i == runs // 2 else 3
        spans = [root] + [
            Span(new_span_id(rng), f"step{j}", t + j, t + j + 0.5, "completed", root.span_id, {"j": j})
            for j in range(count)
        ]
        w.save_spans(run_id, spans)
        w.finish_run(run_id, "completed", start + timedelta(seconds=51))
        total += len(spans)
    w.close()
    return total


def test_interrupted_replay_resumes_where_it_stopped(tmp_path: Path) -> None:
    db = tmp_path / "flujo.db"
    total = build_db(db, 600)
    state = tmp_path / "state.sqlite"
    with Receiver(delay_s=0.002) as slow:
        config = make_config(slow, batch_size=50)
        halt = threading.Event()

        def stop_midway() -> None:
            while slow.received() < total // 2:
                time.sleep(0.005)
            halt.set()

        watcher = threading.Thread(target=stop_midway)
        watcher.start()
        first = replay(config, reader(db), state, halt=halt)
        watcher.join()
        assert not first.complete and 0 < first.spans_exported < total
        second = replay(config, reader(db), state)
        assert second.complete and second.resumed
        assert second.total_exported >= total
        assert set(slow.keys) == all_keys(db)
        duplicates = sum(slow.keys.values()) - len(slow.keys)
        assert duplicates <= 50, "at most the batch in flight is sent twice"
        print(f"replay interrupted after {first.spans_exported}, resumed: {second.spans_exported}, dup {duplicates}")

        slow.clear()
        third = replay(config, reader(db), state)
        assert third.complete and third.spans_exported == 0 and slow.requests == 0, "a finished replay is done"
        fourth = replay(config, reader(db), state, restart=True)
        assert fourth.complete and fourth.spans_exported == total


def test_legacy_layout(fixture_copy, tmp_path: Path, receiver: Receiver) -> None:
    result = replay(make_config(receiver), reader(fixture_copy(LEGACY)), tmp_path / "state.sqlite")
    assert result.complete and not result.supported and receiver.requests == 0


def test_command_line(fixture_copy, tmp_path: Path, receiver: Receiver, capsys: pytest.CaptureFixture[str]) -> None:
    db = fixture_copy(SMALL)
    base = ["--db", str(db), "--state", str(tmp_path / "state.sqlite"), "--endpoint", receiver.grpc_endpoint]
    assert main(["replay", *base, "--no-progress", "--since", "2026-11-21T00:00:00", "--batch-size", "16"]) == 0
    out = capsys.readouterr().out
    assert "complete" in out and receiver.received() > 0
    assert main(["replay", *base, "--since", "whenever"]) == 2
    assert "neither an ISO-8601 time nor a duration" in capsys.readouterr().err
    assert main(["replay", *base, "--header", "novalue"]) == 2
    receiver.clear()
    http = ["--db", str(db), "--state", str(tmp_path / "tail.sqlite"), "--endpoint", receiver.http_endpoint]
    assert main(["tail", *http, "--protocol", "http/protobuf", "--once", "--settle-period", "0s"]) == 0
    assert receiver.received() > 0 and "tail: CycleReport" in capsys.readouterr().out


def test_state_exporter_replay_defaults_its_state_file_and_names_itself(fixture_copy, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    db = fixture_copy(SMALL)
    env = {**os.environ, "STATE_DIRECTORY": str(tmp_path / "state-dir")}
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    command = [sys.executable, "-m", "exporter", "replay"]
    shown = subprocess.run([*command, "--help"], capture_output=True, text=True, env=env, timeout=60)
    assert shown.returncode == 0 and shown.stdout.startswith("usage: state-exporter replay ")
    assert "python -m exporter.traces" not in shown.stdout
    with Receiver() as live:
        argv = [*command, "--db", str(db), "--endpoint", live.grpc_endpoint, "--insecure", "--no-progress"]
        done = subprocess.run([*argv, "--timezone", "UTC"], capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0, done.stderr
        assert live.received() == len(stored_spans(db))
    made = list((tmp_path / "state-dir").glob("*.sqlite"))
    assert len(made) == 1 and made[0].name.startswith(f"traces-{db.stem}-")
    assert f"state file {made[0]}" in done.stderr  # says where it is
    again = subprocess.run([*argv, "--timezone", "UTC"], capture_output=True, text=True, env=env, timeout=120)
    assert again.returncode == 0 and ": complete; 0 spans exported" in again.stdout  # the same file: known done
    assert list((tmp_path / "state-dir").glob("*.sqlite")) == made
