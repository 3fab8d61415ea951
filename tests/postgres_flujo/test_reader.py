"""The Postgres reader against the suite's real server: read-only by construction, bounded, and every
way a database can be unusable reported as a bounded reason with a message that names the problem
and holds no secret."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from postgres import COMPUTED_AT, OWNER, PostgresServer, free_port, scrape

from exporter.clock import ManualClock
from exporter.config import MetricsConfig
from exporter.engines.flujo.layout import Capability, flujo_schema
from exporter.reader import DatabaseUnavailable, Problem
from exporter.reader.postgres import APPLICATION_NAME, PostgresReader
from exporter.refresh import Refresher


def secret() -> str:
    return f"pw-{uuid.uuid4().hex}"


def test_sessions_are_read_only_even_for_a_role_that_may_write(pg_server: PostgresServer, pg_database: str) -> None:
    """The app's own role owns the tables; through the reader it still cannot change a row."""
    reader = PostgresReader(pg_server.owner_url(pg_database), query_timeout=3)
    with reader.session() as session:
        show = {
            name: session.db.execute(f"SHOW {name}").fetchone()[0]
            for name in ("transaction_read_only", "transaction_isolation", "statement_timeout")
        }
        (name,) = session.db.execute(
            "SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()"
        ).fetchone()
    assert show == {
        "transaction_read_only": "on",
        "transaction_isolation": "repeatable read",
        "statement_timeout": "3s",
    }
    assert name == APPLICATION_NAME
    with pytest.raises(DatabaseUnavailable) as refused, reader.session() as session:
        session.db.execute("DELETE FROM runs")
    assert "read-only transaction" in refused.value.message
    assert pg_server.psql(pg_database, "SELECT COUNT(*) FROM runs;").strip() == "60"


def test_a_wrong_password_is_auth_failed_and_never_shown(
    pg_server: PostgresServer, pg_database: str, tmp_path: Path
) -> None:
    right, wrong = secret(), secret()
    pg_server.reader_role(pg_database, "rotated_reader", right)
    password_file = tmp_path / "password"
    password_file.write_text(wrong + "\n")
    reader = PostgresReader(pg_server.url(pg_database, "rotated_reader"), password_file=password_file)
    with pytest.raises(DatabaseUnavailable) as failed:
        reader.schema()
    assert failed.value.problem is Problem.AUTH_FAILED
    assert "password authentication failed" in failed.value.message and "rotated_reader" in failed.value.message
    # The file is read at every connect: a rotated password works without a restart.
    password_file.write_text(right + "\n")
    assert flujo_schema(reader.schema()).supports(Capability.RUNS)
    # A password written in the URL is used, and never shown either.
    inline = PostgresReader(f"postgresql://rotated_reader:{wrong}@127.0.0.1:{pg_server.port}/{pg_database}")
    with pytest.raises(DatabaseUnavailable) as failed_inline:
        inline.schema()
    assert failed_inline.value.problem is Problem.AUTH_FAILED
    assert inline.path == f"postgresql://127.0.0.1:{pg_server.port}/{pg_database}"
    for message in (failed.value.message, failed_inline.value.message):
        assert wrong not in message and right not in message


def test_no_server_is_unreachable_and_no_database_is_missing(pg_server: PostgresServer) -> None:
    with pytest.raises(DatabaseUnavailable) as refused:
        PostgresReader(f"postgresql://exporter@127.0.0.1:{free_port()}/flujo", query_timeout=2).schema()
    assert refused.value.problem is Problem.UNREACHABLE
    assert "is the server running" in refused.value.message
    with pytest.raises(DatabaseUnavailable) as missing:
        PostgresReader(pg_server.owner_url("no_such_db")).schema()
    assert missing.value.problem is Problem.MISSING
    assert '"no_such_db" does not exist' in missing.value.message


def test_a_database_without_flujo_tables_is_an_unknown_layout(pg_server: PostgresServer) -> None:
    pg_server.psql("postgres", f"CREATE DATABASE empty_one OWNER {OWNER};")
    with pytest.raises(DatabaseUnavailable) as unknown:
        PostgresReader(pg_server.owner_url("empty_one")).schema()
    assert unknown.value.problem is Problem.UNKNOWN_LAYOUT
    assert "no flujo_schema_versions table" in unknown.value.message


