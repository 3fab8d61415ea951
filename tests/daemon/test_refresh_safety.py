"""The refresh never dies and never lies: bad values, faults, corrupt or swapped files, staleness."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import sqlite3
from datetime import timedelta, tzinfo
from pathlib import Path

import pytest
from support import SMALL, SMALL06, computed_at

from exporter.clock import ManualClock
from exporter.config import MetricsConfig
from exporter.engines.flujo.stats import FlujoStats
from exporter.reader import Problem, StateReader
from exporter.readiness import Readiness
from exporter.refresh import COUNTS, SNAPSHOT, WATERMARKS, Refresher
from exporter.timeparse import UTC, resolve_timezone


def refresher(db: Path, clock: ManualClock, tz: tzinfo = UTC, **settings: object) -> Refresher:
    metrics = MetricsConfig(**settings)  # type: ignore[arg-type]
    return Refresher(StateReader(db, naive_timezone=tz), lambda: metrics, clock)


def execute(db: Path, *statements: str) -> None:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        for sql in statements:
            conn.execute(sql)
        conn.commit()


@pytest.mark.parametrize("name", [SMALL, SMALL06])
@pytest.mark.parametrize(
    ("value", "zone"),
    [
        ("9999-12-31T23:59:59-05:00", "UTC"),
        ("0001-01-01T00:00:00+05:00", "UTC"),
        ("9999-12-31T23:59:59", "America/New_York"),  # naive, written in a western zone
        ("0001-01-01T00:00:00", "Asia/Tokyo"),  # naive, written in an eastern zone
        ("1e400", "UTC"),
    ],
)
def test_overflowing_timestamps_are_bad_values_and_every_phase_succeeds(
    fixture_copy, name: str, value: str, zone: str
) -> None:
    db = fixture_copy(name)
    execute(
        db,
        f"UPDATE workflow_state SET created_at = '{value}', updated_at = '{value}'"
        " WHERE rowid IN (SELECT rowid FROM workflow_state WHERE status IN ('running', 'failed'))",
    )
    clock = ManualClock(computed_at(name))
    r = refresher(db, clock, resolve_timezone(zone))
    state = r.refresh()
    assert state.problem is None
    assert all(health.success for health in state.phases.values()), state.failing_phases()
    assert sum(state.bad_values.values()) > 0
    assert r.ready(clock()).ready
    first = state.fast
    clock.advance(15)
    assert r.refresh().fast is not first  # the snapshot keeps moving


def test_an_unforeseen_error_in_a_phase_is_caught_counted_shown_and_retried(
    fixture_copy, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A fault injected into one phase (standing for a bug nobody foresaw): the other phases go on, the
    phase reports failure, readiness names it, the traceback is logged once, and it recovers."""
    db = fixture_copy(SMALL)
    clock = ManualClock(computed_at(SMALL))
    r = refresher(db, clock, counts_interval=timedelta(seconds=15))

    def broken(*args: object) -> None:
        raise RuntimeError("injected fault")

    monkeypatch.setattr(FlujoStats, "counts", broken)
    with caplog.at_level(logging.ERROR, logger="exporter.refresh"):
        for _ in range(3):
            state = r.refresh()
            clock.advance(15)
    assert state.phases[SNAPSHOT].success and state.phases[WATERMARKS].success
    assert not state.phases[COUNTS].success
    assert state.errors[Problem.INTERNAL] == 3
    state = r.ready(clock())
    assert not state.ready and state.reason == "refresh_failing"
    assert "counts" in state.detail and "injected fault" in state.detail
    assert sum(1 for record in caplog.records if record.exc_info) == 1  # the traceback once
    monkeypatch.undo()
    state = r.refresh()
    assert state.phases[COUNTS].success and state.counts is not None
    assert r.ready(clock()).ready


