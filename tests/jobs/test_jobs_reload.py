"""A config reload builds new job runners: their counters go on from the old values, never reset."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from processes import http_get, running_daemon
from prometheus_client import CollectorRegistry, generate_latest
from support import SMALL, computed_at, parse_exposition, sample

from exporter.clock import ManualClock
from exporter.jobs import JobRunner, JobsConfig
from exporter.reader import StateReader
from exporter.timeparse import UTC


async def no_sleep(_: float) -> None:
    await asyncio.sleep(0)


def runner(db: Path, previous: JobRunner | None = None, **cleanup: Any) -> JobRunner:
    config = JobsConfig.model_validate(
        {"cleanup": {"enabled": True, "jitter": 0, "pause_between_batches": 0, "days_old": 30, **cleanup}}
    )
    clock = ManualClock(computed_at(SMALL))
    reader = StateReader(db, naive_timezone=UTC)
    return JobRunner(config, db, UTC, reader, clock, sleep=no_sleep, previous=previous)


def metrics(jobs: JobRunner) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(jobs.collector())
    return parse_exposition(generate_latest(registry).decode())


async def test_counters_carry_over_to_the_runner_built_by_a_reload(fixture_copy) -> None:
    db = fixture_copy(SMALL)
    first = runner(db)
    for _ in range(3):
        assert (await first.run_job("cleanup")).success
    deleted = sample(metrics(first), "state_exporter_cleanup_deleted_rows_total", table="workflow_state")
    assert deleted == 12
    second = runner(db, previous=first, interval="2h")  # a changed setting: a new runner
    m = metrics(second)
    assert sample(m, "state_exporter_job_runs_total", job_name="cleanup") == 3
    assert sample(m, "state_exporter_cleanup_deleted_rows_total", table="workflow_state") == deleted
    assert (await second.run_job("cleanup")).success
    assert sample(metrics(second), "state_exporter_job_runs_total", job_name="cleanup") == 4


def job_runs(url: str) -> float:
    status, body = http_get(url + "/metrics")
    assert status == 200
    return sample(parse_exposition(body), "state_exporter_job_runs_total", job_name="cleanup")


def test_sighup_keeps_job_counters(fixture_copy, tmp_path: Path) -> None:
    db = fixture_copy(SMALL)
    config = f"db:\n  path: {db}\njobs:\n  cleanup:\n    enabled: true\n    interval: 1s\n    jitter: 0s\n"
    with running_daemon(tmp_path, config=config) as daemon:
        deadline = time.monotonic() + 20
        while job_runs(daemon.url) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        before = job_runs(daemon.url)
        assert before >= 3
        config_file = next(tmp_path.glob("daemon-*.yaml"))
        config_file.write_text(config.replace("interval: 1s", "interval: 2s"))  # changed: jobs restart
        os.kill(daemon.pid, signal.SIGHUP)
        seen = [job_runs(daemon.url) for _ in range(10) if not time.sleep(0.2)]
        os.kill(daemon.pid, signal.SIGHUP)  # unchanged: nothing restarts
        seen += [job_runs(daemon.url) for _ in range(5) if not time.sleep(0.2)]
    assert min(seen) >= before and seen == sorted(seen)
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def stuck_seen(url: str) -> tuple[float, float, float]:
    """(stuck-alert job runs, alerts firing for pipeline etl, flujo_workflows_stuck of etl's running runs)."""
    status, body = http_get(url + "/metrics")
    assert status == 200
    m = parse_exposition(body)
    return (
        sample(m, "state_exporter_job_runs_total", job_name="stuck_alerts"),
        m.get(("state_exporter_stuck_alerts_firing", frozenset({("pipeline", "etl")})), 0.0),
        m.get(("flujo_workflows_stuck", frozenset({("pipeline", "etl"), ("status", "running")})), 0.0),
    )


def test_sighup_changing_metrics_stuck_moves_the_alerts_with_the_metric(fixture_copy, tmp_path: Path) -> None:
    """metrics.stuck is the alerts' setting too: a reload that changes only it changes both."""
    db = fixture_copy(SMALL)
    three_hours_ago = (datetime.now(UTC) - timedelta(hours=3)).replace(tzinfo=None).isoformat()
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("UPDATE workflow_state SET status = 'completed' WHERE status IN ('running', 'paused')")
        conn.execute(
            "UPDATE workflow_state SET status = 'running', pipeline_name = 'etl', updated_at = ? "
            "WHERE run_id = (SELECT MIN(run_id) FROM workflow_state)",
            (three_hours_ago,),
        )
        conn.commit()
    config = (
        f"db:\n  path: {db}\n  writer_timezone: UTC\n"
        "metrics:\n  refresh_interval: 1s\n  counts_interval: 1s\n  stuck:\n    running_after: 1d\n"
        "jobs:\n  stuck_alerts:\n    enabled: true\n    interval: 1s\n    jitter: 0s\n"
    )
    with running_daemon(tmp_path, config=config) as daemon:
        deadline = time.monotonic() + 20
        while stuck_seen(daemon.url)[0] < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert stuck_seen(daemon.url)[1:] == (0, 0)  # 3 h idle is not stuck under 1d
        config_file = next(tmp_path.glob("daemon-*.yaml"))
        config_file.write_text(config.replace("running_after: 1d", "running_after: 1h"))
        os.kill(daemon.pid, signal.SIGHUP)
        deadline = time.monotonic() + 20
        while stuck_seen(daemon.url)[1:] != (1, 1) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert stuck_seen(daemon.url)[1:] == (1, 1), daemon.output()[-3000:]
