"""Detection per app (three layouts, several apps in one file), pynenc's stuck rules at their
boundaries with per-app overrides, and the history fallback of a file without orchestrator tables."""

from __future__ import annotations

import sqlite3
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from engines.pynenc.helpers import ORACLE_LAYOUTS, by, computed_at, execute, expected, expose, family

from exporter import engines
from exporter.config import MetricsConfig
from exporter.engines.pynenc.layout import Layout, Schema, recognise, table_prefix
from exporter.reader import DatabaseUnavailable, Problem
from exporter.reader.connection import read_catalogue

V040, V011, V010 = "pynenc/pynenc-0.4.0-sample.db", "pynenc/pynenc-0.1.1-sample.db", "pynenc/pynenc-0.1.0-sample.db"
SEED = "seed_app_d000b1ab__"
BILLING = "billing-prod"


def catalogue(db: Path) -> dict[str, frozenset[str]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return read_catalogue(conn, db)
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("app_id", "prefix"),
    [
        ("seed_app", "seed_app_d000b1ab__"),
        ("billing-prod", "billing_prod_5ec36bb9__"),
        ("2nd.reports", "_2nd_reports_8ba25a6c__"),
    ],
)
def test_table_prefix_as_pynenc_builds_it(app_id: str, prefix: str) -> None:
    assert table_prefix(app_id) == prefix


@pytest.mark.parametrize(("fixture", "layout"), [(V040, Layout.V024), (V011, Layout.V011), (V010, Layout.V010)])
def test_each_layout_recognised(fixture_copy, fixture: str, layout: Layout) -> None:
    schema = recognise(catalogue(fixture_copy(fixture)))
    assert isinstance(schema, Schema)
    [app] = schema.apps
    assert (app.layout, app.prefix) == (layout, "" if layout is Layout.V010 else SEED)
    assert ORACLE_LAYOUTS[expected(fixture)["apps"][0]["layout"]] == layout.value


def test_a_file_without_pynenc_tables_says_what_is_missing(fixture_copy) -> None:
    db = fixture_copy("sample-small.db")  # a Flujo DB
    with pytest.raises(DatabaseUnavailable) as caught:
        engines.detect(catalogue(db), db, "pynenc")
    assert caught.value.problem is Problem.UNKNOWN_LAYOUT
    assert (
        "state_backend_history or orchestrator_invocations" in caught.value.message and str(db) in caught.value.message
    )
    # a table that only ends like pynenc's, under no valid prefix, is not taken for one
    assert isinstance(recognise({'x"; DROP TABLE y; --state_backend_history': frozenset({"invocation_id"})}), str)
    lacking = recognise({"state_backend_history": frozenset({"invocation_id"})})
    assert lacking == "table state_backend_history lacks column(s) history_timestamp, history_status"


def add_app(db: Path, source: Path, app_id: str, overrides: dict[str, float]) -> str:
    """Copy every table of the single (prefixed) app in ``source`` into ``db`` under ``app_id``'s
    prefix, rows in rowid order, as if pynenc had run that app against this file too."""
    prefix = table_prefix(app_id)
    conn = sqlite3.connect(db)
    try:
        conn.execute("ATTACH DATABASE ? AS other", (f"file:{source}?mode=ro",))
        tables = conn.execute(
            "SELECT name, sql FROM other.sqlite_master WHERE type = 'table' AND name LIKE 'seed\\_app%' ESCAPE '\\'"
        ).fetchall()
        for name, sql in tables:
            new = prefix + name.removeprefix(SEED)
            conn.execute(sql.replace(name, new, 1))
            conn.execute(f'INSERT INTO "{new}" SELECT * FROM other."{name}" ORDER BY rowid')
        settings = ", ".join(f"'$.config_values.{key}', {value}" for key, value in overrides.items())
        conn.execute(
            f'UPDATE "{prefix}state_backend_app_info" SET app_id = ?, '
            f"app_info_json = json_set(app_info_json, '$.app_id', ?{', ' + settings if settings else ''})",
            (app_id, app_id),
        )
        conn.commit()
    finally:
        conn.close()
    return prefix


@pytest.fixture
def two_apps(fixture_copy) -> tuple[Path, str]:
    """The 0.4.0 file (seed_app, 0.2.4+) with the 0.1.1 file's app as billing-prod (0.1.1-0.2.3),
    which overrides both stuck thresholds."""
    db = fixture_copy(V040)
    overrides = {"runner_considered_dead_after_minutes": 20, "max_pending_seconds": 1.5}
    return db, add_app(db, fixture_copy(V011), BILLING, overrides)


