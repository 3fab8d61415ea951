"""The same rows give the same metrics whether flujo keeps them in Postgres or in SQLite: the shared
dump, read from the suite's PostgreSQL, and the same rows written by this test into a SQLite file
with flujo 0.6.11's SQLite DDL (values stored the way flujo's SQLiteBackend stores them), render
the same exposition, family for family.

The documented exceptions, where the two are different things rather than different readings:

* ``flujo_db_size_bytes``: the SQLite file's size, or ``pg_database_size`` of the database;
* the exporter's own timings (``state_exporter_collector_duration_seconds``).
"""

from __future__ import annotations

from datetime import UTC
from pathlib import Path

from postgres import COMPUTED_AT, PostgresServer, Samples, export_to_sqlite, scrape

from exporter.config import MetricsConfig
from exporter.reader import StateReader
from exporter.reader.postgres import PostgresReader

DIFFERENT_THINGS = frozenset({"flujo_db_size_bytes", "state_exporter_collector_duration_seconds"})


def families(samples: Samples) -> dict[str, dict[frozenset[tuple[str, str]], float]]:
    found: dict[str, dict[frozenset[tuple[str, str]], float]] = {}
    for (name, labels), value in samples.items():
        if name not in DIFFERENT_THINGS:
            found.setdefault(name, {})[labels] = value
    return found


def test_postgres_and_sqlite_give_the_same_exposition(
    pg_server: PostgresServer, pg_database: str, tmp_path: Path
) -> None:
    db = tmp_path / "flujo_ops.db"
    export_to_sqlite(pg_server, pg_database, db)
    # Short stuck thresholds so that the stuck families hold non-zero values on both.
    settings = MetricsConfig.model_validate({"stuck": {"running_after": "1h", "paused_after": "2h"}})
    from_postgres = families(scrape(PostgresReader(pg_server.exporter_url(pg_database)), COMPUTED_AT, settings))
    from_sqlite = families(scrape(StateReader(db, naive_timezone=UTC), COMPUTED_AT, settings))
    assert sorted(from_postgres) == sorted(from_sqlite)
    flujo = [name for name in from_postgres if name.startswith(("flujo_", "workflow_"))]
    assert len(flujo) > 25  # every Flujo family is compared, not just a few
    for name in sorted(from_postgres):
        assert from_postgres[name] == from_sqlite[name], name
    # Not vacuous: the comparison holds non-zero values in the families that matter.
    for name in (
        "flujo_workflows_stuck",
        "flujo_runs_finished_total",
        "flujo_steps_finished_total",
        "flujo_run_duration_seconds_count",
        "flujo_workflows_created_last_24h",
        "flujo_spans_unfinished",
    ):
        assert sum(from_postgres[name].values()) > 0, name
