"""Real daemon processes over Marianne files that a simulated conductor keeps writing: one on a
workspace DB, one on the conductor registry listing two workspaces, which it reads too.  The
counts follow the files (the registry's daemon shows both workspaces summed); the counter families
never go down; the daemons write nothing (each file's content is, before every write and at the
end, what the writer itself left); and the writer, which waits on locks as Marianne does and
retries nothing, never meets "database is locked" (any sqlite3.OperationalError ends the writes
and fails the test)."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import math
import sqlite3
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from processes import Process, http_get, running_daemon
from support import parse_exposition, query, wait_for

from exporter.engines.marianne.simulator import REGISTRY_DB, Conductor, Job, RegistryWriter, WorkspaceWriter

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
FAST = "metrics:\n  refresh_interval: 1s\n  counts_interval: 1s\n  aggregate_interval: 1s\n"
ROUNDS = 6
JOBS_PER_ROUND = 12
# Counter families: under these writes (jobs failing, retried, resumed) none may go down.
COUNTERS = (
    "marianne_execution_attempts_total",
    "marianne_job_retries_total",
    "marianne_jobs_finished_total",
    "marianne_job_duration_seconds_count",
)


def content(db: Path) -> dict[str, str]:
    """Digest of the DB file and of a non-empty -wal: what holds its content.  Never the -shm:
    opening and closing any descriptor of a file drops every POSIX lock this process holds on it,
    and the registry writer's lock on the -shm is what keeps a reader from truncating it under the
    writer's mapping (SIGBUS).  Dropping its lock on the DB file is harmless: only read-only
    connections (which never checkpoint) share the file."""
    found = {}
    for suffix in ("", "-wal"):
        candidate = Path(f"{db}{suffix}")
        if candidate.exists() and (not suffix or candidate.stat().st_size):
            found[suffix or "db"] = hashlib.sha256(candidate.read_bytes()).hexdigest()
    return found


class Ledger:
    """The writer's own record of each file's content after each of its operations.  Before the
    next one the file must still hold exactly that: nobody else wrote."""

    def __init__(self) -> None:
        self.left: dict[Path, dict[str, str]] = {}
        self.writes: Counter[Path] = Counter()
        self.foreign: list[tuple[Path, dict[str, str], dict[str, str]]] = []

    def __call__(self, path: Path, when: str) -> None:
        current = content(path)
        if when == "before":
            if path in self.left and current != self.left[path]:
                self.foreign.append((path, self.left[path], current))
        else:
            self.left[path] = current
            self.writes[path] += 1


def scrape(daemon: Process) -> Samples:
    status, body = http_get(daemon.url + "/metrics")
    assert status == 200, body
    return parse_exposition(body)


def keyed(samples: Samples, name: str, *labels: str) -> dict[tuple[str, ...], float]:
    found: Counter[tuple[str, ...]] = Counter()
    for (sample, pairs), value in samples.items():
        if sample == name:
            as_dict = dict(pairs)
            found[tuple(as_dict[label] for label in labels)] += value
    return {key: value for key, value in found.items() if value}


def jobs(samples: Samples, family: str) -> float:
    return sum(keyed(samples, family, "status").values())


def showing(daemon: Process, family: str, n: int) -> Samples | None:
    """The scrape once ``family`` counts ``n`` jobs, else None."""
    samples = scrape(daemon)
    return samples if jobs(samples, family) == n else None


def outcomes(db: Path) -> Counter[tuple[str, ...]]:
    """Attempt outcomes from the rows, independently of the exporter's SQL.  A resumed job's failed
    attempt is ``failed`` to a daemon that saw it before the resume, ``failed_then_retried`` to one
    that did not: the two are compared together."""
    status = {(j, n): s for j, n, s in query(db, "SELECT job_id, sheet_num, status FROM sheets")}
    attempts: dict[tuple[str, int], list[int]] = {}
    for job_id, n, attempt in query(db, "SELECT job_id, sheet_num, attempt_num FROM execution_history"):
        attempts.setdefault((job_id, n), []).append(attempt)
    found: Counter[tuple[str, ...]] = Counter()
    for key, numbers in attempts.items():
        found[("failed or retried",)] += len(numbers) - 1
        last = {"completed": "success", "failed": "failed or retried"}.get(status.get(key, ""), "undecided")
        found[(last,)] += 1
    return +found


def shown_outcomes(samples: Samples) -> dict[tuple[str, ...], float]:
    found: Counter[tuple[str, ...]] = Counter()
    for (outcome,), n in keyed(samples, "marianne_execution_attempts_total", "outcome").items():
        found[("success",) if outcome == "success" else ("failed or retried",)] += n
    found[("undecided",)] += sum(keyed(samples, "marianne_execution_attempts_undecided").values())
    return {key: n for key, n in found.items() if n}


def workspace_truth(*dbs: Path) -> dict[str, object]:
    """The workspace families' values from the rows of ``dbs``, summed."""
    if len(dbs) > 1:
        parts = [workspace_truth(db) for db in dbs]
        summed: dict[str, object] = {}
        for key in parts[0]:
            total: Counter[tuple[str, ...]] = Counter()
            for part in parts:
                total.update(part[key])  # type: ignore[arg-type]
            summed[key] = dict(+total)
        return summed
    [db] = dbs

    def grouped(sql: str) -> dict[tuple[str, ...], float]:
        return {tuple(row[:-1]): float(row[-1]) for row in query(db, sql) if row[-1]}

    [(retries,)] = query(db, "SELECT SUM(total_retry_count) FROM jobs")
    return {
        "jobs": grouped("SELECT status, COUNT(*) FROM jobs GROUP BY 1"),
        "sheets": grouped("SELECT status, COUNT(*) FROM sheets GROUP BY 1"),
        "failures": grouped(
            "SELECT error_category, exit_reason, COUNT(*) FROM sheets WHERE status = 'failed' GROUP BY 1, 2"
        ),
        "attempts": dict(outcomes(db)),
        "retries": {(): float(retries)} if retries else {},
        "without_pid": grouped("SELECT COUNT(*) FROM jobs WHERE status = 'running'"),
        "stale": {},  # every running job was updated seconds ago
    }


