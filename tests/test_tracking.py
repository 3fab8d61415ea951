"""flujo_runs_finished_total follows the runs' FINAL statuses, observed between every write flujo makes.

A run paused for approval is written ``runs.status='completed'`` (with an end time) while its
workflow_state says ``paused``; after a resume it may still fail.  The tracker must count it once,
when it really ends, with its final status and its whole duration.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from flujo_writes import Flujo0435Run, Flujo06Run
from support import SMALL, SMALL06, computed_at

from exporter.engines.flujo.tracking import FULL_RECHECK_EVERY, FinishTracker
from exporter.reader import StateReader

Step = tuple[str, Callable[[], None]]


class Observer:
    """A tracker fed by the real reader, as the refresher does it, after every write."""

    def __init__(self, db: Path, now: datetime) -> None:
        self.reader = StateReader(db, naive_timezone=UTC)
        self.tracker = FinishTracker(max_pipelines=50, max_steps=100, duration_window=timedelta(hours=24))
        self.now = now
        self.refresh()

    def refresh(self) -> None:
        caught_up = False
        while not caught_up:
            with self.reader.session() as s:
                caught_up = self.tracker.update(s.conn, s.schema, self.now)

    def runs(self, pipeline: str = "approval_flow") -> dict[str, int]:
        return {status: n for (p, status), n in self.tracker.totals().runs.items() if p == pipeline and n}

    def duration_sum(self, pipeline: str = "approval_flow") -> float:
        histogram = self.tracker.totals().run_durations.get(pipeline)
        return 0.0 if histogram is None else histogram.total

    def replay(self, steps: list[Step], counted_after: str) -> dict[str, dict[str, int]]:
        """Run each write, refresh after it; the counters may only move at ``counted_after``."""
        before = self.runs()
        seen = {}
        for name, write in steps:
            write()
            self.refresh()
            seen[name] = self.runs()
            if name != counted_after and counted_after not in seen:
                assert seen[name] == before, f"counted too early, after {name}: {seen[name]} vs {before}"
        return seen


def pause_0435(run: Flujo0435Run, t0: datetime) -> list[Step]:
    recorded = t0 + timedelta(seconds=3.62)
    return [
        ("save_run_start", run.save_run_start),
        ("save_state running 0", lambda: run.save_state("running", 0, t0 + timedelta(milliseconds=1))),
        ("save_state running 1", lambda: run.save_state("running", 1, t0 + timedelta(seconds=3.62))),
        ("save_step_result 0", lambda: run.save_step_result(0, "prepare", "completed", recorded, 3622)),
        ("save_state paused", lambda: run.save_state("paused", 1, t0 + timedelta(seconds=3.63))),
        ("save_run_end completed (pause)", lambda: run.save_run_end("completed", t0 + timedelta(seconds=3.631))),
        (
            "save_trace (pause)",
            lambda: run.save_trace(t0, [("prepare", "completed"), ("human_approval", "running")]),
        ),
    ]


def resume_0435(run: Flujo0435Run, t1: datetime, outcome: str) -> list[Step]:
    step_status = "completed" if outcome == "completed" else "failed"
    return [
        ("load_state", run.load_state),
        ("save_state running (resume)", lambda: run.save_state("running", 2, t1)),
        ("save_state running 3", lambda: run.save_state("running", 3, t1 + timedelta(seconds=9))),
        ("save_step_result 2", lambda: run.save_step_result(2, "apply", step_status, t1 + timedelta(seconds=9), 9000)),
        ("save_state final", lambda: run.save_state(outcome, 6, t1 + timedelta(seconds=9.001))),
        ("save_run_end final", lambda: run.save_run_end(outcome, t1 + timedelta(seconds=9.002))),
        (
            "save_trace final",
            lambda: run.save_trace(
                t1, [("prepare", "completed"), ("human_approval", "running"), ("apply", step_status)]
            ),
        ),
    ]


@pytest.mark.parametrize("outcome", ["failed", "completed"])
def test_0435_pause_resume_end_counts_once_with_the_final_status(fixture_copy, outcome: str) -> None:
    db = fixture_copy(SMALL)
    now = computed_at(SMALL)
    seen = Observer(db, now)
    before, durations_before = seen.runs(), seen.duration_sum()
    t0 = now - timedelta(hours=2)
    run = Flujo0435Run(db, t0)
    paused = seen.replay(pause_0435(run, t0), counted_after="never")
    assert paused["save_trace (pause)"] == before  # runs says completed, but the run only paused
    for _ in range(3):  # the approval takes many refreshes
        seen.refresh()
    t1 = t0 + timedelta(hours=1)
    after = seen.replay(resume_0435(run, t1, outcome), counted_after="save_run_end final")
    # between save_state(final) and save_run_end, runs still holds the pause's end: not counted yet
    assert after["save_state final"] == before
    expected = dict(before)
    expected[outcome] = expected.get(outcome, 0) + 1
    assert after["save_run_end final"] == expected
    assert after["save_trace final"] == expected
    # the whole run, pause included: from the start to the end written after the resume
    assert seen.duration_sum() - durations_before == pytest.approx(3600 + 9.002, abs=1e-3)
    seen.refresh()
    assert seen.runs() == expected  # counted once


def pause_06(run: Flujo06Run, t0: datetime) -> list[Step]:
    return [
        ("record_run_start", run.record_run_start),
        ("persist running 0", lambda: run.persist_state("running", 0, t0 + timedelta(milliseconds=2))),
        ("persist running 1", lambda: run.persist_state("running", 1, t0 + timedelta(seconds=4.8))),
        ("save_step_result 0", lambda: run.save_step_result(0, "prepare", "completed", t0 + timedelta(seconds=4.8))),
        ("persist paused", lambda: run.persist_state("paused", 1, t0 + timedelta(seconds=4.81))),
        ("save_run_end completed (pause)", lambda: run.save_run_end("completed", t0 + timedelta(seconds=4.811))),
        ("save_trace (pause)", lambda: run.save_trace(t0, 806945.16, [("prepare", "completed")])),
    ]


def resume_06(run: Flujo06Run, t1: datetime, outcome: str) -> list[Step]:
    step_status = "completed" if outcome == "completed" else "failed"
    # flujo 0.6.11 leaves workflow_state 'paused' when a resumed run fails (run_session.py: a resumed run
    # that did not complete every step keeps "paused"); runs gets the real outcome
    final_state = "completed" if outcome == "completed" else "paused"
    return [
        ("load_state", run.load_state),
        ("persist running (resume)", lambda: run.persist_state("running", 2, t1)),
        ("persist running 3", lambda: run.persist_state("running", 3, t1 + timedelta(seconds=6.4))),
        ("save_step_result 2", lambda: run.save_step_result(2, "apply", step_status, t1 + timedelta(seconds=6.4))),
        ("persist final", lambda: run.persist_state(final_state, 6, t1 + timedelta(seconds=6.41))),
        ("save_run_end final", lambda: run.save_run_end(outcome, t1 + timedelta(seconds=6.411))),
        (
            "save_trace final",
            lambda: run.save_trace(t1, 809303.17, [("prepare", "completed"), ("apply", step_status)]),
        ),
    ]


@pytest.mark.parametrize("outcome", ["failed", "completed"])
def test_06_pause_resume_end_counts_once_with_the_final_status(fixture_copy, outcome: str) -> None:
    db = fixture_copy(SMALL06)
    now = computed_at(SMALL06)
    seen = Observer(db, now)
    before, durations_before = seen.runs(), seen.duration_sum()
    t0 = now - timedelta(hours=3)
    run = Flujo06Run(db, t0)
    seen.replay(pause_06(run, t0), counted_after="never")
    seen.refresh()
    t1 = t0 + timedelta(minutes=39)
    after = seen.replay(resume_06(run, t1, outcome), counted_after="save_run_end final")
    assert after["persist final"] == before
    expected = dict(before)
    expected[outcome] = expected.get(outcome, 0) + 1
    assert after["save_run_end final"] == expected
    assert seen.duration_sum() - durations_before == pytest.approx(39 * 60 + 6.411, abs=1e-3)
    seen.refresh()
    assert seen.runs() == expected


def test_pause_seen_at_seed_time_counts_when_resumed(fixture_copy) -> None:
    """sample-small.db holds 6 runs paused for approval: not counted at start, counted once they end."""
    db = fixture_copy(SMALL)
    now = computed_at(SMALL)
    seen = Observer(db, now)
    assert seen.runs() == {"completed": 2, "failed": 3}  # the 6 paused approval_flow runs are not in
    assert seen.tracker.pending_runs == 5 + 6  # 5 running (crashed) + 6 paused
    paused_id = "run_4737819096da1dac72ff5d2a386ecbe0"  # rowid 3, paused at 2026-11-21T10:54:44
    run = Flujo0435Run(db, datetime(2026, 11, 21, 10, 54, 40, 809430, tzinfo=UTC), run_id=paused_id)
    t1 = now + timedelta(minutes=5)
    after = seen.replay(resume_0435(run, t1, "failed"), counted_after="save_run_end final")
    assert after["save_run_end final"] == {"completed": 2, "failed": 4}
    assert seen.tracker.pending_runs == 5 + 5


def test_0435_cancel_counts_as_cancelled(fixture_copy) -> None:
    """An asyncio-cancelled run: workflow_state 'cancelled', runs 'completed' (SCHEMA.md §4)."""
    db = fixture_copy(SMALL)
    now = computed_at(SMALL)
    seen = Observer(db, now)
    t0 = now - timedelta(minutes=30)
    run = Flujo0435Run(db, t0, pipeline="long_job")
    before = seen.runs("long_job")
    steps: list[Step] = [
        ("save_run_start", run.save_run_start),
        ("save_state running 0", lambda: run.save_state("running", 0, t0)),
        ("save_state cancelled", lambda: run.save_state("cancelled", 0, t0 + timedelta(seconds=40))),
        ("save_run_end completed", lambda: run.save_run_end("completed", t0 + timedelta(seconds=40.001))),
    ]
    for _, write in steps:
        write()
        seen.refresh()
    assert seen.runs("long_job") == {**before, "cancelled": before.get("cancelled", 0) + 1}


def test_seed_matches_incremental_counting(fixture_copy, tmp_path: Path) -> None:
    """A tracker seeded after the writes counts what one that watched them counted."""
    db = fixture_copy(SMALL06)
    now = computed_at(SMALL06)
    watcher = Observer(db, now)
    for offset, outcome in enumerate(["failed", "completed"]):
        t0 = now - timedelta(hours=5 - offset)
        run = Flujo06Run(db, t0)
        watcher.replay(pause_06(run, t0), counted_after="never")
        watcher.replay(resume_06(run, t0 + timedelta(minutes=20), outcome), counted_after="save_run_end final")
    late = Observer(db, now)
    assert late.tracker.totals().runs == watcher.tracker.totals().runs
    assert late.tracker.pending_runs == watcher.tracker.pending_runs


def test_paused_run_updated_in_place_is_counted_within_the_full_recheck(fixture_copy) -> None:
    """A state changed by an in-place UPDATE (no new rowid, e.g. an admin tool cancelling a paused run)
    is not seen by the workflow_state rowid watermark; the periodic re-check of every paused run counts it."""
    db = fixture_copy(SMALL06)
    now = computed_at(SMALL06)
    seen = Observer(db, now)
    before = seen.runs()
    paused_id = "run_cf36d58b4737819096da1dac72ff5d2a"  # paused at 11:27, never resumed
    conn = sqlite3.connect(db)
    conn.execute(
        "UPDATE workflow_state SET status = 'cancelled', updated_at = ? WHERE run_id = ?", (now.isoformat(), paused_id)
    )
    conn.commit()
    conn.close()
    refreshes = 0
    while seen.runs() == before:
        seen.refresh()
        refreshes += 1
        assert refreshes <= FULL_RECHECK_EVERY + 1
    assert seen.runs() == {**before, "cancelled": before.get("cancelled", 0) + 1}
