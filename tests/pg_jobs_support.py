"""The Flujo-on-Postgres write jobs' test set-up: the README's write role, the fixture's stale tasks,
and the independent SQL that says what the cleanup must delete."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from postgres import PostgresServer

JOBS_ROLE = "exporter_jobs"
JOBS_PASSWORD = "jobs-Secret-77"
CHILDREN = ("steps", "spans", "traces")
CLEANUP_KEY = (1728555066, 1246246105)  # pinned: exporters of every version must agree
STALE_KEY = (1728555066, 1661272725)
STALE_IDS = {
    "run_05628059568cc69b1064005c3985c3cf_bg_bg_2d70c84d9878474aa5d0124441b68dc9",
    "run_2031d750c40db9b4885f6e66c2b6d2c5_bg_bg_c4c4f0a1f7324de38875325750236c6f",
    "run_2dbc2134c30ff46e8026695ff8cda88b_bg_bg_a1b7030220cf4ef6840c929cc908d508",
    "run_89463e85759cde66bacfb3d00b1f9163_bg_bg_bc788334934d4f6d9b124c6f78b9f6c4",
}  # the oracle's stale_background ids (sample06-pg.sql.expected.json), flujo's own API changes none


def grant_write_role(server: PostgresServer, database: str) -> str:
    """The README's write role: SELECT, UPDATE on workflow_state, DELETE on the cleaned tables."""
    server.psql(
        "postgres",
        f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{JOBS_ROLE}') THEN"
        f" CREATE ROLE {JOBS_ROLE} LOGIN PASSWORD '{JOBS_PASSWORD}'; END IF; END $$;\n"
        f"GRANT CONNECT ON DATABASE {database} TO {JOBS_ROLE};\n",
    )
    server.psql(
        database,
        f"GRANT USAGE ON SCHEMA public TO {JOBS_ROLE};\n"
        f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {JOBS_ROLE};\n"
        f"GRANT UPDATE ON workflow_state TO {JOBS_ROLE};\n"
        f"GRANT DELETE ON workflow_state, runs, steps, spans, traces TO {JOBS_ROLE};\n",
    )
    return f"postgresql://{JOBS_ROLE}:{JOBS_PASSWORD}@127.0.0.1:{server.port}/{database}"


def query(server: PostgresServer, database: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(server.owner_url(database)) as conn:
        return conn.execute(sql, params).fetchall()


def ids(server: PostgresServer, database: str, sql: str, params: tuple[Any, ...] = ()) -> set[str]:
    return {row[0] for row in query(server, database, sql, params)}


def expected_cleanup(
    server: PostgresServer, database: str, cutoff: datetime
) -> tuple[set[str], set[str], dict[str, int]]:
    """Independent SQL: the workflow_state rows created before the cutoff, the runs started before it
    that keep no workflow_state row, and the rows of every table that go with them."""
    workflows = ids(server, database, "SELECT run_id FROM workflow_state WHERE created_at < %s", (cutoff,))
    runs = ids(
        server,
        database,
        "SELECT r.run_id FROM runs r WHERE r.created_at < %s AND NOT EXISTS"
        " (SELECT 1 FROM workflow_state w WHERE w.run_id = r.run_id AND w.created_at >= %s)",
        (cutoff, cutoff),
    )
    counts = {"workflow_state": len(workflows), "runs": len(runs)}
    for table in CHILDREN:
        counts[table] = query(server, database, f"SELECT COUNT(*) FROM {table} WHERE run_id = ANY(%s)", (list(runs),))[
            0
        ][0]
    return workflows, runs, counts
