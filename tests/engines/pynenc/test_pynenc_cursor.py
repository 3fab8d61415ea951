"""The finished-invocation cursor over the append-only history: seeded once, each new transition
counted once, nothing counted twice when the cursor restarts on another file at the same path."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from engines.pynenc.helpers import Daemon, Samples, by, computed_at, execute, expected, family

from exporter.engines.pynenc import tracking

V040 = "pynenc/pynenc-0.4.0-sample.db"
SEED = "seed_app_d000b1ab__"
HISTORY = f'"{SEED}state_backend_history"'
INVOCATIONS = f'"{SEED}orchestrator_invocations"'


def finish(db: Path, start: float, status: str = "success", task: str = "seed_tasks.add") -> str:
    """Run one of the invocations left registered to its end, writing what pynenc writes: a history
    row per transition and the orchestrator's current status."""
    conn = sqlite3.connect(db)
    try:
        [(invocation_id,)] = conn.execute(
            f"SELECT invocation_id FROM {INVOCATIONS} WHERE status = 'registered' AND task_id_key = ?", (task,)
        )
        for offset, step in ((0.0, "pending"), (0.25, "running"), (2.0, status)):
            record = {"invocation_id": invocation_id, "status_record": {"status": step, "runner_id": "r1"}}
            conn.execute(
                f"INSERT INTO {HISTORY} (invocation_id, history_timestamp, history_status, history_json) "
                "VALUES (?, ?, ?, ?)",
                (invocation_id, start + offset, step, json.dumps(record)),
            )
        conn.execute(
            f"UPDATE {INVOCATIONS} SET status = ?, status_runner_id = NULL, status_timestamp = ? "
            "WHERE invocation_id = ?",
            (status, start + 2.0, invocation_id),
        )
        conn.commit()
    finally:
        conn.close()
    return str(invocation_id)


def pynenc_only(samples: Samples) -> Samples:
    return {key: value for key, value in samples.items() if key[0].startswith(("pynenc_", "workflow_"))}


def finished(samples: Samples) -> dict[str, float]:
    return dict(by(samples, "pynenc_invocations_finished_total", "status", app="seed_app", task="seed_tasks.add"))


def add_durations(samples: Samples) -> tuple[float, float]:
    count = family(samples, "pynenc_invocation_run_duration_seconds_count", app="seed_app", task="seed_tasks.add")
    total = family(samples, "pynenc_invocation_run_duration_seconds_sum", app="seed_app", task="seed_tasks.add")
    return next(iter(count.values())), next(iter(total.values()))


def test_new_transitions_counted_once(fixture_copy) -> None:
    db = fixture_copy(V040)
    now = computed_at(V040)
    daemon = Daemon(db, now)
    seeded = daemon.expose()
    assert finished(seeded) == {"success": 7}
    assert pynenc_only(daemon.expose()) == pynenc_only(seeded)  # nothing new: nothing counted again
    finish(db, now.timestamp() + 1)
    daemon.clock.advance(10)
    after = daemon.expose()
    assert finished(after) == {"success": 8}
    count, total = add_durations(after)
    assert (count, total) == (add_durations(seeded)[0] + 1, pytest.approx(add_durations(seeded)[1] + 1.75))
    wait = family(after, "pynenc_invocation_queue_wait_seconds_count", app="seed_app", task="seed_tasks.add")
    assert sum(wait.values()) == count
    assert by(after, "pynenc_runs_finished_total", "status", app="seed_app")["success"] == 7
    assert by(after, "workflow_runs_finished_total", "phase")["succeeded"] == 7  # add(5,6) is top-level
    daemon.clock.advance(10)
    assert finished(daemon.expose()) == {"success": 8}


def test_failure_counted_with_its_exception_class(fixture_copy) -> None:
    db = fixture_copy(V040)
    now = computed_at(V040)
    daemon = Daemon(db, now)
    before = by(daemon.expose(), "pynenc_invocation_failures_total", "error", app="seed_app")
    invocation_id = finish(db, now.timestamp() + 1, status="failed", task="seed_tasks.divide")
    daemon.clock.advance(10)
    after = by(daemon.expose(), "pynenc_invocation_failures_total", "error", app="seed_app")
    assert after == before + Counter({"unknown": 1})  # no exception stored (yet): still counted
    error = json.dumps({"error_name": "ZeroDivisionError", "pynenc_error": False})
    execute(db, f'INSERT INTO "{SEED}state_backend_exceptions" VALUES (?, ?)', params=(invocation_id, error))
    daemon.clock.advance(10)
    assert by(daemon.expose(), "pynenc_invocation_failures_total", "error", app="seed_app") == after  # not again


def test_another_file_at_the_path_is_not_counted_again(fixture_copy, tmp_path: Path) -> None:
    db = fixture_copy(V040)
    now = computed_at(V040)
    daemon = Daemon(db, now)
    seeded = daemon.expose()
    twin = tmp_path / "twin.db"
    shutil.copyfile(db, twin)
    os.replace(twin, db)  # a new inode: the reader sees another file
    daemon.clock.advance(10)
    assert finished(daemon.expose()) == finished(seeded)
    finish(db, now.timestamp() + 11)
    daemon.clock.advance(10)
    assert finished(daemon.expose()) == {"success": 8}


def test_seed_in_small_batches_gives_the_same_totals(fixture_copy, monkeypatch: pytest.MonkeyPatch) -> None:
    db = fixture_copy(V040)
    whole = Daemon(db, computed_at(V040)).expose()
    monkeypatch.setattr(tracking, "BATCH", 2)
    batched = Daemon(db, computed_at(V040)).expose()
    names = ("pynenc_invocations_finished_total", "pynenc_invocation_retries_total", "pynenc_invocation_failures_total")
    for name in names:
        assert family(batched, name) == family(whole, name) != {}
    assert (
        by(batched, "pynenc_invocation_retries_total", "task", app="seed_app")
        == expected(V040)["apps"][0]["retries"]["retry_count_sum_by_task"]
    )


def test_a_bad_history_row_is_skipped_and_counted(fixture_copy) -> None:
    db = fixture_copy(V040)
    now = computed_at(V040)
    daemon = Daemon(db, now)
    daemon.expose()
    finish(db, now.timestamp() + 1)
    execute(db, f"UPDATE {HISTORY} SET history_timestamp = X'00' WHERE rowid = (SELECT MAX(rowid) FROM {HISTORY})")
    daemon.clock.advance(timedelta(seconds=10).total_seconds())
    samples = daemon.expose()
    assert finished(samples) == {"success": 8}  # counted; only its duration is lost
    key = frozenset({("table", f"{SEED}state_backend_history"), ("column", "history_timestamp")})
    assert family(samples, "state_exporter_bad_values_total")[key] == 1
