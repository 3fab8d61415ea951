"""The finish tracker on bad rows (skipped and reported, never raising) and on a DB file replaced
under it (the watermarks move back; no double count; new runs count again)."""

from __future__ import annotations

import logging
import os
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from flujo_writes import Flujo0435Run
from support import FIXTURES, SMALL, SMALL06, computed_at
from test_tracking import Observer

from exporter.engines.flujo.tracking import MAX_UNKNOWN_STATUSES
from exporter.labels import OTHER

NOW = computed_at(SMALL)
RUN_COLUMNS = "run_id, pipeline_name, pipeline_version, status, start_time, end_time"


def insert_runs(db: Path, rows: list[tuple[object, ...]]) -> None:
    conn = sqlite3.connect(db)
    conn.executemany(f"INSERT INTO runs ({RUN_COLUMNS}) VALUES (?, ?, '1', ?, ?, ?)", rows)
    conn.commit()
    conn.close()


def bad_runs() -> list[tuple[object, ...]]:
    ok_start, ok_end = "2026-11-21T10:00:00", "2026-11-21T10:00:30"
    return [
        ("run_blob_pipeline", b"etl", "completed", ok_start, ok_end),
        ("run_blob_status", "etl_daily", b"completed", ok_start, ok_end),
        ("run_bad_utf8_pipeline", "etl\udcff", "completed", ok_start, ok_end),  # stored as invalid UTF-8
        ("run_long_pipeline", "p" * 300, "failed", ok_start, ok_end),
        # bad times: counted (the status is valid), duration unknown
        ("run_overflow_end", "etl_daily", "failed", ok_start, "9999-12-31T23:59:59-05:00"),
        ("run_underflow_start", "etl_daily", "failed", "0001-01-01T00:00:00+05:00", ok_end),
        ("run_garbage_end", "etl_daily", "failed", ok_start, "yesterday"),
    ]


def store_invalid_utf8(db: Path) -> None:
    """Python cannot bind invalid UTF-8 as text: rewrite the marker in SQL (CAST of the raw bytes)."""
    conn = sqlite3.connect(db)
    conn.execute("UPDATE runs SET pipeline_name = CAST(x'657463ff' AS TEXT) WHERE run_id = 'run_bad_utf8_pipeline'")
    conn.commit()
    conn.close()


def write_bad_runs(db: Path) -> None:
    rows = bad_runs()
    rows[2] = ("run_bad_utf8_pipeline", "placeholder", "completed", rows[2][3], rows[2][4])
    insert_runs(db, rows)
    store_invalid_utf8(db)


EXPECTED_BAD = {
    ("runs", "pipeline_name"): 3,  # BLOB, invalid UTF-8, 300 chars
    ("runs", "status"): 1,  # BLOB (a number in these TEXT columns is stored as text: a valid label)
    ("runs", "end_time"): 2,  # year 9999 at -05:00 overflows, 'yesterday'
    ("runs", "start_time"): 1,  # year 1 at +05:00 underflows
}


def bad_counts(found: tuple[object, ...]) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = {}
    for bad in found:
        key = (bad.table, bad.column)  # type: ignore[attr-defined]
        counts[key] = counts.get(key, 0) + 1
    return counts


def test_bad_rows_after_the_seed_are_skipped_and_reported(fixture_copy) -> None:
    db = fixture_copy(SMALL)
    seen = Observer(db, NOW)
    assert seen.tracker.take_bad_values() == ()
    before = seen.runs("etl_daily")
    write_bad_runs(db)
    seen.refresh()
    assert bad_counts(seen.tracker.take_bad_values()) == EXPECTED_BAD
    assert seen.tracker.take_bad_values() == ()  # taken once
    # the three rows with bad times but a valid status count; no bad label became a series
    assert seen.runs("etl_daily") == {**before, "failed": before["failed"] + 3}
    labels = {label for key in seen.tracker.totals().runs for label in key}
    assert all(isinstance(label, str) and len(label) <= 200 and label.isprintable() for label in labels)
    seen.refresh()
    assert seen.tracker.take_bad_values() == ()  # each row reported once