async def test_the_refresh_loop_survives_a_crash_outside_the_phases(
    fixture_copy, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = refresher(fixture_copy(SMALL), ManualClock(computed_at(SMALL)), refresh_interval=timedelta(seconds=1))
    calls = 0
    real = r.refresh

    def flaky(*, force_all: bool = False) -> object:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("injected fault outside the phases")
        return real(force_all=force_all)

    monkeypatch.setattr(r, "refresh", flaky)
    stop = asyncio.Event()
    loop = asyncio.create_task(r.run(stop))
    while calls < 2:
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(loop, 5)
    assert r.state.errors[Problem.INTERNAL] == 1
    assert r.state.fast is not None  # the second refresh ran


def test_readiness_follows_the_snapshot_age(fixture_copy) -> None:
    clock = ManualClock(computed_at(SMALL))
    r = refresher(fixture_copy(SMALL), clock, refresh_interval=timedelta(seconds=15))
    assert not r.ready(clock()).ready
    r.refresh()
    assert r.ready(clock()) == Readiness(True, "ready")
    clock.advance(44)
    assert r.ready(clock()).ready
    clock.advance(2)
    state = r.ready(clock())
    assert not state.ready and state.reason == "stale_snapshot" and "stale" in state.detail
    r.refresh()
    assert r.ready(clock()).ready


def test_readiness_reports_failing_refreshes(fixture_copy) -> None:
    db = fixture_copy(SMALL)
    clock = ManualClock(computed_at(SMALL))
    r = refresher(db, clock)
    r.refresh()
    db.rename(db.with_suffix(".moved"))
    clock.advance(15)
    r.refresh()
    state = r.ready(clock())
    assert not state.ready and state.reason == "missing"
    assert "does not exist" in state.detail and str(db) in state.detail


def corrupt_table_pages(db: Path, table: str) -> None:
    """Overwrite the root page of ``table`` with garbage (page 1, the header, stays intact).  ``os.truncate``
    and this test's own file I/O happen while no SQLite connection of this process is open on the file."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        root = int(conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0])
    with db.open("r+b") as handle:
        handle.seek((root - 1) * page_size)
        handle.write(b"\x0d" + os.urandom(page_size - 1))


def test_corrupt_pages_beyond_page_one_are_reported_as_corrupt(fixture_copy) -> None:
    db = fixture_copy(SMALL)
    corrupt_table_pages(db, "workflow_state")
    clock = ManualClock(computed_at(SMALL))
    r = refresher(db, clock)
    state = r.refresh()
    assert state.problem is not None and state.problem.problem is Problem.CORRUPT
    assert state.errors[Problem.CORRUPT] == 1
    state = r.ready(clock())
    assert not state.ready and state.reason == "corrupt" and "malformed" in state.detail


def test_a_truncated_wal_is_reported_as_corrupt(fixture_copy) -> None:
    db = fixture_copy(SMALL)
    writer = sqlite3.connect(db, isolation_level=None)  # the app keeps its connection open
    try:
        writer.execute("PRAGMA wal_autocheckpoint = 0")
        rowids = [row[0] for row in writer.execute("SELECT rowid FROM workflow_state")]
        for i in range(300):
            writer.execute(
                "UPDATE workflow_state SET updated_at = ? WHERE rowid = ?",
                (f"2026-11-21T10:{i % 60:02d}:00", rowids[i % len(rowids)]),
            )
        wal = Path(f"{db}-wal")
        os.truncate(wal, wal.stat().st_size // 3)
        state = refresher(db, ManualClock(computed_at(SMALL))).refresh()
    finally:
        writer.close()
    assert state.problem is not None and state.problem.problem is Problem.CORRUPT
    assert "truncated" in state.problem.message


def finished_total(r: Refresher) -> int:
    return sum(r.state.finished.runs.values())


def add_finished_runs(db: Path, count: int, prefix: str) -> None:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        for n in range(count):
            conn.execute(  # one connection and commit per write, as flujo 0.4.35 does it
                "INSERT INTO runs (run_id, pipeline_name, pipeline_version, status, start_time, end_time)"
                " VALUES (?, 'etl_daily', '1', 'completed', '2026-11-21T11:00:00', '2026-11-21T11:00:30')",
                (f"{prefix}_{n}",),
            )
            conn.commit()


def smaller_copy(source: Path, target: Path) -> None:
    """The same app's DB started afresh: far fewer runs, so its rowids stay below the old watermark."""
    shutil.copyfile(source, target)
    execute(target, "DELETE FROM runs WHERE rowid > 5", "DELETE FROM steps", "DELETE FROM spans")
    with contextlib.closing(sqlite3.connect(target)) as conn:
        conn.execute("VACUUM")


def test_a_file_swapped_in_by_rename_is_followed(fixture_copy, tmp_path: Path) -> None:
    db = fixture_copy(SMALL)
    clock = ManualClock(computed_at(SMALL))
    r = refresher(db, clock)
    r.refresh()
    before = finished_total(r)
    replacement = tmp_path / "replacement.db"
    smaller_copy(db, replacement)
    os.replace(replacement, db)  # an atomic rename swap: a new inode at the same path
    clock.advance(15)
    r.refresh()
    assert finished_total(r) == before  # the new file's existing rows are not counted again
    add_finished_runs(db, 20, "after_swap")
    clock.advance(15)
    r.refresh()
    assert finished_total(r) == before + 20