def test_several_apps_each_with_its_layout_and_thresholds(two_apps: tuple[Path, str]) -> None:
    db, _ = two_apps
    schema = recognise(catalogue(db))
    assert isinstance(schema, Schema)
    assert {(a.prefix, a.layout) for a in schema.apps} == {
        (SEED, Layout.V024),
        ("billing_prod_5ec36bb9__", Layout.V011),
    }
    now = computed_at(V040)
    assert now == computed_at(V011)
    samples = expose(db, now)
    assert family(samples, "state_exporter_engine_info") == {
        frozenset({("engine", "pynenc"), ("layout", "0.1.1-0.2.3+0.2.4+")}): 1
    }
    assert by(samples, "pynenc_app_info", "layout", app="seed_app") == {"0.2.4+": 1}
    assert by(samples, "pynenc_app_info", "layout", app=BILLING) == {"0.1.1-0.2.3": 1}
    for app, fixture in (("seed_app", V040), (BILLING, V011)):
        truth = expected(fixture)["apps"][0]
        assert by(samples, "pynenc_invocations", "status", app=app) == Counter(truth["status_counts_all"])
        assert (
            by(samples, "pynenc_invocation_retries_total", "task", app=app)
            == truth["retries"]["retry_count_sum_by_task"]
        )
    # billing-prod's sleepy runner beat 911 s ago: dead after pynenc's default 10 min, alive after its 20
    assert by(samples, "pynenc_invocations_stuck", "reason", app="seed_app")["runner_dead"] == 1
    assert by(samples, "pynenc_invocations_stuck", "reason", app=BILLING)["runner_dead"] == 0
    assert by(samples, "pynenc_runners", "state", app=BILLING) == {"alive": 1, "dead": 1}
    assert by(samples, "workflow_runs_stuck", "reason") == {"runner_dead": 1, "pending_timeout": 0}
    runs = by(samples, "workflow_runs", "phase")
    assert runs["succeeded"] == 6 + 10 and runs["running"] == 2


def make_pending(db: Path, prefix: str, at: float) -> str:
    """One of the invocations routed with no live runner, claimed by a runner at ``at`` (pending)."""
    table = f'"{prefix}orchestrator_invocations"'
    conn = sqlite3.connect(db)
    try:
        [(invocation_id,)] = conn.execute(f"SELECT MIN(invocation_id) FROM {table} WHERE status = 'registered'")
        conn.execute(
            f"UPDATE {table} SET status = 'pending', status_runner_id = 'r1', status_timestamp = ? "
            "WHERE invocation_id = ?",
            (at, invocation_id),
        )
        conn.commit()
    finally:
        conn.close()
    return str(invocation_id)


def test_pending_timeout_at_the_boundary_with_overrides(two_apps: tuple[Path, str]) -> None:
    """pynenc: ``status_timestamp <= now - max_pending_seconds`` (default 5, billing-prod 1.5)."""
    db, billing = two_apps
    now = computed_at(V040)
    claimed = now.timestamp() - 1.0
    make_pending(db, SEED, claimed)
    make_pending(db, billing, claimed)

    def pending_timeout(at_seconds_after_claim: float) -> dict[str, float]:
        samples = expose(db, now + timedelta(seconds=at_seconds_after_claim - 1.0))
        return {
            app: by(samples, "pynenc_invocations_stuck", "reason", app=app)["pending_timeout"]
            for app in ("seed_app", BILLING)
        }

    assert pending_timeout(1.0) == {"seed_app": 0, BILLING: 0}
    assert pending_timeout(1.499999) == {"seed_app": 0, BILLING: 0}
    assert pending_timeout(1.5) == {"seed_app": 0, BILLING: 1}
    assert pending_timeout(4.999999) == {"seed_app": 0, BILLING: 1}
    assert pending_timeout(5.0) == {"seed_app": 1, BILLING: 1}


