"""0.6.x span times are time.monotonic(); anchored to the run row they match the generator's truth."""

from datetime import datetime

from support import SMALL06, expected

from exporter.reader import FlujoReader
from exporter.reader.spantime import EPOCH_CLOCK, RUN_ANCHOR_ERROR_S, SAVE_ANCHOR_ERROR_S, clock_for_run
from exporter.timeparse import UTC, parse_instant


def test_run_anchor_within_documented_bound(fixture_copy) -> None:
    reader = FlujoReader(fixture_copy(SMALL06), naive_timezone=UTC)
    checked = 0
    with reader.session() as s:
        for run in expected(SMALL06)["per_run"]:
            truth = run.get("root_span_start_wall_utc_truth")
            if truth is None:
                continue
            created_raw = s.conn.execute("SELECT created_at FROM runs WHERE run_id = ?", (run["run_id"],)).fetchone()[0]
            min_start, max_end, latest_created = s.conn.execute(
                "SELECT MIN(start_time), MAX(COALESCE(end_time, start_time)), MAX(created_at)"
                " FROM spans WHERE run_id = ?",
                (run["run_id"],),
            ).fetchone()
            truth_epoch = datetime.fromisoformat(truth).timestamp()
            by_run = clock_for_run(
                min_start=min_start,
                max_end=max_end,
                run_created_at=parse_instant(created_raw),
                latest_span_created_at=parse_instant(latest_created),
            )
            assert abs(by_run.to_epoch(run["root_span_start_monotonic"]) - truth_epoch) <= by_run.error_bound_s
            assert by_run.error_bound_s == RUN_ANCHOR_ERROR_S
            by_save = clock_for_run(
                min_start=min_start,
                max_end=max_end,
                run_created_at=None,
                latest_span_created_at=parse_instant(latest_created),
            )
            assert abs(by_save.to_epoch(run["root_span_start_monotonic"]) - truth_epoch) <= SAVE_ANCHOR_ERROR_S
            checked += 1
    assert checked == 56


def test_epoch_values_pass_through() -> None:
    clock = clock_for_run(min_start=1795258480.81, max_end=None, run_created_at=None, latest_span_created_at=None)
    assert clock is EPOCH_CLOCK and clock.to_epoch(1795258480.81) == 1795258480.81


def test_unanchored_monotonic_is_flagged() -> None:
    clock = clock_for_run(min_start=897.2, max_end=900.0, run_created_at=None, latest_span_created_at=None)
    assert not clock.anchored
