"""The suite's own PostgreSQL: started through runuser, the dump loaded, the exporter role read-only."""

from __future__ import annotations

import psycopg
import pytest
from postgres import OWNER, PostgresServer, shift_to
from support import anchor_at

PG = "flujo-postgres/sample06-pg.sql"


def test_dump_is_loaded_and_the_exporter_role_reads_only(pg_server: PostgresServer, pg_database: str) -> None:
    with psycopg.connect(pg_server.exporter_url(pg_database)) as conn:
        counts = {
            table: conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]  # type: ignore[index]
            for table in ("workflow_state", "runs", "steps", "spans", "traces", "flujo_schema_versions")
        }
        assert counts == {
            "workflow_state": 81,
            "runs": 60,
            "steps": 168,
            "spans": 224,
            "traces": 55,
            "flujo_schema_versions": 2,
        }
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("DELETE FROM runs")


def test_each_test_gets_its_own_copy(pg_server: PostgresServer, pg_database: str) -> None:
    other = pg_server.new_database()
    pg_server.psql(other, "DELETE FROM spans;", user=OWNER)
    assert pg_server.psql(pg_database, "SELECT COUNT(*) FROM spans;").strip() == "224"


def test_the_anchor_shift_moves_every_timestamptz(pg_server: PostgresServer, pg_database: str) -> None:
    before = pg_server.psql(pg_database, "SELECT MAX(created_at) FROM runs;")
    shift_to(pg_server, pg_database, anchor_at(PG))
    lag = pg_server.psql(pg_database, "SELECT EXTRACT(EPOCH FROM now() - MAX(created_at))::int FROM runs;")
    assert before != pg_server.psql(pg_database, "SELECT MAX(created_at) FROM runs;")
    assert int(lag) == 600  # the newest run was created 10 minutes before the anchor