def workspace_shown(samples: Samples) -> dict[str, object]:
    return {
        "jobs": keyed(samples, "marianne_jobs", "status"),
        "sheets": keyed(samples, "marianne_sheets", "status"),
        "failures": keyed(samples, "marianne_sheet_failures", "error_category", "exit_reason"),
        "attempts": shown_outcomes(samples),
        "retries": keyed(samples, "marianne_job_retries_total"),
        "without_pid": keyed(samples, "marianne_jobs_running_without_pid"),
        "stale": keyed(samples, "marianne_jobs_stale"),
    }


def conductor_truth(db: Path) -> dict[str, object]:
    """The registry's families from its rows, and the workspace families summed over the
    workspaces it lists."""
    [(orphans,)] = query(db, "SELECT COUNT(*) FROM jobs WHERE status IN ('queued', 'running')")
    workspaces = [Path(w) / ".marianne-state.db" for (w,) in query(db, "SELECT DISTINCT workspace FROM jobs")]
    return {
        "jobs": {(s,): float(n) for s, n in query(db, "SELECT status, COUNT(*) FROM jobs GROUP BY 1")},
        "orphans": {(): float(orphans)} if orphans else {},
        "workspaces": {("ok",): float(len(workspaces))},
        "summed": workspace_truth(*workspaces),
    }


def conductor_shown(samples: Samples) -> dict[str, object]:
    return {
        "jobs": keyed(samples, "marianne_conductor_jobs", "status"),
        "orphans": keyed(samples, "marianne_conductor_orphaned_jobs"),
        "workspaces": keyed(samples, "marianne_workspaces", "state"),
        "summed": workspace_shown(samples),
    }


def counters(samples: Samples) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {key: value for key, value in samples.items() if key[0] in COUNTERS}


def settle(daemon: Process, shown: Callable[[Samples], dict[str, object]], expected: dict[str, object]) -> Samples:
    last: list[dict[str, object]] = []

    def settled() -> Samples | None:
        samples = scrape(daemon)
        last[:] = [shown(samples)]
        return samples if last[0] == expected else None

    return wait_for(settled, 30, lambda: f"the metrics to equal the file:\n{last}\n!=\n{expected}")


