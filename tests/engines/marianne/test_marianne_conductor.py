"""One daemon per conductor: pointed at the registry, the daemon reads every workspace its jobs
name, through the real refresh and exposition, on copies of the fixtures.  The registry copy's
jobs name four workspaces, most recently active first: ``ws-missing`` (a queued job's, no DB
yet), ``ws-a`` (a copy of the workspace fixture), ``ws-broken`` (a file that is not SQLite) and
``ws-b`` (another copy)."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from engines.marianne.helpers import REGISTRY, WORKSPACE, Samples, by, computed_at, execute, expected, family, single
from engines.scrape import ScrapedDaemon
from support import FIXTURES

from exporter.config import MarianneConfig, MetricsConfig
from exporter.engines.marianne import pids
from exporter.engines.marianne.conductor import WORKSPACE_DB
from exporter.engines.marianne.statuses import JOB_STATUSES, REGISTRY_STATUSES, SHEET_STATUSES
from exporter.engines.marianne.tracking import OUTCOMES
from exporter.reader import Problem

# registry job -> the workspace it names
WORKSPACES = {"queued-run": "ws-missing", "flaky-import": "ws-a", "zombie-run": "ws-broken", "etl-report": "ws-b"}
READABLE = ("ws-a", "ws-b")


def workspace() -> dict[str, Any]:
    data: dict[str, Any] = expected()["workspace"]
    return data


def conductor(tmp_path: Path, *, readable: tuple[str, ...] = READABLE) -> Path:
    """The registry fixture naming the four workspaces; ``readable`` get a copy of the workspace fixture."""
    registry = tmp_path / "conductor" / "daemon-state.db"
    registry.parent.mkdir()
    shutil.copyfile(FIXTURES / REGISTRY, registry)
    execute(
        registry,
        *(f"UPDATE jobs SET workspace = '{tmp_path / ws}' WHERE job_id = '{job}'" for job, ws in WORKSPACES.items()),
    )
    for name in readable:
        place(tmp_path, name)
    broken = tmp_path / "ws-broken" / WORKSPACE_DB
    broken.parent.mkdir()
    broken.write_text("not a database, whatever its name says\n" * 200)
    return registry


def place(tmp_path: Path, name: str) -> Path:
    db = tmp_path / name / WORKSPACE_DB
    db.parent.mkdir(exist_ok=True)
    shutil.copyfile(FIXTURES / WORKSPACE, db)
    return db


def daemon(registry: Path, settings: MetricsConfig | None = None) -> ScrapedDaemon:
    return ScrapedDaemon(registry, computed_at(), settings)


def states(samples: Samples) -> dict[str, float]:
    return dict(by(samples, "marianne_workspaces", "state"))


def times(n: int, truth: dict[str, int]) -> dict[str, float]:
    return {key: float(n * value) for key, value in truth.items()}


def assert_workspaces_summed(samples: Samples, n: int) -> None:
    """Every workspace family is ``n`` times the fixture's value (``n`` copies read)."""
    assert by(samples, "marianne_jobs", "status") == {
        s: float(n * workspace()["jobs_by_status"].get(s, 0)) for s in JOB_STATUSES
    }
    assert by(samples, "marianne_sheets", "status") == {
        s: float(n * workspace()["sheets_by_status"].get(s, 0)) for s in SHEET_STATUSES
    }
    assert by(samples, "marianne_sheet_failures", "error_category") == times(
        n, workspace()["failed_sheets_by_error_category"]
    )
    assert by(samples, "marianne_execution_attempts_total", "outcome") == {
        o: float(n * workspace()["execution_attempts_by_outcome"].get(o, 0)) for o in OUTCOMES
    }
    assert single(samples, "marianne_job_retries_total") == n * workspace()["job_retry_count_sum"]
    assert single(samples, "marianne_jobs_stale") == n * len(workspace()["stale_running"])
    assert single(samples, "marianne_jobs_running_without_pid") == n * len(workspace()["running_without_pid"])
    assert family(samples, "marianne_sheet_attempts_count") == {frozenset(): n * workspace()["sheets_total"]}
    durations = [job["duration_seconds"] for job in workspace()["jobs"] if job["duration_seconds"] is not None]
    assert family(samples, "marianne_job_duration_seconds_count") == {frozenset(): n * len(durations)}
    assert family(samples, "workflow_run_duration_seconds_count", engine="marianne") == {
        frozenset(): n * len(durations)
    }
    finished = by(samples, "marianne_jobs_finished_total", "status")
    assert finished == {
        s: float(n * workspace()["jobs_by_status"].get(s, 0)) for s in ("completed", "failed", "cancelled")
    }