def test_running_without_any_heartbeat_row_is_runner_dead(two_apps: tuple[Path, str]) -> None:
    db, billing = two_apps
    now = computed_at(V040)
    assert by(expose(db, now), "pynenc_invocations_stuck", "reason", app=BILLING)["runner_dead"] == 0
    table = f'"{billing}orchestrator_runner_heartbeats"'
    execute(
        db,
        f"DELETE FROM {table} WHERE runner_id IN (SELECT status_runner_id FROM "
        f"\"{billing}orchestrator_invocations\" WHERE status = 'running')",
    )
    samples = expose(db, now)
    assert by(samples, "pynenc_invocations_stuck", "reason", app=BILLING)["runner_dead"] == 1
    assert by(samples, "pynenc_runners", "state", app=BILLING) == {"alive": 0, "dead": 1}


def test_app_info_of_another_app_is_not_taken(fixture_copy) -> None:
    """A prefixed app's id must give back its prefix; otherwise the label comes from the table names."""
    db = fixture_copy(V011)
    execute(db, f"UPDATE \"{SEED}state_backend_app_info\" SET app_id = 'someone_else'")
    assert by(expose(db, computed_at(V011)), "pynenc_app_info", "layout") == {"0.1.1-0.2.3": 1}
    assert set(by(expose(db, computed_at(V011)), "pynenc_app_info", "app")) == {"seed_app"}


def test_state_backend_tables_only_fall_back_to_the_latest_history_row(fixture_copy) -> None:
    db = fixture_copy(V010)
    conn = sqlite3.connect(db)
    try:
        for (table,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'orchestrator%'"
        ).fetchall():
            conn.execute(f'DROP TABLE "{table}"')
        conn.commit()
    finally:
        conn.close()
    truth = expected(V010)["apps"][0]
    samples = expose(db, computed_at(V010))
    assert by(samples, "pynenc_invocations", "status", app="seed_app") == Counter(truth["status_counts_all"])
    assert by(samples, "pynenc_runs", "status", app="seed_app") == Counter(truth["status_counts_top_level"])
    assert by(samples, "pynenc_invocations_stuck", "reason", app="seed_app") == {"runner_dead": 0, "pending_timeout": 0}
    assert family(samples, "state_exporter_engine_info") == {frozenset({("engine", "pynenc"), ("layout", "0.1.0")}): 1}
    finished = Counter(f["status"] for f in truth["finished"])
    assert by(samples, "pynenc_invocations_finished_total", "status", app="seed_app") == finished


def test_a_0_1_0_file_shared_by_two_apps_cannot_tell_them_apart(fixture_copy) -> None:
    db = fixture_copy(V010)
    now = computed_at(V010)
    execute(db, "INSERT INTO state_backend_app_info VALUES ('other_app', '{\"app_id\": \"other_app\"}')")
    samples = expose(db, now)
    assert family(samples, "pynenc_app_info") == {frozenset({("app", "mixed"), ("layout", "0.1.0")}): 1}
    execute(db, "DELETE FROM state_backend_app_info")
    assert set(by(expose(db, now), "pynenc_app_info", "app")) == {"default"}


def test_an_idle_broker_shows_an_empty_default_queue(fixture_copy) -> None:
    db = fixture_copy(V040)
    execute(db, f'DELETE FROM "{SEED}broker_message_queue"')
    samples = expose(db, computed_at(V040))
    assert family(samples, "pynenc_broker_queue_depth") == {frozenset({("app", "seed_app"), ("queue", "default")}): 0}
    assert family(samples, "pynenc_broker_oldest_message_timestamp_seconds") == {}


def test_task_labels_are_capped(fixture_copy) -> None:
    db = fixture_copy(V040)
    truth = expected(V040)["apps"][0]
    samples = expose(db, computed_at(V040), MetricsConfig(max_pipelines=2))
    tasks = by(samples, "pynenc_invocations", "task", app="seed_app")
    assert tasks == {"seed_tasks.add": 8, "seed_tasks.divide": 3, "other": truth["invocations_total"] - 11}
    assert by(samples, "pynenc_invocations", "status", app="seed_app") == Counter(truth["status_counts_all"])
    finished = by(samples, "pynenc_invocations_finished_total", "task", app="seed_app")
    assert len(set(finished) - {"other"}) == 2 and "other" in finished
    # the counters share one stable allocation per app: a task keeps its label once given
    assert set(by(samples, "pynenc_invocation_retries_total", "task", app="seed_app")) <= set(finished)
    assert sum(by(samples, "pynenc_invocations_finished_total", "task", app="seed_app").values()) == len(
        truth["finished"]
    )