def test_the_pgvector_layout_with_evaluations_is_read_too(pg_server: PostgresServer, pg_database: str) -> None:
    """With pgvector, flujo's migrations 003-005 add memories and evaluations (the README's other
    layout); the metrics are the same and the evaluations capability shows."""
    pg_server.psql(
        pg_database,
        "INSERT INTO flujo_schema_versions (version) VALUES (3), (4), (5);\n"
        "CREATE TABLE evaluations (id SERIAL PRIMARY KEY, run_id TEXT NOT NULL REFERENCES runs(run_id),"
        " step_name TEXT, score REAL NOT NULL, feedback TEXT, metadata JSONB,"
        " created_at TIMESTAMPTZ NOT NULL DEFAULT now());\n",
        user=OWNER,
    )
    reader = PostgresReader(pg_server.exporter_url(pg_database))
    schema = flujo_schema(reader.schema())
    assert schema.schema_versions == (1, 2, 3, 4, 5)
    assert schema.supports(Capability.EVALUATIONS)  # the default privileges gave exporter SELECT on it
    samples = scrape(reader, COMPUTED_AT)
    assert samples[("flujo_db_capability", frozenset({("capability", "evaluations")}))] == 1
    assert samples[("flujo_workflows", frozenset({("status", "completed")}))] == 36


def test_a_missing_grant_names_the_table_in_readiness(pg_server: PostgresServer, pg_database: str) -> None:
    pg_server.psql(pg_database, "REVOKE SELECT ON steps FROM exporter;")
    refresher = Refresher(PostgresReader(pg_server.exporter_url(pg_database)), MetricsConfig, ManualClock(COMPUTED_AT))
    state = refresher.refresh(force_all=True)
    assert state.problem is not None and state.problem.problem is Problem.UNREADABLE
    ready = refresher.ready(COMPUTED_AT)
    assert not ready.ready and ready.reason == "unreadable"
    assert "permission denied for table steps" in ready.detail and "SELECT" in ready.detail
    assert state.phases["snapshot"].success  # the tiers that need no steps still ran


def test_a_query_past_the_timeout_is_cancelled_by_the_server(pg_server: PostgresServer, pg_database: str) -> None:
    """A writer holding a lock the reader waits for: statement_timeout ends the wait on the server."""
    reader = PostgresReader(pg_server.exporter_url(pg_database), query_timeout=0.5)
    refresher = Refresher(reader, MetricsConfig, ManualClock(COMPUTED_AT))
    with psycopg.connect(pg_server.owner_url(pg_database)) as holder:
        holder.execute("LOCK TABLE workflow_state IN ACCESS EXCLUSIVE MODE")
        started = datetime.now(UTC)
        state = refresher.refresh(force_all=True)
        waited = datetime.now(UTC) - started
        holder.rollback()
    assert state.problem is not None and state.problem.problem is Problem.TIMEOUT, state.problem
    assert "statement timeout" in state.problem.message
    assert waited < timedelta(seconds=10)
    assert refresher.refresh(force_all=True).problem is None  # the lock gone, the next refresh reads