def assert_registry_as_expected(samples: Samples) -> None:
    registry: dict[str, Any] = expected()["registry"]
    assert by(samples, "marianne_conductor_jobs", "status") == {
        s: float(registry["jobs_by_status"].get(s, 0)) for s in REGISTRY_STATUSES
    }
    assert single(samples, "marianne_conductor_orphaned_jobs") == len(registry["orphans"])


def test_the_registry_sums_the_workspaces_it_lists(tmp_path: Path) -> None:
    scraped = daemon(conductor(tmp_path))
    samples = scraped.expose()
    assert family(samples, "state_exporter_engine_info") == {
        frozenset({("engine", "marianne"), ("layout", "registry")}): 1
    }
    assert states(samples) == {"ok": 2, "missing": 1, "unreadable": 1, "over_cap": 0}
    errors = by(samples, "marianne_workspace_read_errors_total", "reason")
    assert +errors == {Problem.MISSING.value: 1, Problem.NOT_SQLITE.value: 1}
    assert set(errors) == {p.value for p in Problem}  # every reason present, 0 when none
    assert_workspaces_summed(samples, 2)
    assert_registry_as_expected(samples)
    # The overview's runs are the conductor's jobs; its finished jobs those of the workspaces read.
    runs = by(samples, "workflow_runs", "phase", engine="marianne")
    assert sum(runs.values()) == expected()["registry"]["jobs_total"]
    assert by(samples, "workflow_runs_finished_total", "phase", engine="marianne") == {
        "succeeded": 2.0,
        "failed": 4.0,
        "cancelled": 2.0,
        "skipped": 0.0,
    }
    # A workspace problem leaves the target readable: the daemon is ready.
    assert scraped.refresher.ready(computed_at()).ready
    assert family(samples, "state_exporter_bad_values_total") == {}


def test_no_path_becomes_a_label(tmp_path: Path) -> None:
    samples = daemon(conductor(tmp_path)).expose()
    labels = {value for (_, pairs) in samples for _, value in pairs}
    assert not any(str(tmp_path) in value for value in labels)


@pytest.mark.parametrize(("cap", "read"), [(1, 0), (2, 1), (3, 1), (4, 2)])
def test_at_most_max_workspaces_are_read(tmp_path: Path, cap: int, read: int) -> None:
    """The most recently active first: ws-missing, ws-a, ws-broken, ws-b."""
    settings = MetricsConfig(marianne=MarianneConfig(max_workspaces=cap))
    samples = daemon(conductor(tmp_path), settings).expose()
    found = states(samples)
    assert found["over_cap"] == 4 - cap
    assert found["ok"] == read and sum(found.values()) == 4
    if read:
        assert_workspaces_summed(samples, read)
    else:  # nothing read: the workspace families are absent, not zeros claiming so
        assert family(samples, "marianne_jobs") == {} and family(samples, "marianne_sheets") == {}
        assert family(samples, "marianne_execution_attempts_total") == {}
    assert_registry_as_expected(samples)


