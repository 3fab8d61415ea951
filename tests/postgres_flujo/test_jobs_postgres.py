"""Flujo's write jobs (cleanup, stale background tasks) on a real Postgres 15 holding the real flujo
0.6.11 dump: the same semantics as on SQLite, the write role, the advisory lock."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from pg_jobs_support import CHILDREN, CLEANUP_KEY, STALE_IDS, STALE_KEY, expected_cleanup, grant_write_role, ids, query
from postgres import OWNER, PostgresServer, shift_to
from prometheus_client import CollectorRegistry, generate_latest
from support import anchor_at, parse_exposition, sample, wait_for

from exporter.clock import ManualClock
from exporter.config import Config, ConfigError, load_config
from exporter.config_checks import db_path_problems
from exporter.jobs import JobRunner, JobsConfig
from exporter.jobs.pg import APPLICATION_NAME, PostgresTarget, lock_key

PG = "flujo-postgres/sample06-pg.sql"
FLUJO_TEXT = "Task timeout: process likely crashed"


@pytest.fixture
def shifted(pg_server: PostgresServer, pg_database: str) -> tuple[str, datetime]:
    """The test's database with the anchor moved to the server's now; (database, that now)."""
    shift_to(pg_server, pg_database, anchor_at(PG))
    return pg_database, server_now(pg_server, pg_database)


def server_now(server: PostgresServer, database: str) -> datetime:
    with psycopg.connect(server.owner_url(database)) as conn:
        row = conn.execute("SELECT now()").fetchone()
        assert row is not None
        return row[0]  # type: ignore[no-any-return]


def target(url: str, lock_timeout: float = 0.5) -> PostgresTarget:
    return PostgresTarget(url, None, lock_timeout=lock_timeout, statement_timeout=5.0)


async def no_sleep(_: float) -> None:
    await asyncio.sleep(0)


_RUNNERS: list[JobRunner] = []


@pytest.fixture(autouse=True)
async def _release_locks() -> AsyncIterator[None]:
    """The advisory-lock sessions a runner keeps between runs end with the test, as when a daemon stops."""
    yield
    while _RUNNERS:
        await _RUNNERS.pop().release()


def runner(url: str, now: datetime, lock_timeout: float = 0.5, **jobs: Any) -> JobRunner:
    config = JobsConfig.model_validate(jobs)
    made = JobRunner(config, target(url, lock_timeout), UTC, None, ManualClock(now), sleep=no_sleep)
    _RUNNERS.append(made)
    return made


def cleanup_runner(url: str, now: datetime, **cleanup: Any) -> JobRunner:
    settings = {"enabled": True, "jitter": 0, "pause_between_batches": 0, **cleanup}
    return runner(url, now, cleanup=settings)


def metrics(job_runner: JobRunner) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(job_runner.collector())
    return parse_exposition(generate_latest(registry).decode())


def table_counts(server: PostgresServer, database: str) -> dict[str, int]:
    return {
        t: query(server, database, f"SELECT COUNT(*) FROM {t}")[0][0] for t in ("workflow_state", "runs", *CHILDREN)
    }


# -- cleanup ---------------------------------------------------------------------------------------------


async def test_cleanup_deletes_exactly_the_old_rows_with_their_children(
    pg_server: PostgresServer, shifted: tuple[str, datetime]
) -> None:
    database, now = shifted
    cutoff = now - timedelta(days=7)
    workflows, runs, want = expected_cleanup(pg_server, database, cutoff)
    assert len(workflows) >= 5 and len(runs) >= 5 and want["spans"] > 0  # the fixture spans 40 days
    before = table_counts(pg_server, database)
    url = grant_write_role(pg_server, database)
    # Small batches: the keyset paging by run_id crosses many pages, and ties of created_at too.
    job_runner = cleanup_runner(url, now, days_old=7, delete_runs=True, batch_size=3)
    stats = await job_runner.run_job("cleanup")
    assert stats.success, stats.last_error
    after = table_counts(pg_server, database)
    assert {t: before[t] - after[t] for t in before} == want
    assert ids(pg_server, database, "SELECT run_id FROM workflow_state") & workflows == set()
    assert ids(pg_server, database, "SELECT run_id FROM runs") & runs == set()
    for table in CHILDREN:  # no orphans
        assert not query(pg_server, database, f"SELECT 1 FROM {table} WHERE run_id = ANY(%s)", (list(runs),))
    assert not ids(pg_server, database, "SELECT run_id FROM workflow_state WHERE created_at < %s", (cutoff,))
    report = job_runner.cleanup.last_report if job_runner.cleanup else None
    assert report is not None and set(report.workflow_run_ids) == workflows and set(report.run_ids) == runs
    assert report.transactions >= 4
    m = metrics(job_runner)
    for table, rows in want.items():
        assert sample(m, "state_exporter_cleanup_deleted_rows_total", table=table) == rows
    assert sample(m, "state_exporter_job_runs_total", job_name="cleanup") == 1
    assert sample(m, "state_exporter_job_lock_skipped_total", job_name="cleanup") == 0
    # Nothing left to do: the next run deletes nothing.
    assert (await job_runner.run_job("cleanup")).success
    assert table_counts(pg_server, database) == after


async def test_cleanup_dry_run_with_the_read_role_deletes_nothing(
    pg_server: PostgresServer, shifted: tuple[str, datetime]
) -> None:
    database, now = shifted
    _, _, want = expected_cleanup(pg_server, database, now - timedelta(days=7))
    before = table_counts(pg_server, database)
    # The read-only exporter role: a dry run needs no write role, and the advisory lock works there.
    job_runner = cleanup_runner(pg_server.exporter_url(database), now, days_old=7, delete_runs=True, dry_run=True)
    stats = await job_runner.run_job("cleanup")
    assert stats.success, stats.last_error
    assert table_counts(pg_server, database) == before
    m = metrics(job_runner)
    for table, rows in want.items():
        assert sample(m, "state_exporter_cleanup_would_delete_rows", table=table) == rows
        assert sample(m, "state_exporter_cleanup_deleted_rows_total", table=table) == 0


async def test_cleanup_keeps_a_row_resaved_between_read_and_delete(
    pg_server: PostgresServer, shifted: tuple[str, datetime]
) -> None:
    database, now = shifted
    cutoff = now - timedelta(days=7)
    workflows = sorted(ids(pg_server, database, "SELECT run_id FROM workflow_state WHERE created_at < %s", (cutoff,)))
    url = grant_write_role(pg_server, database)
    job_runner = cleanup_runner(url, now, days_old=7)
    assert job_runner.cleanup is not None
    job = job_runner.cleanup
    original = job._delete_workflows

    def resave_then_delete(*args: Any) -> Any:
        # The application saves the run again on its own connection: flujo's upsert keeps created_at
        # and moves updated_at, so only updated_at can tell.
        pg_server.psql(
            database, f"UPDATE workflow_state SET updated_at = now() WHERE run_id = '{workflows[0]}';", user=OWNER
        )
        return original(*args)

    job._delete_workflows = resave_then_delete  # type: ignore[method-assign]
    assert (await job_runner.run_job("cleanup")).success
    assert ids(pg_server, database, "SELECT run_id FROM workflow_state WHERE created_at < %s", (cutoff,)) == {
        workflows[0]
    }


async def test_cleanup_skips_a_row_the_application_holds_locked(
    pg_server: PostgresServer, shifted: tuple[str, datetime]
) -> None:
    database, now = shifted
    cutoff = now - timedelta(days=7)
    workflows = sorted(ids(pg_server, database, "SELECT run_id FROM workflow_state WHERE created_at < %s", (cutoff,)))
    url = grant_write_role(pg_server, database)
    job_runner = cleanup_runner(url, now, days_old=7)
    with psycopg.connect(pg_server.owner_url(database)) as app:
        app.execute("SELECT 1 FROM workflow_state WHERE run_id = %s FOR UPDATE", (workflows[0],))
        stats = await job_runner.run_job("cleanup")  # the app's transaction is still open
        assert stats.success, stats.last_error
        assert stats.duration_s < 1  # skipped, not waited for (the lock_timeout would fail the run)
    left = ids(pg_server, database, "SELECT run_id FROM workflow_state WHERE created_at < %s", (cutoff,))
    assert left == {workflows[0]}
    assert (await job_runner.run_job("cleanup")).success  # the next run deletes it
    assert not ids(pg_server, database, "SELECT run_id FROM workflow_state WHERE created_at < %s", (cutoff,))


async def test_cleanup_skips_and_counts_values_python_cannot_hold(
    pg_server: PostgresServer, shifted: tuple[str, datetime], caplog: pytest.LogCaptureFixture
) -> None:
    database, now = shifted
    cutoff = now - timedelta(days=7)
    workflows = sorted(ids(pg_server, database, "SELECT run_id FROM workflow_state WHERE created_at < %s", (cutoff,)))
    # -infinity sorts first and is "older" than any cutoff; psycopg cannot load it into a datetime.
    pg_server.psql(
        database, f"UPDATE workflow_state SET created_at = '-infinity' WHERE run_id = '{workflows[0]}';", user=OWNER
    )
    url = grant_write_role(pg_server, database)
    job_runner = cleanup_runner(url, now, days_old=7, batch_size=2)
    with caplog.at_level(logging.WARNING):
        stats = await job_runner.run_job("cleanup")
    assert stats.success, stats.last_error
    report = job_runner.cleanup.last_report if job_runner.cleanup else None
    assert report is not None and report.bad_values == 1
    assert set(report.workflow_run_ids) == set(workflows[1:])
    assert ids(pg_server, database, "SELECT run_id FROM workflow_state WHERE created_at < %s", (cutoff,)) == {
        workflows[0]
    }
    assert "not a timestamp ('-infinity')" in caplog.text


# -- stale background tasks ------------------------------------------------------------------------------


def stale_runner(url: str, now: datetime, lock_timeout: float = 0.5) -> JobRunner:
    settings = {"enabled": True, "jitter": 0, "stale_hours": 24}
    return runner(url, now, lock_timeout, stale_background_tasks=settings)


def workflow_rows(server: PostgresServer, database: str) -> dict[str, tuple[Any, ...]]:
    return {
        row[0]: row
        for row in query(
            server,
            database,
            "SELECT run_id, status, background_error,"
            " CASE WHEN isfinite(updated_at) THEN updated_at END FROM workflow_state",
        )
    }


async def test_stale_tasks_are_failed_with_flujos_text(
    pg_server: PostgresServer, shifted: tuple[str, datetime]
) -> None:
    database, now = shifted
    before = workflow_rows(pg_server, database)
    job_runner = stale_runner(grant_write_role(pg_server, database), now)
    stats = await job_runner.run_job("stale_background_tasks")
    assert stats.success, stats.last_error
    after = workflow_rows(pg_server, database)
    changed = {run_id for run_id in before if before[run_id] != after[run_id]}
    assert changed == STALE_IDS
    for run_id in changed:
        assert after[run_id][1:] == ("failed", FLUJO_TEXT, now)
    assert sample(metrics(job_runner), "state_exporter_stale_tasks_failed_total") == 4
    assert (await job_runner.run_job("stale_background_tasks")).success
    assert workflow_rows(pg_server, database) == after


async def test_stale_task_resaved_between_read_and_update_is_left_alone(
    pg_server: PostgresServer, shifted: tuple[str, datetime]
) -> None:
    database, now = shifted
    job_runner = stale_runner(grant_write_role(pg_server, database), now)
    assert job_runner.stale is not None
    job = job_runner.stale
    original = job._fail
    resaved = sorted(STALE_IDS)[0]

    def resave_then_fail(*args: Any) -> Any:
        # The task reports progress on the application's connection after the job read it.
        pg_server.psql(
            database, f"UPDATE workflow_state SET updated_at = now() WHERE run_id = '{resaved}';", user=OWNER
        )
        return original(*args)

    job._fail = resave_then_fail  # type: ignore[method-assign]
    assert (await job_runner.run_job("stale_background_tasks")).success
    rows = workflow_rows(pg_server, database)
    assert rows[resaved][1:3] == ("running", None)
    assert {r for r in STALE_IDS if rows[r][1] == "failed"} == STALE_IDS - {resaved}
    assert set(job.last_changed) == STALE_IDS - {resaved}


async def test_stale_update_waiting_for_the_apps_row_lock_rechecks_the_row(
    pg_server: PostgresServer, shifted: tuple[str, datetime]
) -> None:
    """The true race: the application's save is in flight (row locked, not committed) when the job's
    guarded UPDATE reaches the row.  The UPDATE waits, then re-evaluates its WHERE on the committed
    version (READ COMMITTED), sees the new updated_at, and leaves the task alone."""
    database, now = shifted
    resaved = sorted(STALE_IDS)[2]
    job_runner = stale_runner(grant_write_role(pg_server, database), now, lock_timeout=30)
    with psycopg.connect(pg_server.owner_url(database)) as app:
        app.execute("UPDATE workflow_state SET updated_at = now() WHERE run_id = %s", (resaved,))
        run = asyncio.create_task(job_runner.run_job("stale_background_tasks"))

        def job_waits_for_the_row() -> bool:
            # As the superuser: pg_stat_activity hides other roles' wait events from the owner.
            waiting = pg_server.psql(
                "postgres",
                "SELECT COUNT(*) FROM pg_stat_activity"
                f" WHERE application_name = '{APPLICATION_NAME}' AND wait_event_type = 'Lock';",
            )
            return int(waiting) > 0

        await asyncio.to_thread(wait_for, job_waits_for_the_row, 30, "the job's UPDATE to wait for the row lock")
        app.commit()  # the save lands while the job's UPDATE waits for it
        stats = await run
    assert stats.success, stats.last_error
    rows = workflow_rows(pg_server, database)
    assert rows[resaved][1:3] == ("running", None)
    assert {r for r in STALE_IDS if rows[r][1] == "failed"} == STALE_IDS - {resaved}


async def test_stale_task_with_an_unreadable_time_is_skipped(
    pg_server: PostgresServer, shifted: tuple[str, datetime], caplog: pytest.LogCaptureFixture
) -> None:
    database, now = shifted
    bad = sorted(STALE_IDS)[1]
    pg_server.psql(database, f"UPDATE workflow_state SET updated_at = '-infinity' WHERE run_id = '{bad}';", user=OWNER)
    job_runner = stale_runner(grant_write_role(pg_server, database), now)
    with caplog.at_level(logging.WARNING):
        assert (await job_runner.run_job("stale_background_tasks")).success
    assert job_runner.stale is not None and set(job_runner.stale.last_changed) == STALE_IDS - {bad}
    assert workflow_rows(pg_server, database)[bad][1] == "running"
    assert f"skipping run_id='{bad}'" in caplog.text


# -- role, errors, the advisory lock -------------------------------------------------------------------


async def test_the_read_role_cannot_write_and_says_which_key_to_set(
    pg_server: PostgresServer, shifted: tuple[str, datetime], caplog: pytest.LogCaptureFixture
) -> None:
    database, now = shifted
    before = workflow_rows(pg_server, database)
    job_runner = stale_runner(pg_server.exporter_url(database), now)
    with caplog.at_level(logging.INFO):
        stats = await job_runner.run_job("stale_background_tasks")
    assert not stats.success and stats.last_error is not None
    assert "jobs.postgres.url" in stats.last_error
    assert "exporter-Secret-42" not in stats.last_error and "exporter-Secret-42" not in caplog.text
    assert workflow_rows(pg_server, database) == before


@contextlib.contextmanager
def lock_held_elsewhere(url: str, job: str) -> Iterator[None]:
    with psycopg.connect(url, autocommit=True) as other:
        assert other.execute("SELECT pg_try_advisory_lock(%s, %s)", lock_key(job)).fetchone() == (True,)
        yield


async def test_a_run_is_skipped_while_another_exporter_holds_the_lock(
    pg_server: PostgresServer, shifted: tuple[str, datetime]
) -> None:
    database, now = shifted
    url = grant_write_role(pg_server, database)
    before = workflow_rows(pg_server, database)
    job_runner = stale_runner(url, now)
    with lock_held_elsewhere(pg_server.owner_url(database), "stale_background_tasks"):
        stats = await job_runner.run_job("stale_background_tasks")
        assert workflow_rows(pg_server, database) == before
    assert (stats.runs, stats.errors, stats.lock_skipped, stats.success) == (0, 0, 1, False)
    m = metrics(job_runner)
    assert sample(m, "state_exporter_job_lock_skipped_total", job_name="stale_background_tasks") == 1
    assert sample(m, "state_exporter_job_runs_total", job_name="stale_background_tasks") == 0
    # The other session ended: the lock is free, this exporter takes it and keeps it between runs.
    assert (await job_runner.run_job("stale_background_tasks")).success
    held = query(
        pg_server,
        database,
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.classid::int = %s AND l.objid::int = %s AND l.granted",
        lock_key("stale_background_tasks"),
    )
    assert held == [(APPLICATION_NAME,)]
    await job_runner.release()
    assert not query(
        pg_server,
        database,
        "SELECT 1 FROM pg_locks WHERE locktype = 'advisory'"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )


def test_lock_keys_are_stable_and_distinct() -> None:
    # Two exporters of different versions must agree on the keys: fixed values, not hash().
    assert lock_key("cleanup") != lock_key("stale_background_tasks")
    assert lock_key("cleanup")[0] == lock_key("stale_background_tasks")[0]
    assert (lock_key("cleanup"), lock_key("stale_background_tasks")) == (CLEANUP_KEY, STALE_KEY)


# -- config -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("jobs", "problem"),
    [
        ({"stale_background_tasks": {"enabled": True}}, "jobs.postgres.url"),
        ({"cleanup": {"enabled": True}}, "jobs.postgres.url"),
        ({"cleanup": {"enabled": True, "dry_run": True}}, None),
        ({"cleanup": {"enabled": True}, "postgres": {"url": "postgresql://jobs@db/flujo"}}, None),
    ],
)
def test_a_write_job_on_postgres_needs_the_write_role(tmp_path: Any, jobs: dict[str, Any], problem: str | None) -> None:
    import yaml

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"db": {"url": "postgresql://exporter@db/flujo"}, "jobs": jobs}))
    if problem is None:
        assert isinstance(load_config(path, env={}, checks=(db_path_problems,)), Config)
        return
    with pytest.raises(ConfigError) as failed:
        load_config(path, env={}, checks=(db_path_problems,))
    assert problem in str(failed.value)


def test_jobs_postgres_url_is_for_postgres_only(tmp_path: Any) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(f"db: {{path: {tmp_path / 'x.db'}}}\njobs: {{postgres: {{url: 'postgresql://u:pw@h/d'}}}}\n")
    with pytest.raises(ConfigError) as failed:
        load_config(path, env={}, checks=(db_path_problems,))
    assert "jobs.postgres.url" in str(failed.value) and "pw@" not in str(failed.value)


def test_check_config_names_the_missing_write_role(tmp_path: Any) -> None:
    import subprocess
    import sys

    from processes import daemon_env

    path = tmp_path / "config.yaml"
    path.write_text(
        "db: {url: 'postgresql://exporter@127.0.0.1:1/flujo'}\njobs: {stale_background_tasks: {enabled: true}}\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "exporter", "check-config", str(path)],
        capture_output=True,
        text=True,
        env=daemon_env(),
        check=False,
        timeout=60,
    )
    assert done.returncode != 0
    assert "jobs.postgres.url: required by jobs.stale_background_tasks" in done.stderr + done.stdout


async def test_connect_errors_name_the_database_without_its_password() -> None:
    from processes import free_port

    secret = "w-Secret-314"
    job_target = target(f"postgresql://exporter_jobs:{secret}@127.0.0.1:{free_port()}/flujo")
    job_runner = JobRunner(
        JobsConfig.model_validate({"stale_background_tasks": {"enabled": True, "jitter": 0}}),
        job_target,
        UTC,
        None,
        ManualClock(datetime.now(UTC)),
        sleep=no_sleep,
    )
    stats = await job_runner.run_job("stale_background_tasks")
    assert not stats.success and stats.last_error is not None
    assert stats.last_error.startswith(f"postgresql://127.0.0.1:{job_target.url.rsplit(':', 1)[1]}")
    assert secret not in stats.last_error


def test_the_target_repr_hides_the_url() -> None:
    assert "w-Secret" not in repr(target("postgresql://jobs:w-Secret@127.0.0.1/flujo"))
