"""0.6.x span times are time.monotonic(); the run's wall-clock writes bracket the offset, and the
published error bound always covers the true error."""

import json
import math
from datetime import UTC, datetime, timedelta

import pytest
from support import FIXTURES, SMALL06, expected

from exporter.engines.flujo.spantime import (
    EPOCH_CLOCK,
    RESOLUTION_S,
    SAVE_ANCHOR_ERROR_S,
    ClockKind,
    clock_for_run,
)
from exporter.reader import StateReader
from exporter.timeparse import parse_instant

FINISHED = ("completed", "failed")
LIVE06 = "live06-timing.db"


def test_fixture_runs_are_bracketed_and_within_the_bound(fixture_copy) -> None:
    reader = StateReader(fixture_copy(SMALL06), naive_timezone=UTC)
    checked = 0
    bounds = []
    with reader.session() as s:
        for run in expected(SMALL06)["per_run"]:
            truth = run.get("root_span_start_wall_utc_truth")
            if truth is None:
                continue
            created_raw, updated_raw, status = s.conn.execute(
                "SELECT created_at, updated_at, status FROM runs WHERE run_id = ?", (run["run_id"],)
            ).fetchone()
            min_start, max_end, latest_created = s.conn.execute(
                "SELECT MIN(start_time), MAX(end_time), MAX(created_at) FROM spans WHERE run_id = ?",
                (run["run_id"],),
            ).fetchone()
            truth_epoch = datetime.fromisoformat(truth).timestamp()
            clock = clock_for_run(
                min_start=min_start,
                max_end=max_end,
                run_created_at=parse_instant(created_raw),
                latest_span_created_at=parse_instant(latest_created),
                run_ended_at=parse_instant(updated_raw) if status in FINISHED else None,
            )
            assert clock.kind == ClockKind.BRACKETED
            assert abs(clock.to_epoch(run["root_span_start_monotonic"]) - truth_epoch) <= clock.error_bound_s
            bounds.append(clock.error_bound_s)
            by_save = clock_for_run(
                min_start=min_start,
                max_end=max_end,
                run_created_at=None,
                latest_span_created_at=parse_instant(latest_created),
            )
            assert abs(by_save.to_epoch(run["root_span_start_monotonic"]) - truth_epoch) <= SAVE_ANCHOR_ERROR_S
            checked += 1
    assert checked == 56
    # the fixture's generator started the root 0.71 ms after created_at and ended runs right away
    assert max(bounds) < 0.002


TRUE_START = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
BOOT = TRUE_START.timestamp() - 1000.0  # the writer host booted 1000 s before the run: monotonic 1000.0


def wall(monotonic: float) -> datetime:
    return datetime.fromtimestamp(BOOT + monotonic, UTC)


def test_run_row_written_400ms_before_the_root_span() -> None:
    """Live 0.6.11: created_at precedes the root span by up to 433 ms.  The old 1 ms claim was false
    (error 400 ms); the bracket's half-width covers it."""
    root_start, root_end = 1000.0, 1005.0
    clock = clock_for_run(
        min_start=root_start,
        max_end=root_end,
        run_created_at=wall(root_start) - timedelta(milliseconds=400),
        run_ended_at=wall(root_end) + timedelta(milliseconds=30),  # save_run_end after post_run
        latest_span_created_at=(wall(root_end) + timedelta(milliseconds=40)).replace(microsecond=0),
    )
    error = abs(clock.to_epoch(root_start) - TRUE_START.timestamp())  # type: ignore[operator]
    assert clock.kind == ClockKind.BRACKETED
    assert error <= clock.error_bound_s
    assert clock.error_bound_s == pytest.approx((0.400 + 0.030) / 2, abs=1e-6)
    assert error == pytest.approx(0.400 - clock.error_bound_s, abs=1e-6)  # the midpoint, not created_at