def test_workspaces_appear_disappear_and_break(tmp_path: Path) -> None:
    registry = conductor(tmp_path, readable=("ws-a",))
    scraped = daemon(registry)
    first = scraped.expose()
    assert states(first) == {"ok": 1, "missing": 2, "unreadable": 1, "over_cap": 0}
    assert_workspaces_summed(first, 1)

    place(tmp_path, "ws-b")  # appears: read and its rows counted from the next refresh on
    second = scraped.expose()
    assert states(second) == {"ok": 2, "missing": 1, "unreadable": 1, "over_cap": 0}
    assert_workspaces_summed(second, 2)

    # ws-a turns into a file that is not SQLite, ws-b disappears: their jobs leave the gauges, the
    # counters keep what they counted, and nothing fails.
    (tmp_path / "ws-a" / WORKSPACE_DB).write_bytes(b"\x00garbage" * 512)
    shutil.rmtree(tmp_path / "ws-b")
    third = scraped.expose()
    assert states(third) == {"ok": 0, "missing": 2, "unreadable": 2, "over_cap": 0}
    assert family(third, "marianne_jobs") == {}
    for name in ("marianne_execution_attempts_total", "marianne_job_retries_total", "marianne_jobs_finished_total"):
        assert family(third, name) == family(second, name)
    assert by(third, "marianne_workspace_read_errors_total", "reason")[Problem.NOT_SQLITE.value] == 4
    assert scraped.refresher.ready(computed_at()).ready
    assert_registry_as_expected(third)

    place(tmp_path, "ws-b")  # back: the same rows, counted already, are not counted again
    fourth = scraped.expose()
    assert states(fourth)["ok"] == 1
    assert by(fourth, "marianne_jobs", "status") == {
        s: float(workspace()["jobs_by_status"].get(s, 0)) for s in JOB_STATUSES
    }
    assert family(fourth, "marianne_execution_attempts_total") == family(second, "marianne_execution_attempts_total")


def test_a_workspace_that_is_not_a_workspace_db(tmp_path: Path) -> None:
    registry = conductor(tmp_path, readable=("ws-a",))
    (tmp_path / "ws-b").mkdir()
    shutil.copyfile(FIXTURES / REGISTRY, tmp_path / "ws-b" / WORKSPACE_DB)  # a registry where a workspace DB belongs
    samples = daemon(registry).expose()
    assert states(samples) == {"ok": 1, "missing": 1, "unreadable": 2, "over_cap": 0}
    assert by(samples, "marianne_workspace_read_errors_total", "reason")[Problem.UNKNOWN_LAYOUT.value] == 1
    assert_workspaces_summed(samples, 1)


def test_the_daemon_writes_nothing_to_the_workspaces(tmp_path: Path) -> None:
    registry = conductor(tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    scraped = daemon(registry)
    for _ in range(3):
        scraped.expose()
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before
    conn = sqlite3.connect(f"file:{tmp_path / 'ws-a' / WORKSPACE_DB}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    finally:
        conn.close()


def test_the_registry_is_not_held_while_the_workspaces_are_read(tmp_path: Path) -> None:
    """Whenever the zombie rule asks about a pid, try to take the registry's exclusive lock (its
    journal is the rollback one: any reader's shared lock refuses it).  Asked while the registry
    is read, it is refused; asked while a workspace is read, it is granted."""
    registry = conductor(tmp_path, readable=("ws-a",))
    granted: list[bool] = []

    def probe(pid: int) -> bool:
        conn = sqlite3.connect(registry, timeout=0)
        try:
            conn.execute("BEGIN EXCLUSIVE")
            conn.rollback()
            granted.append(True)
        except sqlite3.OperationalError as exc:
            assert "locked" in str(exc)
            granted.append(False)
        finally:
            conn.close()
        return False

    with pids.injected(probe):
        daemon(registry, MetricsConfig(marianne=MarianneConfig(same_host_pid_check=True))).expose()
    # The registry's zombie-run, then ws-a's: the registry's read ended before ws-a was opened.
    assert granted == [False, True]


def test_undecided_attempts_are_those_of_the_workspaces_read(tmp_path: Path) -> None:
    registry = conductor(tmp_path, readable=("ws-a",))
    # flaky-import's sheet 2 waits for a retry: its third attempt is not decided yet.
    execute(
        tmp_path / "ws-a" / WORKSPACE_DB,
        "UPDATE sheets SET status = 'retry_scheduled' WHERE job_id = 'flaky-import' AND sheet_num = 2",
    )
    scraped = daemon(registry)
    first = scraped.expose()
    assert single(first, "marianne_execution_attempts_undecided") == 1
    assert by(first, "marianne_execution_attempts_total", "outcome")["failed"] == 1  # old-import's only
    (tmp_path / "ws-a" / WORKSPACE_DB).unlink()
    second = scraped.expose()
    assert states(second)["missing"] == 3
    assert single(second, "marianne_execution_attempts_undecided") == 0  # nothing read holds one
    assert family(second, "marianne_execution_attempts_total") == family(first, "marianne_execution_attempts_total")
