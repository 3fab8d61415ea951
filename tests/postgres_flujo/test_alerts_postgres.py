"""Stuck-run alerts on Flujo's Postgres backend: read through the read-only Postgres reader, sent to a real
Alertmanager and a webhook, and sent once by an HA pair (the job runs under its advisory lock, like the
write jobs)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from jobs.test_jobs_alerts import alertmanager, am_alerts, no_sleep, webhook
from postgres import ANCHOR, EXPECTED, PostgresServer, shift_to
from postgres_flujo.test_jobs_postgres import metrics, server_now
from support import sample, wait_for

from exporter.clock import ManualClock
from exporter.config import MetricsConfig
from exporter.jobs import JobRunner, JobsConfig
from exporter.jobs.pg import PostgresTarget, lock_key
from exporter.reader.postgres import PostgresReader

# The oracle's running top-level runs not updated for an hour, at its anchor (where `shifted` puts now).
STUCK_IDS = set(EXPECTED["oracle_at_anchor"]["stuck"]["top_level_ids"])
# Running runs idle for an hour are stuck; the fixture's paused runs wait for a human: never judged here.
STUCK = MetricsConfig.model_validate({"stuck": {"running_after": "1h", "paused_after": "100000h"}})


@pytest.fixture
def shifted(pg_server: PostgresServer, pg_database: str) -> tuple[str, datetime]:
    """The test's database with the anchor moved to the server's now; (database, that now)."""
    shift_to(pg_server, pg_database, ANCHOR)
    return pg_database, server_now(pg_server, pg_database)


def alert_runner(url: str, clock: ManualClock, **receivers: Any) -> JobRunner:
    settings = {"enabled": True, "jitter": 0, "interval": "30s", "labels": {"test": "pg"}, "retry_backoff": 0}
    config = JobsConfig.model_validate({"stuck_alerts": {**settings, **receivers}})
    target = PostgresTarget(url, None, lock_timeout=1.0, statement_timeout=5.0)
    return JobRunner(config, target, UTC, PostgresReader(url), clock, settings=lambda: STUCK, sleep=no_sleep)


async def test_stuck_runs_alert_once_from_an_ha_pair(
    pg_server: PostgresServer, shifted: tuple[str, datetime], tmp_path: Path
) -> None:
    assert lock_key("stuck_alerts") == (1728555066, -1915747364)  # pinned: the README names it
    database, now = shifted
    url = pg_server.exporter_url(database)  # the SELECT-only role: the alert job only reads
    clock = ManualClock(now)
    with alertmanager(tmp_path) as am:
        async with webhook() as (hook_url, received):
            receivers = {"alertmanager": {"url": am.url}, "webhook": {"url": hook_url}}
            first, second = alert_runner(url, clock, **receivers), alert_runner(url, clock, **receivers)
            try:
                assert (await first.run_job("stuck_alerts")).success
                skipped = await second.run_job("stuck_alerts")  # the pair's other exporter: the lock is taken
                assert (skipped.runs, skipped.lock_skipped) == (0, 1)

                firing = wait_for(lambda: am_alerts(am, "pg"), 10, "firing alerts in Alertmanager")
                assert {a["labels"]["run_id"] for a in firing} == STUCK_IDS
                assert {a["labels"]["alertname"] for a in firing} == {"FlujoRunStuck"}
                assert {a["labels"]["reason"] for a in firing} == {"idle"}
                assert len(received) == 1, "the webhook hears of them once, from one exporter"
                assert {a["labels"]["run_id"] for a in received[0][0]["alerts"]} == STUCK_IDS
                assert sample(metrics(second), "state_exporter_job_lock_skipped_total", job_name="stuck_alerts") == 1

                # The first exporter goes away: the second takes the job over at its next run.
                await first.release()
                assert (await second.run_job("stuck_alerts")).success
                assert sample(metrics(second), "state_exporter_job_runs_total", job_name="stuck_alerts") == 1
            finally:
                await first.release()
                await second.release()
    assert server_now(pg_server, database) >= now