def test_spans_save_bounds_a_run_without_a_final_end() -> None:
    """A run still running (its updated_at is its start): only spans.created_at (+1 s) bounds it."""
    clock = clock_for_run(
        min_start=1000.0,
        max_end=1002.0,
        run_created_at=wall(1000.0) - timedelta(milliseconds=8),
        run_ended_at=None,
        latest_span_created_at=(wall(1002.0) + timedelta(milliseconds=300)).replace(microsecond=0),
    )
    assert clock.kind == ClockKind.BRACKETED
    assert abs(clock.to_epoch(1000.0) - TRUE_START.timestamp()) <= clock.error_bound_s <= 0.5 + 0.004  # type: ignore[operator]


def test_only_a_lower_bound_is_unbounded() -> None:
    clock = clock_for_run(
        min_start=1000.0, max_end=1002.0, run_created_at=wall(1000.0), run_ended_at=None, latest_span_created_at=None
    )
    assert clock.kind == ClockKind.RUN_START and clock.anchored and math.isinf(clock.error_bound_s)


def test_contradicting_bounds_are_unbounded() -> None:
    """Monotonic values from two boots (a reboot between pause and resume) can put the end before the start."""
    clock = clock_for_run(
        min_start=1000.0,
        max_end=9000.0,
        run_created_at=wall(1000.0),
        run_ended_at=wall(1010.0),
        latest_span_created_at=None,
    )
    assert clock.kind == ClockKind.RUN_START and math.isinf(clock.error_bound_s)
    assert clock.to_epoch(1000.0) == pytest.approx(TRUE_START.timestamp())


def test_bound_never_below_the_timestamp_resolution() -> None:
    clock = clock_for_run(
        min_start=1000.0,
        max_end=1000.0,
        run_created_at=wall(1000.0),
        run_ended_at=wall(1000.0),
        latest_span_created_at=None,
    )
    assert clock.error_bound_s == RESOLUTION_S


def test_epoch_values_pass_through() -> None:
    clock = clock_for_run(min_start=1795258480.81, max_end=None, run_created_at=None, latest_span_created_at=None)
    assert clock is EPOCH_CLOCK and clock.to_epoch(1795258480.81) == 1795258480.81


def test_unanchored_monotonic_is_flagged() -> None:
    clock = clock_for_run(min_start=897.2, max_end=900.0, run_created_at=None, latest_span_created_at=None)
    assert not clock.anchored and clock.kind == ClockKind.UNANCHORED


def test_live_flujo_06_runs_are_within_the_bound(fixture_copy) -> None:
    """20 runs written by the real flujo 0.6.11 (tests/fixtures/live06-timing.py), with the writer's true
    monotonic-to-wall offset recorded: the created_at anchor alone was 2.5-6.4 ms off (the old 1 ms claim
    was false); the bracket's midpoint is within the published bound for every run."""
    db = fixture_copy(LIVE06)
    truth = json.loads((FIXTURES / f"{LIVE06}.truth.json").read_text())
    slack = truth["offset_max"] - truth["offset_min"]  # the true offset moved this much during the runs
    true_offset = (truth["offset_max"] + truth["offset_min"]) / 2
    reader = StateReader(db, naive_timezone=UTC)
    created_errors = []
    with reader.session() as s:
        rows = s.conn.execute(
            "SELECT r.created_at, r.updated_at, r.status, MIN(s.start_time), MAX(s.end_time), MAX(s.created_at)"
            " FROM runs r JOIN spans s USING (run_id) GROUP BY r.run_id"
        ).fetchall()
    assert len(rows) == 20
    for created, updated, status, min_start, max_end, latest_created in rows:
        clock = clock_for_run(
            min_start=min_start,
            max_end=max_end,
            run_created_at=parse_instant(created),
            latest_span_created_at=parse_instant(latest_created),
            run_ended_at=parse_instant(updated) if status in FINISHED else None,
        )
        assert clock.kind == ClockKind.BRACKETED
        assert abs(clock.offset - true_offset) <= clock.error_bound_s + slack
        created_errors.append(parse_instant(created).timestamp() - min_start - true_offset)  # type: ignore[union-attr]
    assert all(error < 0 for error in created_errors)  # created_at is written before the root span starts
    assert max(-error for error in created_errors) > 0.001  # so a 1 ms bound on it was wrong
