"""``metrics.marianne.same_host_pid_check``: where it is read from and how a bad value is reported;
rows the zombie and stale rules cannot read; what a file lacks to be Marianne's."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from engines.marianne.helpers import PID_CHECK, WORKSPACE, by, execute, expose, family, liveness_from_manifest

from exporter import engines
from exporter.config import ConfigError, load_config
from exporter.reader import DatabaseUnavailable, Problem
from exporter.reader.connection import read_catalogue


def test_the_check_from_the_file_and_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("metrics:\n  marianne:\n    same_host_pid_check: true\n")
    assert load_config(config, env={}).metrics.marianne.same_host_pid_check is True
    env = {"STATE_EXPORTER_METRICS__MARIANNE__SAME_HOST_PID_CHECK": "false"}
    assert load_config(config, env=env).metrics.marianne.same_host_pid_check is False
    assert load_config(None, env={}).metrics.marianne.same_host_pid_check is False  # off unless asked


def test_a_bad_value_names_the_key(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("metrics:\n  marianne:\n    same_host_pid_check: sometimes\n")
    with pytest.raises(ConfigError) as caught:
        load_config(config, env={})
    assert caught.value.errors == [
        f"{config}:3: metrics.marianne.same_host_pid_check: must be true or false, got 'sometimes'"
    ]
    config.write_text("metrics:\n  marianne:\n    same_host_pid: true\n")
    with pytest.raises(ConfigError) as caught:
        load_config(config, env={})
    assert "metrics.marianne.same_host_pid" in str(caught.value)


def test_unreadable_pid_and_time_are_skipped_and_counted(fixture_copy) -> None:
    db = fixture_copy(WORKSPACE)
    # A pid of 0 would make os.kill address a process group: never asked, counted as a bad value.
    execute(
        db,
        "UPDATE jobs SET status = 'running', pid = 0 WHERE id = 'paused-run'",
        "UPDATE jobs SET status = 'running', updated_at = 'yesterday' WHERE id = 'skip-run'",
    )
    with liveness_from_manifest() as asked:
        samples = expose(db, PID_CHECK)
    assert asked == [4386]
    bad = by(samples, "state_exporter_bad_values_total", "column", table="jobs")
    assert bad == {"pid": 1, "updated_at": 1}
    assert family(samples, "marianne_jobs_zombie") == {frozenset(): 1}
    assert family(samples, "marianne_jobs_running_without_pid") == {frozenset(): 0}  # a pid, if an unreadable one
    assert by(samples, "marianne_jobs", "status")["running"] == 3  # the count by status still holds every row


def test_what_a_file_lacks(fixture_copy) -> None:
    db = fixture_copy(WORKSPACE)
    execute(db, "DROP TABLE execution_history", "ALTER TABLE sheets DROP COLUMN attempt_count")
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        catalogue = read_catalogue(conn, db)
    finally:
        conn.close()
    with pytest.raises(DatabaseUnavailable) as caught:
        engines.detect(catalogue, db, "marianne")
    assert caught.value.problem is Problem.UNKNOWN_LAYOUT
    assert "table sheets lacks column(s) attempt_count; no execution_history table" in caught.value.message
