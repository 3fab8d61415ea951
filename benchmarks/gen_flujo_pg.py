"""Fill a Postgres database with N Flujo 0.6.11 runs, for benchmarks.

    populate(owner_url, runs, now)   # from bench_postgres.py

The schema is flujo 0.6.11's own DDL, executed verbatim (``tests/fixtures/flujo-postgres/
flujo-0.6.11-pg15-schema.sql``: migrations 001 and 002, flujo's own indexes only).  Rows are written in
bulk by ``INSERT ... SELECT generate_series`` (a few seconds per million rows), shaped like what flujo's
``PostgresBackend`` stores (see the fixture's README):

* per run, one top-level ``workflow_state`` row (``run_<md5>``, 7 pipelines, JSONB context of ~500 bytes and
  a step history, ``created_at`` the first save and ``updated_at`` the last), one ``runs`` row (``runs.status``
  is never paused nor cancelled: completed for a paused run, the last status before an admin cancel), 3 ``steps``
  rows for a finished run, and 4 ``spans`` (monotonic seconds, UUID ids) once the trace is saved;
* outcomes: completed 84.5 %, failed 12 %, cancelled 3 % (an admin cancel of a paused run), paused 0.3 % (waiting
  at a human-in-the-loop step), running 0.2 % (crashed, never cleaned up), plus every run started in the last 10
  minutes (in flight); one background-task row per 10 runs (completed 60 %, failed 39.5 %, running 0.5 %);
* start times spread evenly over the 365 days up to ``now`` (so ~N/365 fall in any 24 h window).

Deterministic (every value is a function of the row number), then ``VACUUM ANALYZE``: the statistics a
production database has once autovacuum has run, the same for both sides of the benchmark.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import psycopg
import psycopg.sql

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_SQL = ROOT / "tests" / "fixtures" / "flujo-postgres" / "flujo-0.6.11-pg15-schema.sql"

_PIPELINES = (
    "ARRAY['etl_daily','doc_ingest','approval_flow','long_job','llm_summarize','adhoc_query','healthcheck_ping']"
)
_YEAR_S = 365 * 86400

# The outcome of run g, from a hash of g (per mille).
_OUTCOME = """
CASE
  WHEN created > {NOW}::timestamptz - interval '10 minutes' THEN 'running'
  WHEN (g * 7919) % 10000 < 8450 THEN 'completed'
  WHEN (g * 7919) % 10000 < 9650 THEN 'failed'
  WHEN (g * 7919) % 10000 < 9680 THEN 'paused'
  WHEN (g * 7919) % 10000 < 9980 THEN 'cancelled'
  ELSE 'running'
END"""

_WORKFLOWS = f"""
INSERT INTO workflow_state (run_id, pipeline_id, pipeline_name, pipeline_version, current_step_index,
    pipeline_context, last_step_output, step_history, status, created_at, updated_at, total_steps,
    error_message, execution_time_ms, memory_usage_mb, metadata, is_background_task, parent_run_id)
SELECT 'run_' || md5(g::text), 'pid_' || (g % 7), ({_PIPELINES})[1 + g % 7], '1.0', 3,
    jsonb_build_object('initial_prompt', repeat(md5(g::text), 8), 'run_id', 'run_' || md5(g::text),
                       'scratchpad', jsonb_build_object('attempt', g % 3, 'note', repeat('x', 120))),
    jsonb_build_object('result', md5((g + 1)::text)),
    jsonb_build_array(jsonb_build_object('name', 'extract', 'success', true, 'latency_s', (g % 900) / 100.0)),
    status, created, created + make_interval(secs => (g % 600000) / 1000.0), 3,
    CASE WHEN status = 'failed' THEN 'step transform failed: ValueError' END,
    g % 600000, 50 + (g % 200), '{{}}'::jsonb, false, NULL
FROM (SELECT g, created, {_OUTCOME} AS status
        FROM (SELECT g, {{NOW}}::timestamptz - make_interval(secs => (g * 104729) % {_YEAR_S}) AS created
                FROM generate_series(1::bigint, {{RUNS}}) AS g) AS started) AS run
"""

_BACKGROUND = f"""
INSERT INTO workflow_state (run_id, pipeline_id, pipeline_name, pipeline_version, current_step_index,
    pipeline_context, status, created_at, updated_at, total_steps, execution_time_ms, is_background_task,
    parent_run_id, task_id, background_error)