def test_bad_rows_present_at_seed_are_skipped_and_reported(fixture_copy) -> None:
    db = fixture_copy(SMALL)
    write_bad_runs(db)
    seen = Observer(db, NOW)
    found = bad_counts(seen.tracker.take_bad_values())
    # the seed's GROUP BY reads no times: label columns only (times inside the duration window too)
    assert found[("runs", "pipeline_name")] == 3 and found[("runs", "status")] == 1
    assert seen.runs("etl_daily")["failed"] == 5 + 3


def test_null_labels_are_skipped_and_reported(fixture_copy) -> None:
    """flujo declares them NOT NULL; a table rebuilt without the constraint (or a hand-made DB) can hold NULL."""
    db = fixture_copy(SMALL)
    conn = sqlite3.connect(db)
    conn.executescript(
        "CREATE TABLE runs_copy AS SELECT * FROM runs; DROP TABLE runs; ALTER TABLE runs_copy RENAME TO runs;"
        "CREATE INDEX idx_runs_status ON runs(status);"
    )
    conn.close()
    seen = Observer(db, NOW)
    total = sum(seen.tracker.totals().runs.values())
    insert_runs(
        db,
        [
            ("run_null_pipeline", None, "completed", "2026-11-21T10:00:00", "2026-11-21T10:00:01"),
            ("run_null_status", "etl_daily", None, "2026-11-21T10:00:00", "2026-11-21T10:00:01"),
            ("run_null_end", "etl_daily", "failed", "2026-11-21T10:00:00", None),
        ],
    )
    seen.refresh()
    assert bad_counts(seen.tracker.take_bad_values()) == {("runs", "pipeline_name"): 1, ("runs", "status"): 1}
    assert sum(seen.tracker.totals().runs.values()) == total + 1  # NULL end: counted, no duration


def test_bad_step_rows_are_skipped_and_reported(fixture_copy) -> None:
    db = fixture_copy(SMALL)
    seen = Observer(db, NOW)
    steps_before = sum(seen.tracker.totals().steps.values())
    conn = sqlite3.connect(db)
    columns = "step_run_id, run_id, step_name, step_index, status, start_time, end_time, duration_ms"
    conn.executemany(
        f"INSERT INTO steps ({columns}) VALUES (?, 'run_x', ?, 0, ?, ?, ?, ?)",
        [
            ("a:0", b"prepare", "completed", "2026-11-21T10:00:00", "2026-11-21T10:00:00", 5),
            ("b:0", "prepare", "completed", "2026-11-21T10:00:00", "2026-11-21T10:00:00", "abc"),
            ("c:0", "prepare", "completed", "+99999-01-01", "2026-11-21T10:00:00", 5),
            ("d:0", "prepare", "placeholder", "2026-11-21T10:00:00", "2026-11-21T10:00:00", 5),
        ],
    )
    conn.execute("UPDATE steps SET status = CAST(x'6661696cff' AS TEXT) WHERE step_run_id = 'd:0'")
    conn.commit()
    conn.close()
    seen.refresh()
    found = bad_counts(seen.tracker.take_bad_values())
    assert found == {
        ("steps", "step_name"): 1,
        ("steps", "duration_ms"): 1,
        ("steps", "start_time"): 1,
        ("steps", "status"): 1,
    }
    assert sum(seen.tracker.totals().steps.values()) == steps_before + 2  # bad duration/time: still counted


def test_unknown_statuses_are_capped_known_ones_kept(fixture_copy) -> None:
    db = fixture_copy(SMALL06)
    seen = Observer(db, computed_at(SMALL06))
    conn = sqlite3.connect(db)
    at = "2026-11-21T10:00:00+00:00"
    conn.executemany(
        "INSERT INTO runs (run_id, pipeline_id, pipeline_name, pipeline_version, status, created_at, updated_at)"
        " VALUES (?, 'p', 'etl_daily', '1', ?, ?, ?)",
        [(f"run_weird_{i}", f"weird_{i}", at, at) for i in range(MAX_UNKNOWN_STATUSES + 30)]
        + [("run_plain_failed", "failed", at, at)],
    )
    conn.executemany(
        "INSERT INTO steps (run_id, step_name, step_index, status, created_at) VALUES ('r', 'fetch', 0, ?, ?)",
        [(f"odd_{i}", at) for i in range(MAX_UNKNOWN_STATUSES + 30)],
    )
    conn.commit()
    conn.close()
    seen.refresh()
    run_statuses = {status for _, status in seen.tracker.totals().runs}
    assert {"completed", "failed", "cancelled"} <= run_statuses
    assert len(run_statuses - {"completed", "failed", "cancelled", OTHER}) == MAX_UNKNOWN_STATUSES
    assert seen.tracker.totals().runs[("etl_daily", OTHER)] == 30
    step_statuses = {status for _, status in seen.tracker.totals().steps}
    assert len(step_statuses - {"completed", "failed", OTHER}) == MAX_UNKNOWN_STATUSES and OTHER in step_statuses


