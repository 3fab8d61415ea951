"""Labelled job counters with a known label set exist at 0 before anything happened."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from support import parse_exposition, sample

from exporter.clock import ManualClock
from exporter.engines.flujo.jobs.config import CLEANUP_TABLES
from exporter.jobs import JobRunner, JobsConfig
from exporter.jobs.config import JOB_NAMES
from exporter.jobs.metrics import OUTCOMES
from exporter.reader import StateReader


def test_known_labels_start_at_zero(tmp_path: Path) -> None:
    from traces.flujo_db import FlujoWriter

    FlujoWriter(tmp_path / "flujo.db").close()
    db = tmp_path / "flujo.db"
    config = JobsConfig.model_validate(
        {"stuck_alerts": {"enabled": True, "webhook": {"url": "http://127.0.0.1:9/hook"}}}  # only one job enabled
    )
    runner = JobRunner(config, db, UTC, StateReader(db, naive_timezone=UTC), ManualClock(datetime.now(UTC)))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(runner.collector())
    s = parse_exposition(generate_latest(registry).decode())
    for job in JOB_NAMES:  # disabled jobs included
        for family in ("state_exporter_job_runs_total", "state_exporter_job_errors_total"):
            assert sample(s, family, job_name=job) == 0
        assert sample(s, "state_exporter_job_skipped_total", job_name=job) == 0
        assert sample(s, "state_exporter_job_lock_skipped_total", job_name=job) == 0
    for table in CLEANUP_TABLES:
        assert sample(s, "state_exporter_cleanup_deleted_rows_total", table=table) == 0
    for outcome in OUTCOMES:
        assert sample(s, "state_exporter_alert_deliveries_total", receiver="webhook", outcome=outcome) == 0