@pytest.fixture
def owner(pg_server: PostgresServer, pg_database: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(pg_server.owner_url(pg_database), autocommit=True) as conn:
        yield conn


def _new_run(conn: psycopg.Connection, run_id: str, status: str, created: datetime) -> None:
    conn.execute(
        "INSERT INTO runs (run_id, pipeline_id, pipeline_name, pipeline_version, status, created_at, updated_at)"
        " VALUES (%s, 'p', 'etl_daily', '1', %s, %s, %s)",
        (run_id, status, created, created + timedelta(seconds=30)),
    )


def _step(conn: psycopg.Connection, run_id: str, status: str) -> None:
    conn.execute(
        "INSERT INTO steps (run_id, step_name, step_index, status, execution_time_ms, created_at)"
        " VALUES (%s, 'extract', 0, %s, 1200, now())",
        (run_id, status),
    )


def _finished(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_runs_and_steps_finishing_after_the_seed_are_counted_once(
    pg_server: PostgresServer, pg_database: str, owner: psycopg.Connection
) -> None:
    """No rowid on Postgres: new runs come from the created_at window, a pending run is re-checked by
    its run_id, steps come by SERIAL id, and a re-read never counts a row twice."""
    from prometheus_client import generate_latest
    from support import parse_exposition

    from exporter.collectors import View, build_registry

    now = datetime.now(UTC)
    clock = ManualClock(now)
    settings = MetricsConfig()
    refresher = Refresher(PostgresReader(pg_server.exporter_url(pg_database)), lambda: settings, clock)
    registry = build_registry(View(lambda: refresher.state, lambda: settings, clock))

    def refreshed() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        state = refresher.refresh()
        assert state.problem is None and not state.failing_phases(), state.failing_phases()
        return parse_exposition(generate_latest(registry).decode())

    seed = refreshed()
    completed = _finished(seed, "flujo_runs_finished_total", pipeline="etl_daily", status="completed")
    steps = _finished(seed, "flujo_steps_finished_total", step="extract", status="completed")
    # A run that started and ended between two refreshes, and one still running.
    _new_run(owner, "run_new_done", "completed", now - timedelta(minutes=2))
    _new_run(owner, "run_new_running", "running", now - timedelta(minutes=1))
    _step(owner, "run_new_done", "completed")
    after = refreshed()
    assert _finished(after, "flujo_runs_finished_total", pipeline="etl_daily", status="completed") == completed + 1
    assert _finished(after, "flujo_steps_finished_total", step="extract", status="completed") == steps + 1
    # The running one ends; a run committed late with an older created_at (inside the window) appears.
    owner.execute("UPDATE runs SET status = 'completed', updated_at = now() WHERE run_id = 'run_new_running'")
    _new_run(owner, "run_late", "failed", now - timedelta(minutes=5))
    again = refreshed()
    assert _finished(again, "flujo_runs_finished_total", pipeline="etl_daily", status="completed") == completed + 2
    assert _finished(again, "flujo_runs_finished_total", pipeline="etl_daily", status="failed") == (
        _finished(seed, "flujo_runs_finished_total", pipeline="etl_daily", status="failed") + 1
    )
    # Nothing new: the re-read windows count nothing twice.
    assert _totals(refreshed()) == _totals(again)


def test_a_paused_run_is_counted_once_when_it_ends_in_place(
    pg_server: PostgresServer, pg_database: str, owner: psycopg.Connection
) -> None:
    """A paused run is ``completed`` in ``runs`` and held back by its ``workflow_state`` (flujo's odd
    path); Postgres updates both rows in place, so the still-held runs are found through the status
    index and a key probe: a save that keeps it paused counts nothing, the resumed run's failure counts
    it once; an admin cancel (workflow_state alone) counts another paused run once."""
    from prometheus_client import generate_latest
    from support import parse_exposition

    from exporter.collectors import View, build_registry

    row = owner.execute(
        "SELECT w.run_id, r.pipeline_name FROM workflow_state w JOIN runs r USING (run_id)"
        " WHERE w.status = 'paused' AND r.status = 'completed' AND NOT w.is_background_task ORDER BY 1 LIMIT 1"
    ).fetchone()
    assert row is not None, "the fixture has paused runs"
    run_id, pipeline = row
    now = datetime.now(UTC)
    clock = ManualClock(now)
    settings = MetricsConfig()
    refresher = Refresher(PostgresReader(pg_server.exporter_url(pg_database)), lambda: settings, clock)
    registry = build_registry(View(lambda: refresher.state, lambda: settings, clock))

    def failed() -> float:
        state = refresher.refresh()
        assert state.problem is None and not state.failing_phases(), state.failing_phases()
        samples = parse_exposition(generate_latest(registry).decode())
        return _finished(samples, "flujo_runs_finished_total", pipeline=pipeline, status="failed")

    seed = failed()
    owner.execute("UPDATE workflow_state SET updated_at = now() WHERE run_id = %s", (run_id,))  # saved, still paused
    assert failed() == seed
    # Resumed, then failed: flujo 0.6 writes runs' end and leaves workflow_state paused.
    owner.execute("UPDATE runs SET status = 'failed', updated_at = now() WHERE run_id = %s", (run_id,))
    assert failed() == seed + 1
    owner.execute("UPDATE workflow_state SET updated_at = now() WHERE run_id = %s", (run_id,))
    assert failed() == seed + 1, "counted once"
    other = owner.execute(
        "SELECT w.run_id, r.pipeline_name FROM workflow_state w JOIN runs r USING (run_id) WHERE w.status = 'paused'"
        " AND r.status = 'completed' AND NOT w.is_background_task AND w.run_id <> %s ORDER BY 1 LIMIT 1",
        (run_id,),
    ).fetchone()
    assert other is not None
    run_id, pipeline = other

    def cancelled() -> float:
        refresher.refresh()
        samples = parse_exposition(generate_latest(registry).decode())
        return _finished(samples, "flujo_runs_finished_total", pipeline=pipeline, status="cancelled")

    before = cancelled()
    owner.execute("UPDATE workflow_state SET status = 'cancelled', updated_at = now() WHERE run_id = %s", (run_id,))
    # flujo may still write runs' end right after workflow_state: one refresh's wait, then counted.
    cancelled()
    assert cancelled() == before + 1
    assert cancelled() == before + 1, "counted once"


def _totals(samples: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> dict[object, float]:
    return {key: value for key, value in samples.items() if key[0].endswith("_total")}


def test_a_step_committed_after_a_higher_id_is_not_lost(
    pg_server: PostgresServer, pg_database: str, owner: psycopg.Connection
) -> None:
    """SERIAL ids are taken at insert, commits come in any order: a lower id committed after a higher
    one was read is still counted, once."""
    from prometheus_client import generate_latest
    from support import parse_exposition

    from exporter.collectors import View, build_registry

    clock = ManualClock(datetime.now(UTC))
    settings = MetricsConfig()
    refresher = Refresher(PostgresReader(pg_server.exporter_url(pg_database)), lambda: settings, clock)
    registry = build_registry(View(lambda: refresher.state, lambda: settings, clock))

    def extracted() -> float:
        state = refresher.refresh()
        assert state.problem is None and not state.failing_phases()
        samples = parse_exposition(generate_latest(registry).decode())
        return _finished(samples, "flujo_steps_finished_total", step="extract", status="failed")

    before = extracted()
    run_id = owner.execute("SELECT run_id FROM runs LIMIT 1").fetchone()[0]  # type: ignore[index]
    with psycopg.connect(pg_server.owner_url(pg_database)) as slow:
        _step(slow, run_id, "failed")  # takes the lower id, not committed yet
        (low,) = slow.execute("SELECT MAX(id) FROM steps").fetchone()  # type: ignore[misc]
        _step(owner, run_id, "failed")  # the higher id, committed at once
        assert extracted() == before + 1  # the higher one is read first
        slow.commit()
    (high,) = owner.execute("SELECT MAX(id) FROM steps").fetchone()  # type: ignore[misc]
    assert low < high
    assert extracted() == before + 2
    assert extracted() == before + 2


def test_one_connection_is_kept_and_replaced_when_it_breaks(pg_server: PostgresServer, pg_database: str) -> None:
    """Sessions reuse the last one's connection (idle, outside any transaction); a connection killed
    while idle (a server restart, a failover, an admin's pg_terminate_backend) is replaced by the next
    session without an error; two sessions at once each have their own."""
    reader = PostgresReader(pg_server.exporter_url(pg_database))

    def backend() -> int:
        with reader.session() as s:
            (pid,) = s.db.execute("SELECT pg_backend_pid()").fetchone()
            return int(pid)

    first = backend()
    assert backend() == first
    state = pg_server.psql("postgres", f"SELECT state FROM pg_stat_activity WHERE pid = {first}").split()
    assert "idle" in state, "kept outside any transaction"
    pg_server.psql("postgres", f"SELECT pg_terminate_backend({first})")
    second = backend()
    assert second != first
    with reader.session() as outer, reader.session() as inner:
        (a,) = outer.db.execute("SELECT pg_backend_pid()").fetchone()
        (b,) = inner.db.execute("SELECT pg_backend_pid()").fetchone()
    assert a != b
    reader.close()
    assert "idle" not in pg_server.psql("postgres", f"SELECT state FROM pg_stat_activity WHERE pid = {second}").split()