# --- the DB file replaced under the daemon ---------------------------------------------------------------


def fresh_0435_db(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.executescript((FIXTURES / "schemas" / "v0.4.35.sql").read_text())
    conn.execute("PRAGMA journal_mode = WAL")
    conn.close()


def complete_runs(db: Path, n: int, started: datetime) -> None:
    for i in range(n):
        run = Flujo0435Run(db, started + timedelta(seconds=i), pipeline="etl_daily")
        run.save_run_start()
        run.save_state("running", 0, run.started)
        run.save_state("completed", 3, run.started + timedelta(seconds=2))
        run.save_run_end("completed", run.started + timedelta(seconds=2))


def remove_db(db: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)


def total(seen: Observer) -> int:
    return sum(seen.tracker.totals().runs.values())


def test_deleted_and_recreated_file_counts_new_runs(fixture_copy, caplog: pytest.LogCaptureFixture) -> None:
    db = fixture_copy(SMALL)
    seen = Observer(db, NOW)
    seeded = total(seen)
    remove_db(db)
    fresh_0435_db(db)
    with caplog.at_level(logging.WARNING, logger="exporter.engines.flujo.tracking"):
        seen.refresh()
        seen.refresh()
    assert total(seen) == seeded  # never lower
    warnings = [r.getMessage().split(":")[0] for r in caplog.records if "watermark" in r.getMessage()]
    assert sorted(warnings) == ["runs", "steps"]  # logged once per table, not per refresh
    complete_runs(db, 20, NOW)
    seen.refresh()
    assert total(seen) == seeded + 20


def test_atomic_rename_swap_does_not_recount_the_copy(fixture_copy, tmp_path: Path) -> None:
    db = fixture_copy(SMALL)
    seen = Observer(db, NOW)
    seeded = total(seen)
    swapped = tmp_path / "swap.db"
    fresh_0435_db(swapped)
    complete_runs(swapped, 5, NOW - timedelta(days=1))  # history of the swapped-in file
    os.replace(swapped, db)
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    seen.refresh()
    assert total(seen) == seeded  # the copy's 5 finished runs are history: not added
    complete_runs(db, 20, NOW)
    seen.refresh()
    assert total(seen) == seeded + 20


def test_replaced_file_keeps_following_its_unfinished_runs(fixture_copy, tmp_path: Path) -> None:
    """A run still running in the swapped-in file is counted when it ends."""
    db = fixture_copy(SMALL)
    seen = Observer(db, NOW)
    seeded = total(seen)
    swapped = tmp_path / "swap.db"
    fresh_0435_db(swapped)
    run = Flujo0435Run(swapped, NOW, pipeline="etl_daily")
    run.save_run_start()
    run.save_state("running", 0, NOW)
    os.replace(swapped, db)
    run.db = db
    seen.refresh()
    run.save_state("failed", 1, NOW + timedelta(seconds=5))
    run.save_run_end("failed", NOW + timedelta(seconds=5))
    seen.refresh()
    assert total(seen) == seeded + 1
    assert seen.runs("etl_daily")["failed"] == 5 + 1


def test_legacy_layout_has_no_run_counters(fixture_copy) -> None:
    seen = Observer(fixture_copy("sample-v0.4.32-legacy.db"), datetime(2026, 11, 21, tzinfo=UTC))
    assert seen.tracker.seeded and not seen.tracker.totals().runs and seen.tracker.take_bad_values() == ()
