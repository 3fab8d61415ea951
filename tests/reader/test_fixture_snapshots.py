"""The reader's numbers on the real Flujo DBs equal the expected JSON written beside them.

"now" is pinned to each fixture's computed_at_utc; where flujo's own string compare is wrong the
``correct_*`` keys are the truth.
"""

from collections import Counter
from datetime import timedelta

import pytest
from support import LEGACY, SMALL, SMALL06, FlujoTiers, anchor_at, computed_at, expected, make_hybrid

from exporter.engines.flujo import spans as span_queries
from exporter.engines.flujo.statuses import WORKFLOW_STATUSES
from exporter.engines.flujo.stuck import StuckPolicy, stuck_workflows
from exporter.engines.flujo.workflows import active_workflows, created_before
from exporter.reader import StateReader
from exporter.timeparse import UTC

POLICY = StuckPolicy(running_after=timedelta(hours=1))


class Stats:
    """Both index-bound tiers of a snapshot, and the active rows themselves."""

    def __init__(self, path, now) -> None:  # type: ignore[no-untyped-def]
        reader = StateReader(path, naive_timezone=UTC)
        fast, counts = FlujoTiers(reader).fast(now), FlujoTiers(reader).counts(now)
        with reader.session() as s:
            self.active = active_workflows(s.conn, s.schema, UTC, [])
        self.summary = fast.active
        self.created_24h = fast.created_24h
        self.bad_values = fast.bad_values + counts.bad_values
        self.workflows_by_status = counts.workflows_by_status
        self.background_by_status = counts.background_by_status
        self.failed_24h = counts.failed_24h
        self.runs_by_status = counts.runs_by_status
        self.spans_total = counts.spans_total


def read(path, now):  # type: ignore[no-untyped-def]
    return Stats(path, now)


def test_small_0435(fixture_copy) -> None:
    exp = expected(SMALL)
    db = fixture_copy(SMALL)
    now = computed_at(SMALL)
    stats = read(db, now)
    assert dict(stats.workflows_by_status) == exp["get_workflow_stats"]["status_counts"]
    assert sum(stats.workflows_by_status.values()) == exp["get_workflow_stats"]["total_workflows"]
    assert stats.background_by_status is None  # absent, not zero: 0.4.35 has no background tasks
    assert stats.created_24h.top_level == exp["correct_recent_created_24h"] == 26
    assert exp["get_workflow_stats"]["recent_workflows_24h"] == 30  # flujo's string compare, not ours
    assert stats.failed_24h.top_level == exp["correct_failed_updated_24h"]
    assert dict(stats.runs_by_status) == exp["list_runs_status_counts"]
    assert stats.spans_total == exp["spans_total_via_get_spans"]
    running = [a for a in stats.active if a.status == "running"]
    assert sorted(a.run_id for a in running) == sorted(r["run_id"] for r in exp["running"])
    stuck = stuck_workflows(stats.active, now, StuckPolicy(running_after=timedelta(hours=1)))
    assert sorted((s.run_id, s.pipeline) for s in stuck) == sorted(
        (r["run_id"], r["pipeline_name"]) for r in exp["stuck_running_over_1h_at_compute_time"]
    )
    assert len(stuck) == exp["stuck_running_over_1h_at_compute_time_count"]
    summary = stats.summary[("long_job", "running", False)]
    assert summary.stuck == len(stuck)
    assert sum(g.count for (_, status, _), g in stats.summary.items() if status == "running") == len(running)
    paused = [a for a in stats.active if a.status == "paused"]
    assert len(paused) == exp["get_workflow_stats"]["status_counts"]["paused"]
    assert stats.bad_values == ()


def test_small_0435_aggregates(fixture_copy) -> None:
    exp = expected(SMALL)
    reader = StateReader(fixture_copy(SMALL), naive_timezone=UTC)
    agg = FlujoTiers(reader).aggregates(computed_at(SMALL))
    assert agg.spans is not None
    assert agg.spans.total == exp["spans_total_via_get_spans"]
    assert agg.spans.unfinished == exp["spans_unfinished_end_time_null"]
    assert agg.average_execution_time_ms == pytest.approx(exp["get_workflow_stats"]["average_execution_time_ms"])
    by_pipeline = Counter[str]()
    for (pipeline, _status), n in agg.workflows_by_pipeline_status.items():
        by_pipeline[pipeline] += n
    assert dict(by_pipeline) == exp["workflow_state_by_pipeline_name"]
    runs_by_pipeline = Counter[str]()
    assert agg.runs_by_pipeline_status is not None
    for (pipeline, _status), n in agg.runs_by_pipeline_status.items():
        runs_by_pipeline[pipeline] += n
    assert dict(runs_by_pipeline) == exp["runs_by_pipeline_name"]
    # finished spans by status are what flujo's get_span_statistics counts
    finished = agg.spans.by_status.copy()
    finished["running"] -= agg.spans.unfinished
    assert +finished == Counter(exp["get_span_statistics"]["by_status"])
    with reader.session() as s:
        per_run = span_queries.per_run(s.conn, with_runs_table=True)
        older = created_before(s.conn, computed_at(SMALL) - timedelta(days=30), UTC, [])
    assert per_run == exp["spans_per_run"]
    assert sorted(older) == sorted(exp["cleanup_old_workflows_30d"]["deleted_run_ids"])
    assert len(older) == exp["correct_older_than_30d_created"]


