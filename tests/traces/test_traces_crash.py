"""Crash safety: a large replay, SIGKILLed at random points and restarted, loses nothing."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from traces.flujo_db import build_large, span_hex, stored_spans, trace_hex
from traces.receiver import Receiver

ROOT = Path(__file__).resolve().parents[2]
BATCH = 20
KILLS = 10


def replay_process(db: Path, state: Path, endpoint: str, log: Path) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "exporter.traces", "replay", "--db", str(db), "--state", str(state)]
    argv += ["--endpoint", endpoint, "--batch-size", str(BATCH), "--no-progress", "--log-level", "warning"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with log.open("ab") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def test_sigkill_during_replay_loses_nothing(tmp_path: Path) -> None:
    db = tmp_path / "flujo.db"
    total = build_large(db, 20_000)
    wanted = {(trace_hex(r["run_id"]), span_hex(r["run_id"], r["span_id"])) for r in stored_spans(db)}
    assert len(wanted) == total >= 20_000
    state, log = tmp_path / "state.sqlite", tmp_path / "replay.log"
    rng = random.Random(2026)
    kills = 0
    with Receiver(delay_s=0.003, record_details=False) as receiver:
        while kills < KILLS:
            before = receiver.received()
            proc = replay_process(db, state, receiver.grpc_endpoint, log)
            try:
                deadline = time.monotonic() + 30
                while receiver.received() == before and proc.poll() is None:  # wait until it is exporting
                    assert time.monotonic() < deadline, log.read_text()
                    time.sleep(0.005)
                time.sleep(rng.uniform(0.0, 0.15))
                if proc.poll() is not None:
                    break  # finished before the kill: the replay was too fast for this many kills
                os.kill(proc.pid, signal.SIGKILL)
                kills += 1
            finally:
                if proc.poll() is None:
                    proc.wait(10)
            assert proc.returncode == -signal.SIGKILL, log.read_text()
        assert kills == KILLS, f"replay completed after {kills} kills; slow the receiver down"
        final = replay_process(db, state, receiver.grpc_endpoint, log)
        assert final.wait(120) == 0, log.read_text()
        received = dict(receiver.keys)
    missing = wanted - set(received)
    duplicates = sum(received.values()) - len(received)
    print(
        f"\ncrash test: {total} stored spans, {kills} SIGKILLs, {len(received)} distinct received,"
        f" {sum(received.values())} received in total, {duplicates} duplicates"
        f" (bound {BATCH} x {kills} = {BATCH * kills}), {len(missing)} missing"
    )
    assert not missing
    assert set(received) == wanted
    assert duplicates <= BATCH * kills
    assert "complete" in log.read_text()
