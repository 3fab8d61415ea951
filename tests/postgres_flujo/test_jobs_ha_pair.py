"""Two real exporter daemons on one Postgres database with the same write jobs enabled (an HA pair):
each job runs in one of them only, the other skips every run on the job's advisory lock, and takes
the jobs over when the first one stops."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import psycopg
from pg_jobs_support import JOBS_PASSWORD, STALE_IDS, expected_cleanup, grant_write_role
from postgres import EXPORTER_PASSWORD, OWNER, PostgresServer, shift_to
from processes import Process, http_get, running_daemon
from support import anchor_at, parse_exposition, sample, wait_for

PG = "flujo-postgres/sample06-pg.sql"
JOBS = ("cleanup", "stale_background_tasks")
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(daemon: Process) -> Samples:
    status, body = http_get(daemon.url + "/metrics")
    assert status == 200, body
    return parse_exposition(body)


def job_counts(daemon: Process, job: str) -> tuple[float, float, float]:
    """(runs, errors, lock-skipped runs) of ``job`` in ``daemon``."""
    m = scrape(daemon)
    return (
        sample(m, "state_exporter_job_runs_total", job_name=job),
        sample(m, "state_exporter_job_errors_total", job_name=job),
        sample(m, "state_exporter_job_lock_skipped_total", job_name=job),
    )


def wait_until(daemon: Process, what: str, check: Callable[[float, float, float], bool]) -> None:
    wait_for(
        lambda: all(check(*job_counts(daemon, job)) for job in JOBS), 30, lambda: f"{what}:\n{daemon.output()[-3000:]}"
    )


def config(server: PostgresServer, database: str, tmp: Path) -> str:
    read_secret, write_secret = tmp / "read.pw", tmp / "write.pw"
    read_secret.write_text(EXPORTER_PASSWORD + "\n")
    write_secret.write_text(JOBS_PASSWORD + "\n")
    # A 1 s interval without jitter: the schedule every run of both daemons follows; the test only
    # polls their metrics, it never waits a fixed time.
    every = "{enabled: true, interval: 1s, jitter: 0s}"
    return (
        "logging: {level: info}\n"
        f"db: {{url: 'postgresql://exporter@127.0.0.1:{server.port}/{database}', password_file: '{read_secret}'}}\n"
        "jobs:\n"
        f"  postgres: {{url: 'postgresql://exporter_jobs@127.0.0.1:{server.port}/{database}',"
        f" password_file: '{write_secret}'}}\n"
        f"  cleanup: {{enabled: true, interval: 1s, jitter: 0s, days_old: 7, delete_runs: true,"
        " pause_between_batches: 0s, batch_size: 4}\n"
        f"  stale_background_tasks: {every}\n"
    )


def test_two_daemons_run_each_job_once_and_the_second_takes_over(
    pg_server: PostgresServer, pg_database: str, tmp_path: Path
) -> None:
    shift_to(pg_server, pg_database, anchor_at(PG))
    grant_write_role(pg_server, pg_database)
    with psycopg.connect(pg_server.owner_url(pg_database)) as conn:
        now: datetime = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
    _, _, deleted = expected_cleanup(pg_server, pg_database, now - timedelta(days=7))
    text = config(pg_server, pg_database, tmp_path)

    with running_daemon(tmp_path, config=text) as first:
        wait_until(first, "the first daemon to run both jobs", lambda runs, errors, skipped: runs >= 1)
        with running_daemon(tmp_path, config=text) as second:
            # Several intervals on both: the second skips every run, the first runs every interval.
            wait_until(
                second, "the second daemon to skip 3 runs of each job", lambda runs, errors, skipped: skipped >= 3
            )
            before = {job: job_counts(first, job)[0] for job in JOBS}
            skipped_before = {job: job_counts(second, job)[2] for job in JOBS}
            # Four more skips of each job span more than three intervals: the first finishes at least two runs.
            wait_for(
                lambda: all(job_counts(second, job)[2] >= skipped_before[job] + 4 for job in JOBS),
                30,
                lambda: f"4 more skipped runs:\n{second.output()[-3000:]}",
            )
            for job in JOBS:
                runs, errors, _ = job_counts(second, job)
                assert (runs, errors) == (0, 0), second.output()
                first_runs, first_errors, first_skipped = job_counts(first, job)
                assert first_runs >= before[job] + 2 and first_errors == 0 and first_skipped == 0
            one, two = scrape(first), scrape(second)
            # The rows changed once, by the first daemon only.
            assert sample(one, "state_exporter_stale_tasks_failed_total") == len(STALE_IDS)
            assert sample(two, "state_exporter_stale_tasks_failed_total") == 0
            for table, rows in deleted.items():
                assert sample(one, "state_exporter_cleanup_deleted_rows_total", table=table) == rows
                assert sample(two, "state_exporter_cleanup_deleted_rows_total", table=table) == 0
            failed = pg_server.psql(
                pg_database,
                "SELECT COUNT(*) FROM workflow_state WHERE background_error = 'Task timeout: process likely crashed';",
            )
            assert int(failed) == len(STALE_IDS)

            first.stop()  # SIGTERM: its sessions end, and with them its advisory locks
            # The one background task still running (3 h old) goes stale: only the second can fail it now.
            pg_server.psql(
                pg_database,
                "UPDATE workflow_state SET updated_at = now() - interval '30 hours'"
                " WHERE status = 'running' AND is_background_task;",
                user=OWNER,
            )
            wait_until(second, "the second daemon to take both jobs over", lambda runs, errors, skipped: runs >= 1)
            wait_for(
                lambda: sample(scrape(second), "state_exporter_stale_tasks_failed_total") == 1,
                30,
                lambda: f"the second daemon to fail the new stale task:\n{second.output()[-3000:]}",
            )
            for job in JOBS:
                assert job_counts(second, job)[1] == 0, second.output()
            logs = first.output() + second.output()
            assert "took its advisory lock" in first.output() and "took its advisory lock" in second.output()
            assert second.output().count("another exporter holds its advisory lock") == len(JOBS)
            assert EXPORTER_PASSWORD not in logs and JOBS_PASSWORD not in logs


def test_a_reload_hands_the_locks_to_the_new_jobs_without_a_skip(
    pg_server: PostgresServer, pg_database: str, tmp_path: Path
) -> None:
    shift_to(pg_server, pg_database, anchor_at(PG))
    grant_write_role(pg_server, pg_database)
    text = config(pg_server, pg_database, tmp_path)
    with running_daemon(tmp_path, config=text) as daemon:
        wait_until(daemon, "both jobs to run", lambda runs, errors, skipped: runs >= 1)
        runs = {job: job_counts(daemon, job)[0] for job in JOBS}
        # A changed jobs section rebuilds the job runner: the old one's sessions end before the new one starts.
        (path,) = tmp_path.glob("daemon-*.yaml")
        path.write_text(text.replace("days_old: 7", "days_old: 8"))
        os.kill(daemon.pid, signal.SIGHUP)
        wait_for(
            lambda: all(job_counts(daemon, job)[0] >= runs[job] + 2 for job in JOBS),
            30,
            lambda: f"two more runs after the reload:\n{daemon.output()[-3000:]}",
        )
        for job in JOBS:
            assert job_counts(daemon, job)[1:] == (0, 0), daemon.output()
        log = daemon.output()
        assert "config reloaded" in log and log.count("released its advisory lock") == len(JOBS)
        assert log.count("took its advisory lock") == 2 * len(JOBS)