def test_a_live_conductor_through_real_daemons(tmp_path: Path) -> None:
    ledger = Ledger()
    workspaces = [WorkspaceWriter(tmp_path / name, witness=ledger) for name in ("ws-a", "ws-b")]
    registry = RegistryWriter(tmp_path / "conductor" / REGISTRY_DB, witness=ledger)
    conductor = Conductor(workspaces, registry, seed=21, speed=math.inf)
    watched = workspaces[0].path

    async def submit(n: int) -> None:
        for _ in range(n):  # one job at a time: each write sees the file as the previous one left it
            await conductor.run_one()

    asyncio.run(submit(JOBS_PER_ROUND))  # rows before the daemons start
    seen: list[Samples] = []
    seen_by_conductor: list[Samples] = []
    with (
        running_daemon(tmp_path, "--db", str(watched), config=FAST, wait_path="/readyz") as daemon,
        running_daemon(tmp_path, "--db", str(registry.path), config=FAST, wait_path="/readyz") as conductor_daemon,
    ):
        for _ in range(ROUNDS):
            asyncio.run(submit(JOBS_PER_ROUND))  # written while both daemons read
            before = jobs(seen[-1], "marianne_jobs") if seen else 0.0
            [(in_file,)] = query(watched, "SELECT COUNT(*) FROM jobs")
            assert in_file > before
            seen.append(wait_for(lambda n=in_file: showing(daemon, "marianne_jobs", n), 30, "the workspace's jobs"))
            [(listed,)] = query(registry.path, "SELECT COUNT(*) FROM jobs")
            in_both = sum(query(w.path, "SELECT COUNT(*) FROM jobs")[0][0] for w in workspaces)
            assert in_both == listed
            wait_for(
                lambda n=listed: showing(conductor_daemon, "marianne_conductor_jobs", n), 30, "the registry's jobs"
            )
            seen_by_conductor.append(
                wait_for(
                    lambda n=in_both: showing(conductor_daemon, "marianne_jobs", n), 30, "both workspaces' jobs summed"
                )
            )
        seen.append(settle(daemon, workspace_shown, workspace_truth(watched)))
        seen_by_conductor.append(settle(conductor_daemon, conductor_shown, conductor_truth(registry.path)))
        for process in (daemon, conductor_daemon):
            assert "Traceback" not in process.output(), process.output()
    registry.close()

    # Nobody but the writer changed a file, and each is now exactly what the writer left.
    assert ledger.foreign == []
    assert set(ledger.writes) == {workspaces[0].path, workspaces[1].path, registry.path}
    for path, left in ledger.left.items():
        assert content(path) == left, path
    assert ledger.writes[watched] > ROUNDS * JOBS_PER_ROUND
    # The counters only grew, and they did grow, on either daemon.
    for scrapes in (seen, seen_by_conductor):
        for earlier, later in itertools.pairwise(scrapes):
            before, after = counters(earlier), counters(later)
            assert before.keys() <= after.keys()
            assert all(after[key] >= value for key, value in before.items()), [
                (key, value, after[key]) for key, value in before.items() if after[key] < value
            ]
        assert sum(counters(scrapes[-1]).values()) > sum(counters(scrapes[0]).values())
    # What the comparisons covered: every job status the conductor reaches, retries, failures and
    # resumed jobs, in two workspaces.
    truth = workspace_truth(watched)
    assert set(truth["jobs"]) >= {("completed",), ("failed",)}  # type: ignore[arg-type]
    assert truth["failures"] and truth["retries"]
    assert conductor_truth(registry.path)["workspaces"] == {("ok",): 2.0}
    [(resumed,)] = query(watched, "SELECT COUNT(*) FROM jobs WHERE id LIKE 'resumed-%'")
    assert resumed > 0


def test_the_ledger_sees_any_write_but_the_writers(tmp_path: Path) -> None:
    ledger = Ledger()
    workspace = WorkspaceWriter(tmp_path / "ws", witness=ledger)
    registry = RegistryWriter(tmp_path / REGISTRY_DB, witness=ledger)
    job = Job("etl", 2, "scores/etl.yaml")
    workspace.save(job)
    registry.register_job(job.job_id, job.config_path, workspace.workspace)
    assert ledger.foreign == []
    for db in (workspace.path, registry.path):  # someone else's write, in the DB file or in the -wal
        conn = sqlite3.connect(db)
        conn.execute("UPDATE jobs SET status = 'paused'")
        conn.commit()
        conn.close()
    workspace.save(job)
    registry.update_status(job.job_id, "running", pid=1)
    registry.close()
    assert [path for path, _, _ in ledger.foreign] == [workspace.path, registry.path]