SELECT 'bg_' || md5(g::text), 'pid_' || (g % 7), ({_PIPELINES})[1 + g % 7], '1.0', 1,
    jsonb_build_object('task', md5(g::text)),
    CASE WHEN (g / 10) % 200 < 120 THEN 'completed' WHEN (g / 10) % 200 < 199 THEN 'failed' ELSE 'running' END,
    created, created + make_interval(secs => (g % 90000) / 1000.0), 1, g % 90000, true,
    'run_' || md5(g::text), 'task_' || md5(g::text),
    CASE WHEN (g / 10) % 200 BETWEEN 120 AND 198 THEN 'background task failed' END
FROM (SELECT g, {{NOW}}::timestamptz - make_interval(secs => (g * 104729) % {_YEAR_S}) AS created
        FROM generate_series(1::bigint, {{RUNS}}, 10) AS g) AS task
"""

_RUNS = """
INSERT INTO runs (run_id, pipeline_id, pipeline_name, pipeline_version, status, created_at, updated_at,
    execution_time_ms, memory_usage_mb, total_steps, error_message)
SELECT run_id, pipeline_id, pipeline_name, pipeline_version,
    CASE status WHEN 'paused' THEN 'completed' WHEN 'cancelled' THEN 'completed' ELSE status END,
    created_at, updated_at, execution_time_ms, memory_usage_mb, total_steps, error_message
FROM workflow_state WHERE NOT is_background_task
"""

_STEPS = """
INSERT INTO steps (run_id, step_name, step_index, status, output, cost_usd, token_counts, execution_time_ms,
    created_at)
SELECT run_id, (ARRAY['extract','transform','load'])[i + 1], i,
    CASE WHEN status = 'failed' AND i = 2 THEN 'failed' ELSE 'completed' END,
    jsonb_build_object('rows', i * 100), 0.001 * i, 100 * i, 40 * (i + 1), created_at
FROM runs, generate_series(0, 2) AS i WHERE status IN ('completed', 'failed')
"""

_SPANS = """
INSERT INTO spans (run_id, span_id, parent_span_id, name, start_time, end_time, status, attributes, created_at)
SELECT run_id, CASE WHEN i = 0 THEN root ELSE md5(run_id || i)::uuid::text END, CASE WHEN i = 0 THEN NULL ELSE root END,
    CASE WHEN i = 0 THEN 'pipeline_root' ELSE (ARRAY['extract','transform','load'])[i] END,
    start + i, start + i + 0.5, status, jsonb_build_object('flujo.step.index', i), updated_at
FROM (SELECT run_id, status, updated_at, md5(run_id)::uuid::text AS root,
             extract(epoch FROM created_at - '2026-01-01'::timestamptz) AS start
        FROM runs WHERE status IN ('completed', 'failed')) AS run, generate_series(0, 3) AS i
"""


def populate(superuser_url: str, owner: str, runs: int, now: datetime) -> dict[str, int]:
    """Create flujo's schema in the (empty) database and fill it, as a superuser (``session_replication_role``);
    returns the row counts.  Everything is created as ``owner`` (SET ROLE), the app's role, as in production."""
    with psycopg.connect(superuser_url, autocommit=True) as conn:
        # Foreign keys are checked row by row by triggers: off while the rows (consistent by construction) go in.
        conn.execute("SET session_replication_role = replica")
        conn.execute(psycopg.sql.SQL("SET ROLE {}").format(psycopg.sql.Identifier(owner)))
        conn.execute(SCHEMA_SQL.read_text().replace("SELECT pg_catalog.set_config('search_path', '', false);", ""))
        conn.execute("INSERT INTO flujo_schema_versions (version) VALUES (1), (2)")
        for statement in (_WORKFLOWS, _BACKGROUND, _RUNS, _STEPS, _SPANS):
            # Two trusted values written in (no parameters: the statements use % as the modulo operator).
            conn.execute(statement.replace("{NOW}", f"'{now.isoformat()}'").replace("{RUNS}", str(int(runs))))
        conn.execute("RESET ROLE")
        conn.execute("VACUUM ANALYZE")
        tables = ("workflow_state", "runs", "steps", "spans")
        return {table: int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]) for table in tables}  # type: ignore[index]
