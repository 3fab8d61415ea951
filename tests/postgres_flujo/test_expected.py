"""The shared Postgres dump (written by flujo 0.6.11's own PostgresBackend), loaded into the suite's
real PostgreSQL 15 and read by the exporter as the read-only ``exporter`` role, gives exactly the
independent oracle's values (never flujo's API where they disagree: see the fixture's README).

Each value family is checked twice: at the instant the oracle ran (``computed_at_utc``, the clock
pinned there, rows as written) and after every row was shifted so that the anchor is a fresh
instant ``T`` (the clock pinned at ``T``): the windows (24 h, stuck, stale) must hold at both.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from postgres import ANCHOR, COMPUTED_AT, EXPECTED, PostgresServer, Samples, scrape, shift_to

from exporter.config import MetricsConfig
from exporter.engines.flujo.layout import Layout, flujo_schema
from exporter.engines.flujo.workflows import active_workflows
from exporter.reader.postgres import PostgresReader

ORACLE = EXPECTED["oracle"]  # pinned at computed_at_utc


def by(samples: Samples, name: str, label: str) -> Counter[str]:
    found: Counter[str] = Counter()
    for (sample, labels), value in samples.items():
        if sample == name:
            found[dict(labels)[label]] += value
    return found


def single(samples: Samples, name: str) -> float:
    return samples[(name, frozenset())]


def nonzero(counts: Counter[str]) -> dict[str, float]:
    return {k: v for k, v in counts.items() if v}


class Pinned:
    """The loaded dump read at an instant where the oracle's windowed values hold."""

    def __init__(self, server: PostgresServer, database: str, now: datetime) -> None:
        self.reader = PostgresReader(server.exporter_url(database))
        self.now = now

    def scrape(self, settings: MetricsConfig | None = None) -> Samples:
        return scrape(self.reader, self.now, settings)

    def at(self, when: str) -> datetime:
        """An instant of the oracle's (written relative to the anchor) in this run's time."""
        return datetime.fromisoformat(when) + (self.now - COMPUTED_AT)


@pytest.fixture(params=["as_written", "shifted_to_now"])
def pinned(request: pytest.FixtureRequest, pg_server: PostgresServer, pg_database: str) -> Iterator[Pinned]:
    if request.param == "as_written":
        yield Pinned(pg_server, pg_database, COMPUTED_AT)
        return
    # Rows moved so that the anchor is T - (computed_at - anchor): the oracle's computed_at instant is
    # then T, where the clock is pinned.
    target = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    shift_to(pg_server, pg_database, ANCHOR, target - (COMPUTED_AT - ANCHOR))
    yield Pinned(pg_server, pg_database, target)


def test_layout_and_capabilities(pinned: Pinned) -> None:
    schema = flujo_schema(pinned.reader.schema())
    assert schema.layout is Layout.V06
    assert list(schema.schema_versions) == ORACLE["schema_versions"]
    samples = pinned.scrape()
    assert samples[("flujo_db_layout_info", frozenset({("layout", "0.6")}))] == 1
    capabilities = by(samples, "flujo_db_capability", "capability")
    assert capabilities["evaluations"] == 0  # no pgvector: migration 003 never ran
    assert all(capabilities[c] == 1 for c in ("runs", "steps", "spans", "background_tasks", "traces", "system_state"))


def test_workflows_by_status_top_level_and_background(pinned: Pinned) -> None:
    samples = pinned.scrape()
    workflow_state = ORACLE["workflow_state"]
    assert by(samples, "flujo_workflows", "status") == workflow_state["top_level_status_counts"]
    assert by(samples, "flujo_background_tasks", "status") == workflow_state["background_status_counts"]
    by_pipeline: Counter[tuple[str, str]] = Counter()
    for (name, labels), value in samples.items():
        if name == "flujo_workflows_by_pipeline":
            by_pipeline[(dict(labels)["pipeline"], dict(labels)["status"])] += value
    assert {
        pipeline: {status: n for (p, status), n in by_pipeline.items() if p == pipeline}
        for pipeline in {p for p, _ in by_pipeline}
    } == workflow_state["top_level_by_pipeline_name_status"]


def test_runs_by_status(pinned: Pinned) -> None:
    assert nonzero(by(pinned.scrape(), "flujo_runs", "status")) == nonzero(Counter(ORACLE["runs"]["by_status"]))


