"""The ``_total`` families and the job duration histogram never go down while a Marianne-shaped
writer runs, fails, retries and resumes jobs (an attempt's outcome changes under a resume:
``failed`` -> ``failed_then_retried``), and at the end they equal the history as it was written.

The refresher reads the file after every ``observe_every``-th write the writer makes, in-process
through the real refresh and exposition."""

from __future__ import annotations

import asyncio
import itertools
import math
import sqlite3
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from engines.scrape import Samples, ScrapedDaemon, by, family
from support import query

from exporter.engines.marianne.simulator import SCENARIOS, Conductor, Job, WorkspaceWriter
from exporter.engines.marianne.tracking import OUTCOMES

COUNTERS = (
    "marianne_execution_attempts_total",
    "marianne_job_retries_total",
    "marianne_jobs_finished_total",
    "marianne_job_duration_seconds_count",
    "marianne_job_duration_seconds_sum",
    "workflow_runs_finished_total",
    "workflow_run_duration_seconds_count",
)


def rows_outcomes(db: Path) -> Counter[str]:
    """Each attempt's outcome as the rows say now, independently of the exporter's SQL: every
    attempt of a sheet but its last went on to another; the last has its sheet's end."""
    status = {(j, n): s for j, n, s in query(db, "SELECT job_id, sheet_num, status FROM sheets")}
    attempts: Counter[tuple[str, int]] = Counter(query(db, "SELECT job_id, sheet_num FROM execution_history"))
    found: Counter[str] = Counter()
    for key, n in attempts.items():
        found["failed_then_retried"] += n - 1
        found[{"completed": "success", "failed": "failed"}.get(status.get(key, ""), "undecided")] += 1
    return found


def counters(samples: Samples) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {key: value for key, value in samples.items() if key[0] in COUNTERS}


class Observer:
    """Refreshes and scrapes the daemon after every ``every``-th write to the workspace DB."""

    def __init__(self, db: Path, every: int) -> None:
        self.every = every
        self.writes = 0
        self.daemon: ScrapedDaemon | None = None
        self.db = db
        self.seen: list[Samples] = []

    def __call__(self, path: Path, when: str) -> None:
        if when != "after":
            return
        self.writes += 1
        if self.writes % self.every == 0:
            self.scrape()

    def scrape(self) -> Samples:
        if self.daemon is None:  # the first write created the file: the daemon starts on it
            self.daemon = ScrapedDaemon(self.db, datetime.now(UTC))
        samples = self.daemon.expose()
        self.seen.append(samples)
        return samples


def run(tmp_path: Path, every: int, jobs: int = 20) -> tuple[Observer, Path]:
    db = tmp_path / "ws" / ".marianne-state.db"
    observer = Observer(db, every)
    conductor = Conductor([WorkspaceWriter(tmp_path / "ws", witness=observer)], seed=13, speed=math.inf)

    async def drive() -> None:
        for _ in range(jobs):
            await conductor.run_one()
        for scenario, _ in SCENARIOS:
            await conductor.run_one(scenario)

    asyncio.run(drive())
    observer.scrape()
    return observer, db


def assert_never_down(seen: list[Samples]) -> None:
    for earlier, later in itertools.pairwise(seen):
        before, after = counters(earlier), counters(later)
        assert before.keys() <= after.keys()
        went_down = [(key, value, after[key]) for key, value in before.items() if after[key] < value]
        assert not went_down


def test_every_write_seen_counts_each_outcome_as_it_was_decided(tmp_path: Path) -> None:
    observer, db = run(tmp_path, every=1)
    assert_never_down(observer.seen)
    final = observer.seen[-1]
    truth = rows_outcomes(db)
    [(resumed,)] = query(db, "SELECT COUNT(*) FROM jobs WHERE id LIKE 'resumed-%'")
    assert resumed > 0
    # Each resumed job's auth failure was seen as its failed sheet's last attempt: counted failed
    # then, and not again when the resumed sheet's next attempt made it failed_then_retried.
    found = by(final, "marianne_execution_attempts_total", "outcome")
    assert found == {
        "success": truth["success"],
        "failed": truth["failed"] + resumed,
        "failed_then_retried": truth["failed_then_retried"] - resumed,
    }
    [(rows,)] = query(db, "SELECT COUNT(*) FROM execution_history")
    assert sum(found.values()) + family(final, "marianne_execution_attempts_undecided")[frozenset()] == rows
    [(retries,)] = query(db, "SELECT SUM(total_retry_count) FROM jobs")
    assert family(final, "marianne_job_retries_total") == {frozenset(): retries}
    # Every end seen once: the resumed jobs ended twice (failed, then completed).
    now = Counter(dict(query(db, "SELECT status, COUNT(*) FROM jobs GROUP BY 1")))
    finished = by(final, "marianne_jobs_finished_total", "status")
    assert finished == {"completed": now["completed"], "failed": now["failed"] + resumed, "cancelled": now["cancelled"]}
    [(with_duration,)] = query(db, "SELECT COUNT(*) FROM jobs WHERE completed_at IS NOT NULL")
    assert family(final, "marianne_job_duration_seconds_count") == {frozenset(): with_duration + resumed}
    assert family(final, "workflow_run_duration_seconds_count", engine="marianne") == {
        frozenset(): with_duration + resumed
    }


@pytest.mark.parametrize("every", [3, 7, 1000])
def test_whatever_the_daemon_missed_is_counted_once(tmp_path: Path, every: int) -> None:
    observer, db = run(tmp_path, every=every)
    assert_never_down(observer.seen)
    found = by(observer.seen[-1], "marianne_execution_attempts_total", "outcome")
    truth = rows_outcomes(db)
    [(resumed,)] = query(db, "SELECT COUNT(*) FROM jobs WHERE id LIKE 'resumed-%'")
    assert set(found) == set(OUTCOMES)
    assert found["success"] == truth["success"]
    # A failure seen before its job was resumed stays failed; one resumed unseen is only retried.
    assert truth["failed"] <= found["failed"] <= truth["failed"] + resumed
    assert found["failed"] + found["failed_then_retried"] == truth["failed"] + truth["failed_then_retried"]


def test_a_job_run_again_under_its_id_is_a_new_job(tmp_path: Path) -> None:
    """Deleting a job and saving it again (a new ``created_at``; its history goes with it by the
    foreign key) lowers every sum over the rows; the counters keep what they counted."""
    writer = WorkspaceWriter(tmp_path / "ws")
    job = Job("nightly", 1, "scores/nightly.yaml")
    job.sheet_started(1)
    job.sheet_completed(1, 1.5)
    job.total_retry_count = 2
    writer.save(job)
    writer.record_execution(job.job_id, 1, 1, "ok", 0, 1.5)
    daemon = ScrapedDaemon(writer.path, datetime.now(UTC))
    first = daemon.expose()
    conn = sqlite3.connect(writer.path)
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("DELETE FROM jobs WHERE id = 'nightly'")
    conn.commit()
    conn.close()
    again = Job("nightly", 1, "scores/nightly.yaml", created_at=datetime.now(UTC))
    again.sheet_started(1)
    writer.save(again)
    second = daemon.expose()
    again.sheet_completed(1, 0.5)
    again.total_retry_count = 1
    writer.save(again)
    writer.record_execution(again.job_id, 1, 1, "ok", 0, 0.5)
    third = daemon.expose()
    assert_never_down([first, second, third])
    assert by(third, "marianne_execution_attempts_total", "outcome")["success"] == 2
    assert family(third, "marianne_job_retries_total") == {frozenset(): 3}
    assert by(third, "marianne_jobs_finished_total", "status")["completed"] == 2