def test_small_06_top_level_and_background_apart(fixture_copy) -> None:
    exp = expected(SMALL06)
    db = fixture_copy(SMALL06)
    now = computed_at(SMALL06)
    stats = read(db, now)
    assert dict(stats.workflows_by_status) == exp["list_workflows"]["by_status_non_background"]
    assert dict(stats.background_by_status or {}) == exp["get_workflow_stats"]["background_status_counts"]
    assert (
        dict(stats.workflows_by_status + (stats.background_by_status or Counter()))
        == (exp["get_workflow_stats"]["status_counts"])
    )
    # correct_* values count every workflow_state row; we split them and they add up
    assert (
        stats.created_24h.top_level + stats.created_24h.background == exp["correct_recent_created_24h_at_compute_time"]
    )
    assert stats.failed_24h.top_level + stats.failed_24h.background == exp["correct_failed_updated_24h_at_compute_time"]
    assert dict(stats.runs_by_status) == exp["runs_table_raw_status_counts"]
    assert stats.spans_total == exp["spans_total_via_get_spans"]
    anchored = read(db, anchor_at(SMALL06))
    assert anchored.failed_24h.background == exp["correct_failed_background_updated_24h_at_anchor"]
    policy = StuckPolicy(running_after=timedelta(hours=1))
    stuck = stuck_workflows(anchored.active, anchor_at(SMALL06), policy)
    assert sorted((s.run_id, s.pipeline) for s in stuck) == sorted(
        (r["run_id"], r["pipeline_name"]) for r in exp["stuck_over_1h_at_anchor_non_background"]
    )
    stale_background = [
        a.run_id
        for a in anchored.active
        if a.is_background and a.status == "running" and anchor_at(SMALL06) - a.updated_at > timedelta(hours=24)
    ]
    assert sorted(stale_background) == sorted(r["run_id"] for r in exp["stale_background_over_24h_at_anchor"])


def test_small_06_aggregates(fixture_copy) -> None:
    exp = expected(SMALL06)
    reader = StateReader(fixture_copy(SMALL06), naive_timezone=UTC)
    agg = FlujoTiers(reader).aggregates(computed_at(SMALL06))
    assert agg.spans is not None and agg.spans.unfinished == exp["spans_open_end_time_null"]
    assert agg.average_execution_time_ms == pytest.approx(exp["get_workflow_stats"]["average_execution_time_ms"])
    with reader.session() as s:
        per_run = span_queries.per_run(s.conn, with_runs_table=True)
    assert per_run == exp["spans_per_run"]
    histogram = Counter(str(n) for n in per_run.values())
    assert dict(histogram) == exp["spans_per_run_histogram"]


def test_legacy_0432(fixture_copy) -> None:
    db = fixture_copy(LEGACY)
    stats = read(db, computed_at(SMALL))
    assert dict(stats.workflows_by_status) == {"completed": 4, "paused": 2}
    assert set(WORKFLOW_STATUSES) >= set(stats.workflows_by_status)
    assert stats.runs_by_status is None and stats.spans_total is None and stats.background_by_status is None


def test_hybrid_reads_old_rows(fixture_copy) -> None:
    db = fixture_copy(SMALL)
    make_hybrid(db)
    exp = expected(SMALL)
    stats = read(db, computed_at(SMALL))
    assert dict(stats.workflows_by_status) == exp["get_workflow_stats"]["status_counts"]
    assert dict(stats.background_by_status or {}) == {}
    assert stats.created_24h.top_level == exp["correct_recent_created_24h"]
    assert dict(stats.runs_by_status) == exp["list_runs_status_counts"]


def test_writer_time_zone_setting_moves_the_windows(fixture_copy) -> None:
    """The same naive strings read as Los Angeles time are 8 h later instants."""
    from exporter.timeparse import resolve_timezone

    db = fixture_copy(SMALL)
    now = computed_at(SMALL)
    utc = read(db, now)
    la_reader = StateReader(db, naive_timezone=resolve_timezone("America/Los_Angeles"))
    later = now + timedelta(hours=8)
    assert FlujoTiers(la_reader).fast(later).created_24h == utc.created_24h
    assert FlujoTiers(la_reader).counts(later).failed_24h == utc.failed_24h