def test_runs_by_pipeline(pinned: Pinned) -> None:
    samples = pinned.scrape()
    assert by(samples, "flujo_runs_by_pipeline", "pipeline") == ORACLE["runs"]["by_pipeline_name"]
    per_status = {
        (dict(labels)["pipeline"], dict(labels)["status"]): value
        for (name, labels), value in samples.items()
        if name == "flujo_runs_by_pipeline"
    }
    assert per_status == {
        (pipeline, status): n
        for pipeline, statuses in ORACLE["runs"]["by_pipeline_name_status"].items()
        for status, n in statuses.items()
    }


def test_steps_by_status_and_step(pinned: Pinned) -> None:
    samples = pinned.scrape()
    assert by(samples, "flujo_steps_finished_total", "status") == ORACLE["steps"]["by_status"]
    per_step: Counter[tuple[str, str]] = Counter()
    for steps in ORACLE["steps"]["by_pipeline_step_status"].values():
        for step, statuses in steps.items():
            for status, n in statuses.items():
                per_step[(step, status)] += n
    found = {
        (dict(labels)["step"], dict(labels)["status"]): value
        for (name, labels), value in samples.items()
        if name == "flujo_steps_finished_total"
    }
    assert found == per_step


def test_spans_by_status_including_unfinished(pinned: Pinned) -> None:
    samples = pinned.scrape()
    spans = ORACLE["spans"]
    assert single(samples, "flujo_spans_stored") == spans["stored"] == 224
    assert single(samples, "flujo_spans_unfinished") == spans["unfinished_end_time_null"] == 5
    assert nonzero(by(samples, "flujo_spans_by_status", "status")) == spans["by_status"]


def test_stuck_running_workflows(pinned: Pinned) -> None:
    """Running, not updated for 1 h (the oracle's threshold): the metric and the alerts' run list."""
    settings = MetricsConfig.model_validate({"stuck": {"running_after": "1h"}})
    samples = pinned.scrape(settings)
    assert sum(by(samples, "flujo_workflows_stuck", "status").values()) == ORACLE["stuck"]["top_level"] == 4
    with pinned.reader.session() as session:
        from exporter.engines.flujo.stuck import stuck_runs

        ids = sorted(run.run_id for run in stuck_runs(session, pinned.now, settings))
    assert ids == sorted(ORACLE["stuck"]["top_level_ids"])
    oldest = {
        dict(labels)["pipeline"]: value
        for (name, labels), value in samples.items()
        if name == "flujo_workflows_oldest_update_timestamp_seconds" and dict(labels)["status"] == "running"
    }
    assert oldest == {
        pipeline: pinned.at(when).timestamp()
        for pipeline, when in ORACLE["oldest_running_top_level_updated_at_by_pipeline"].items()
    }


def test_24h_windows(pinned: Pinned) -> None:
    samples = pinned.scrape()
    assert single(samples, "flujo_workflows_created_last_24h") == ORACLE["created_24h"]["top_level"] == 29
    assert single(samples, "flujo_workflows_failed_last_24h") == ORACLE["failed_24h"]["top_level"] == 4
    assert single(samples, "flujo_background_tasks_failed_last_24h") == ORACLE["failed_24h"]["background"] == 5


def _background(pinned: Pinned, keep: Callable[[Any], bool]) -> list[str]:
    with pinned.reader.session() as session:
        rows = active_workflows(session.db, flujo_schema(session.schema), session.naive_tz, [])
    return sorted(r.run_id for r in rows if r.is_background and r.status == "running" and keep(r))


def test_stale_and_stuck_background_tasks(pinned: Pinned) -> None:
    """The running background tasks the stale-task rule (24 h) and the stuck rule (1 h) select, read
    through the same active-row query the metrics use; the oldest one's update is the gauge's."""
    stale = _background(pinned, lambda r: pinned.now - r.updated_at > timedelta(hours=24))
    assert stale == sorted(ORACLE["stale_background"]["ids"])
    assert len(stale) == 4
    stuck = _background(pinned, lambda r: pinned.now - r.updated_at > timedelta(hours=1))
    assert stuck == sorted(ORACLE["stuck"]["background_ids"])
    oldest = min(pinned.at(r["updated_at"]) for r in ORACLE["running_background"])
    assert single(pinned.scrape(), "flujo_background_tasks_oldest_running_update_timestamp_seconds") == (
        oldest.timestamp()
    )
