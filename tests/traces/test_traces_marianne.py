"""Marianne's rebuilt traces, from its real workspace fixture to a real OTLP receiver over gRPC and HTTP:
one trace per job run (job -> sheet -> attempt), every parent present, ERROR with the message and
category where a job, sheet or attempt failed, ids from the job id, ``created_at`` and ``started_at``,
each span once across tailer restarts and re-runs, the same ids from two ``state-exporter replay``
runs, and never a prompt or an output.

The ground truth is the fixture's ``expected.json`` (an independent oracle, cross-checked with
Marianne's own API: jobs, attempts and their outcomes) and the fixture's rows, read here with plain SQL.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from engines.cases import MARIANNE_REGISTRY, MARIANNE_WORKSPACE, marianne_expected
from traces.conftest import make_config
from traces.receiver import ReceivedSpan, Receiver

from exporter.cli import main as state_exporter
from exporter.reader import StateReader
from exporter.traces import replay

DAY = 86400.0
WORKSPACE = MARIANNE_WORKSPACE
SPANS = 33  # 7 started jobs, 13 sheets that ran (the cancelled sheet never did), 13 attempts
# Every attribute a Marianne span may carry: nothing else (a prompt, an output, a JSON column) can leak.
ATTRIBUTES = {
    "marianne.job_id",
    "marianne.job_name",
    "marianne.status",
    "marianne.total_sheets",
    "marianne.last_completed_sheet",
    "marianne.total_retry_count",
    "marianne.rate_limit_waits",
    "marianne.sheet_num",
    "marianne.attempt_count",
    "marianne.exit_code",
    "marianne.execution_duration_seconds",
    "marianne.attempt_num",
    "marianne.execution_id",
    "marianne.outcome",
    "marianne.error_category",
    "error.type",
    "marianne.exit_reason",
    "marianne.exit_signal",
    "marianne.exporter.end_time_inferred",
    "marianne.exporter.end_time_source",
}


def digest(domain: bytes, size: int, *parts: str) -> str:
    return hashlib.sha256(domain + b"\x00".join(p.encode() for p in parts)).digest()[:size].hex()


def trace_hex(job: dict[str, Any]) -> str:
    return digest(b"marianne-trace:", 16, job["id"], job["created_at"], job["started_at"])


def span_hex(job: dict[str, Any], *key: str) -> str:
    return digest(b"marianne-span:", 8, job["id"], job["created_at"], job["started_at"], *key)


def nanos(text: str) -> int:
    seconds = datetime.fromisoformat(text).timestamp()
    whole = int(seconds)
    return whole * 1_000_000_000 + round((seconds - whole) * 1e9)


def rows(db: Path, sql: str) -> list[dict[str, Any]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in conn.execute(sql)]
    finally:
        conn.close()


def marianne_save(
    db: Path, job_id: str, status: str, times: dict[str, datetime | None], sheets: list[tuple[Any, ...]]
) -> None:
    """One ``SQLiteStateBackend.save()`` as Marianne 0.1.0 runs it: the job row upserted with every
    column but ``created_at`` (and ``description``) rewritten, then each sheet row upserted whole.
    ``sheets``: (number, status, attempt count, started, completed)."""

    def iso(at: datetime | None) -> str | None:
        return None if at is None else at.isoformat()

    conn = sqlite3.connect(db)
    try:
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "INSERT INTO jobs (id, name, status, total_sheets, last_completed_sheet, created_at, updated_at,"
            " started_at, completed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET"
            " name = excluded.name, status = excluded.status, total_sheets = excluded.total_sheets,"
            " last_completed_sheet = excluded.last_completed_sheet, pid = excluded.pid,"
            " error_message = excluded.error_message, total_retry_count = excluded.total_retry_count,"
            " updated_at = excluded.updated_at, started_at = excluded.started_at, completed_at = excluded.completed_at",
            (
                job_id,
                job_id,
                status,
                len(sheets),
                sum(1 for sheet in sheets if sheet[1] == "completed"),
                iso(times["started"]),  # a new CheckpointState's created_at: what the upsert ignores
                iso(times["updated"]),
                iso(times["started"]),
                iso(times.get("completed")),
            ),
        )
        for num, sheet_status, attempts, started, completed in sheets:
            conn.execute(
                "INSERT INTO sheets (job_id, sheet_num, status, attempt_count, exit_code, started_at, completed_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(job_id, sheet_num) DO UPDATE SET status = excluded.status,"
                " attempt_count = excluded.attempt_count, exit_code = excluded.exit_code,"
                " error_message = excluded.error_message, error_category = excluded.error_category,"
                " started_at = excluded.started_at, completed_at = excluded.completed_at,"
                " execution_duration_seconds = excluded.execution_duration_seconds,"
                " exit_signal = excluded.exit_signal, exit_reason = excluded.exit_reason",
                (job_id, num, sheet_status, attempts, 0 if completed else None, iso(started), iso(completed)),
            )
        conn.commit()
    finally:
        conn.close()


def record_execution(db: Path, job_id: str, sheet: int, attempt: int, at: datetime, seconds: float) -> None:
    """``SQLiteStateBackend.record_execution``: one row per attempt, after it ran."""
    conn = sqlite3.connect(db)
    try:
        conn.execute(
            "INSERT INTO execution_history (job_id, sheet_num, attempt_num, prompt, output, exit_code,"
            " duration_seconds, executed_at) VALUES (?, ?, ?, 'a prompt', 'an output', 0, ?, ?)",
            (job_id, sheet, attempt, seconds, at.isoformat()),
        )
        conn.commit()
    finally:
        conn.close()


def fixture_now() -> datetime:
    return datetime.fromisoformat(marianne_expected()["computed_at_utc"])


def check_traces(spans: list[ReceivedSpan], db: Path, protocol: str) -> None:
    truth = marianne_expected()["workspace"]
    jobs = {job["id"]: job for job in rows(db, "SELECT * FROM jobs WHERE started_at IS NOT NULL")}
    by_key = {(s.trace_id, s.span_id): s for s in spans}
    assert len(by_key) == len(spans) == SPANS, "every span once"
    assert {s.resource["service.name"] for s in spans} == {"marianne"}
    assert {s.transport for s in spans} == {protocol.split("/")[0]}
    for span in spans:  # every parent present, in the same trace
        assert not span.parent_span_id or (span.trace_id, span.parent_span_id) in by_key
        assert set(span.attributes) <= ATTRIBUTES, "no attribute beyond the documented ones"
    roots = [s for s in spans if not s.parent_span_id]
    assert {s.trace_id for s in roots} == {s.trace_id for s in spans} == {trace_hex(j) for j in jobs.values()}
    assert len(roots) == len(jobs) == truth["jobs_total"] - truth["jobs_by_status"]["pending"]

    for oracle in truth["jobs"]:  # the job spans: the oracle's times, status and message
        if oracle["started_at_utc"] is None:
            assert oracle["job_id"] not in jobs, "a job never started has no trace"
            continue
        job = jobs[oracle["job_id"]]
        span = by_key[(trace_hex(job), span_hex(job, "job"))]
        assert (span.name, span.kind, span.parent_span_id) == (job["name"], 1, "")
        assert span.attributes["marianne.job_id"] == oracle["job_id"]
        assert span.attributes["marianne.status"] == oracle["status"]
        assert span.start_ns == nanos(oracle["started_at_utc"])
        if oracle["completed_at_utc"] is not None:
            assert span.end_ns == nanos(oracle["completed_at_utc"])
            assert "marianne.exporter.end_time_inferred" not in span.attributes
        else:  # running, paused, or cancelled (Marianne gives a cancelled job no completed_at)
            assert span.end_ns == nanos(oracle["updated_at_utc"])
            assert span.attributes["marianne.exporter.end_time_source"] == "updated_at"
        if oracle["status"] == "completed":
            assert (span.status_code, span.status_message) == (1, "")
        elif oracle["status"] == "failed":
            assert (span.status_code, span.status_message) == (2, oracle["error_message"])
            assert span.attributes["marianne.error_category"] in truth["failed_sheets_by_error_category"]
        else:
            assert (span.status_code, span.status_message) == (0, "")

    sheets = rows(db, "SELECT * FROM sheets WHERE started_at IS NOT NULL OR completed_at IS NOT NULL")
    assert len(sheets) == truth["sheets_total"] - 1  # the cancelled sheet that never started
    for sheet in sheets:
        job = jobs[sheet["job_id"]]
        span = by_key[(trace_hex(job), span_hex(job, "sheet", str(sheet["sheet_num"])))]
        assert (span.name, span.parent_span_id) == (f"sheet {sheet['sheet_num']}", span_hex(job, "job"))
        assert span.attributes["marianne.status"] == sheet["status"]
        if sheet["status"] == "failed":
            assert (span.status_code, span.status_message) == (2, sheet["error_message"])
            assert span.attributes["marianne.error_category"] == sheet["error_category"]
            assert span.attributes["error.type"] == sheet["error_category"]
            assert span.attributes["marianne.exit_reason"] == sheet["exit_reason"]
        else:  # gate on status: etl-report#2 succeeded on a retry and keeps its "transient" category
            assert "marianne.error_category" not in span.attributes and "marianne.exit_reason" not in span.attributes
            assert span.status_code == (1 if sheet["status"] == "completed" else 0)
        if sheet["status"] in ("completed", "failed"):
            assert span.end_ns >= nanos(sheet["completed_at"])
        if sheet["started_at"] is not None:
            assert span.start_ns <= nanos(sheet["started_at"])

    attempts = truth["attempts"]
    assert len(attempts) == truth["execution_history_rows"]
    history = {
        (h["job_id"], h["sheet_num"], h["attempt_num"]): h["id"] for h in rows(db, "SELECT * FROM execution_history")
    }
    outcomes: Counter[str] = Counter()
    for oracle in attempts:
        job = jobs[oracle["job_id"]]
        row_id = history[(oracle["job_id"], oracle["sheet_num"], oracle["attempt_num"])]
        span = by_key[(trace_hex(job), span_hex(job, "attempt", str(row_id)))]
        assert span.parent_span_id == span_hex(job, "sheet", str(oracle["sheet_num"]))
        assert span.name == f"attempt {oracle['attempt_num']}"
        assert span.end_ns == nanos(oracle["executed_at_utc"])
        assert abs(span.end_ns - span.start_ns - oracle["duration_seconds"] * 1e9) < 1000
        assert span.attributes["marianne.outcome"] == oracle["outcome"]
        assert span.attributes.get("marianne.exit_code") == oracle["exit_code"]
        assert span.status_code == (1 if oracle["outcome"] == "success" else 2)
        outcomes[oracle["outcome"]] += 1
    assert outcomes == Counter(truth["execution_attempts_by_outcome"])
    # flaky-import#2: a timeout, a SIGKILL, then a validation failure with exit code 0
    failed_last = [s for s in spans if s.attributes.get("marianne.outcome") == "failed"]
    assert sorted((s.status_message, s.attributes["error.type"]) for s in failed_last) == [
        ("Authentication failed", "auth"),
        ("Validation failed: output.csv missing", "validation"),
    ]


both_protocols = pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])


@both_protocols
def test_tailer_exports_every_run(fixture_copy, make_tailer, receiver: Receiver, protocol: str) -> None:
    db = fixture_copy(WORKSPACE)
    tailer, clock = make_tailer(db, fixture_now(), protocol)
    first = tailer.run_once()
    assert not first.interrupted and first.discovered == 7
    assert first.runs_completed == 4, "completed, failed twice, cancelled: at once; running and paused wait"
    # Past the grace period (1 h), the finished parts of unfinished runs go out: zombie-run's first sheet
    # and its attempt, not its open job and sheet; recovered-run has nothing finished, paused-run is
    # 15 minutes old.
    jobs = {j["id"]: j for j in rows(db, "SELECT * FROM jobs WHERE started_at IS NOT NULL")}
    sent = Counter(s.trace_id for s in receiver.spans)
    assert first.exported == 8 + 7 + 5 + 4 + 2 == sum(sent.values())
    zombie = {s.name for s in receiver.spans if s.trace_id == trace_hex(jobs["zombie-run"])}
    assert zombie == {"sheet 1", "attempt 1"}
    assert sent[trace_hex(jobs["paused-run"])] == sent[trace_hex(jobs["recovered-run"])] == 0
    assert tailer.backlog()[1] == 3
    clock.advance(8 * DAY)  # past abandon_after: runs that never finish go out as they are
    assert tailer.run_once().runs_completed == 3
    assert tailer.run_once().exported == 0 and tailer.backlog() == (0, 0)
    check_traces(receiver.spans, db, protocol)
    open_sheets = [s for s in receiver.spans if s.attributes.get("marianne.status") == "in_progress"]
    assert [s.attributes["marianne.exporter.end_time_source"] for s in open_sheets] == ["updated_at"] * 2


@both_protocols
def test_two_replays_send_the_same_ids(fixture_copy, tmp_path: Path, protocol: str) -> None:
    """``state-exporter replay`` twice, with two state files: every span, the very same ids."""
    db = fixture_copy(WORKSPACE)
    keys = []
    for n in range(2):
        with Receiver() as receiver:
            endpoint = receiver.grpc_endpoint if protocol == "grpc" else receiver.http_endpoint
            argv = ["replay", "--db", str(db), "--state", str(tmp_path / f"{n}.sqlite"), "--endpoint", endpoint]
            argv += ["--protocol", protocol, "--timezone", "UTC", "--no-progress"]
            assert state_exporter(argv) == 0
            check_traces(receiver.spans, db, protocol)
            keys.append(set(receiver.keys))
    assert keys[0] == keys[1]


def test_daemon_restart_sends_nothing_twice(fixture_copy, make_tailer, receiver: Receiver, tmp_path: Path) -> None:
    db = fixture_copy(WORKSPACE)
    state = tmp_path / "tail.sqlite"
    tailer, _ = make_tailer(db, fixture_now(), state=state)
    sent = tailer.run_once().exported
    tailer.close()
    restarted, clock = make_tailer(db, fixture_now(), state=state)
    assert restarted.run_once().exported == 0 and restarted.run_once().discovered == 0
    clock.advance(8 * DAY)
    assert restarted.run_once().exported == SPANS - sent
    assert restarted.run_once().exported == 0
    assert set(receiver.keys.values()) == {1} and len(receiver.keys) == SPANS
    units = [f"{j['id']}@{j['started_at']}" for j in rows(db, "SELECT * FROM jobs WHERE started_at IS NOT NULL")]
    assert restarted.exported_run_ids([*units, "nobody@2026-01-01T00:00:00+00:00"]) == {
        *units,
        "nobody@2026-01-01T00:00:00+00:00",
    }


def test_a_rerun_is_a_new_trace_sent_once(fixture_copy, make_tailer, receiver: Receiver, tmp_path: Path) -> None:
    """Running a job id again overwrites its row (Marianne's upsert keeps ``created_at``, writes a new
    ``started_at``): the new run is discovered once, as its own trace, with only its own sheets and
    attempts; the first run's trace stays as it was sent, and a restart sends nothing again."""
    db = fixture_copy(WORKSPACE)
    state = tmp_path / "tail.sqlite"
    tailer, clock = make_tailer(db, fixture_now(), state=state)
    tailer.run_once()
    [before] = rows(db, "SELECT * FROM jobs WHERE id = 'etl-report'")
    first_keys = {k for k in receiver.keys if k[0] == trace_hex(before)}
    assert len(first_keys) == 1 + 3 + 4
    start = fixture_now() + timedelta(minutes=5)
    at = [start + timedelta(seconds=n) for n in range(8)]
    pending = [(n, "pending", 0, None, None) for n in (1, 2, 3)]  # a fresh CheckpointState's sheets
    marianne_save(db, "etl-report", "running", {"started": at[0], "updated": at[0]}, pending)
    clock.advance(300)
    assert tailer.run_once().discovered == 1, "the re-run is a new run; nothing else is"
    sheets = [(n, "completed", 1, at[n], at[n + 1]) for n in (1, 2, 3)]
    for n in (1, 2, 3):
        record_execution(db, "etl-report", n, 1, at[n + 1], 0.5)
    marianne_save(db, "etl-report", "completed", {"started": at[0], "updated": at[5], "completed": at[5]}, sheets)
    report = tailer.run_once()
    assert (report.discovered, report.exported, report.runs_completed) == (0, 1 + 3 + 3, 1)
    [after] = rows(db, "SELECT * FROM jobs WHERE id = 'etl-report'")
    assert after["created_at"] == before["created_at"] and after["started_at"] != before["started_at"]
    second = [s for s in receiver.spans if s.trace_id == trace_hex(after)]
    assert trace_hex(after) != trace_hex(before) and len(second) == 7
    assert {s.span_id for s in second if not s.parent_span_id} == {span_hex(after, "job")}
    assert all(s.start_ns >= nanos(after["started_at"]) for s in second), "no span of the earlier run"
    assert {k for k in receiver.keys if k[0] == trace_hex(before)} == first_keys
    tailer.close()
    restarted, _ = make_tailer(db, fixture_now() + timedelta(minutes=10), state=state)
    assert restarted.run_once().discovered == 0
    assert set(receiver.keys.values()) == {1}


def test_a_run_saved_late_is_not_skipped(fixture_copy, make_tailer, receiver: Receiver) -> None:
    """A run that started before the newest one discovered but was saved after it (two jobs waiting on
    the workspace's write lock, a conductor that persists at its first sheet event) is still found:
    the cursor holds the runs discovered, not a high-water mark."""
    db = fixture_copy(WORKSPACE)
    tailer, clock = make_tailer(db, fixture_now())
    tailer.run_once()
    started = fixture_now() - timedelta(hours=3)  # before every run of the last two hours
    done = [(1, "completed", 1, started, started + timedelta(seconds=1))]
    record_execution(db, "late-job", 1, 1, started + timedelta(seconds=1), 0.5)
    marianne_save(
        db, "late-job", "completed", {"started": started, "updated": done[0][4], "completed": done[0][4]}, done
    )
    clock.advance(5)
    report = tailer.run_once()
    assert (report.discovered, report.exported) == (1, 3)
    assert report.runs_completed == 1 and set(receiver.keys.values()) == {1}


def vanished(tailer: Any) -> float:
    samples = [s for m in tailer.collector().collect() for s in m.samples]
    return sum(s.value for s in samples if s.name == "state_exporter_span_runs_vanished_total")


def test_a_paused_run_resumed_under_a_new_start(fixture_copy, make_tailer, receiver: Receiver) -> None:
    """The conductor resumes a paused job with a new ``started_at``: a new trace with what runs from
    then on; the paused run, overwritten before it was exported, is counted as vanished."""
    db = fixture_copy(WORKSPACE)
    tailer, clock = make_tailer(db, fixture_now())
    tailer.run_once()
    [paused] = rows(db, "SELECT * FROM jobs WHERE id = 'paused-run'")
    [done] = rows(db, "SELECT * FROM sheets WHERE job_id = 'paused-run' AND sheet_num = 1")
    assert trace_hex(paused) not in {k[0] for k in receiver.keys}, "within the grace period: waits"
    start = fixture_now() + timedelta(minutes=1)
    at = [start + timedelta(seconds=n) for n in range(4)]
    kept = (1, "completed", 1, datetime.fromisoformat(done["started_at"]), datetime.fromisoformat(done["completed_at"]))
    marianne_save(
        db, "paused-run", "running", {"started": at[0], "updated": at[0]}, [kept, (2, "pending", 0, None, None)]
    )
    clock.advance(120)
    report = tailer.run_once()
    assert report.discovered == 1 and vanished(tailer) == 1
    record_execution(db, "paused-run", 2, 1, at[2], 0.5)
    finished = {"started": at[0], "updated": at[3], "completed": at[3]}
    marianne_save(db, "paused-run", "completed", finished, [kept, (2, "completed", 1, at[1], at[2])])
    assert tailer.run_once().exported == 3, "the job, sheet 2 and its attempt: sheet 1 ran before this run"
    [resumed] = rows(db, "SELECT * FROM jobs WHERE id = 'paused-run'")
    assert {s.name for s in receiver.spans if s.trace_id == trace_hex(resumed)} == {
        "paused-run",
        "sheet 2",
        "attempt 1",
    }


def test_start_at_end_follows_only_unfinished_runs(fixture_copy, make_tailer, receiver: Receiver) -> None:
    db = fixture_copy(WORKSPACE)
    tailer, clock = make_tailer(db, fixture_now(), start_at="end")
    assert tailer.run_once().discovered == 3, "running zombie-run, paused recovered-run and paused-run"
    clock.advance(8 * DAY)
    tailer.run_once()
    jobs = {j["id"]: j for j in rows(db, "SELECT * FROM jobs WHERE started_at IS NOT NULL")}
    followed = {trace_hex(jobs[j]) for j in ("zombie-run", "recovered-run", "paused-run")}
    assert {k[0] for k in receiver.keys} == followed and len(receiver.keys) == 4 + 2 + 3
    assert tailer.run_once().discovered == 0


def test_simulated_conductor_traces_agree_with_the_metrics(tmp_path: Path, receiver: Receiver) -> None:
    """Workspaces written the way Marianne writes them (the demo's simulator, every scenario): every
    parent present, nothing dead-lettered, and the attempts' outcomes are what
    ``marianne_execution_attempts_total`` counts."""
    import asyncio
    import math

    from engines.marianne.helpers import by, expose

    from exporter.engines.marianne.simulator import REGISTRY_DB, SCENARIOS, Conductor, RegistryWriter, WorkspaceWriter

    workspaces = [WorkspaceWriter(tmp_path / "ws-a"), WorkspaceWriter(tmp_path / "ws-b")]
    conductor = Conductor(workspaces, RegistryWriter(tmp_path / "conductor" / REGISTRY_DB), seed=5, speed=math.inf)

    async def drive() -> None:
        for _ in range(12):
            await conductor.run_one()
        for scenario, _ in SCENARIOS:
            await conductor.run_one(scenario)

    asyncio.run(drive())
    assert conductor.registry is not None
    conductor.registry.close()
    for n, name in enumerate(("ws-a", "ws-b")):
        receiver.clear()
        db = tmp_path / name / ".marianne-state.db"
        result = replay(make_config(receiver), StateReader(db, naive_timezone=UTC), tmp_path / f"{n}.sqlite")
        assert result.complete and result.spans_dead_lettered == 0 and result.spans_exported == len(receiver.spans)
        by_key = {(s.trace_id, s.span_id) for s in receiver.spans}
        assert len(by_key) == len(receiver.spans)
        assert all(not s.parent_span_id or (s.trace_id, s.parent_span_id) in by_key for s in receiver.spans)
        started = rows(db, "SELECT COUNT(*) AS n FROM jobs WHERE started_at IS NOT NULL")[0]["n"]
        assert result.runs == started > 0
        outcomes = Counter(
            s.attributes["marianne.outcome"] for s in receiver.spans if "marianne.outcome" in s.attributes
        )
        counted = by(expose(db, now=datetime.now(UTC)), "marianne_execution_attempts_total", "outcome")
        assert {k: float(v) for k, v in outcomes.items()} == {k: v for k, v in counted.items() if v}


def test_the_registry_has_no_spans(fixture_copy, make_tailer, receiver: Receiver, tmp_path: Path) -> None:
    db = fixture_copy(MARIANNE_REGISTRY)
    tailer, _ = make_tailer(db, fixture_now())
    report = tailer.run_once()
    assert not report.supported and report.exported == 0
    result = replay(make_config(receiver), StateReader(db, naive_timezone=UTC), tmp_path / "replay.sqlite")
    assert result.complete and not result.supported and receiver.requests == 0


def test_prompts_and_outputs_never_leave(fixture_copy, tmp_path: Path, receiver: Receiver) -> None:
    """Every attempt's prompt and output replaced by a marker: no span carries one anywhere."""
    db = fixture_copy(WORKSPACE)
    conn = sqlite3.connect(db)
    conn.execute("UPDATE execution_history SET prompt = 'PROMPT-MARK-' || id, output = 'OUTPUT-MARK-' || id")
    conn.commit()
    conn.close()
    result = replay(make_config(receiver), StateReader(db, naive_timezone=UTC), tmp_path / "replay.sqlite")
    assert result.complete and result.spans_exported == SPANS
    texts = [s.name for s in receiver.spans] + [s.status_message for s in receiver.spans]
    texts += [f"{k}={v}" for s in receiver.spans for k, v in s.attributes.items()]
    texts += [str(v) for s in receiver.spans for v in s.resource.values()]
    assert texts and not [t for t in texts if "-MARK-" in t or "prompt" in t.lower()]


@pytest.mark.parametrize("version", [3, 2, 1])
def test_older_schema_versions(fixture_copy, tmp_path: Path, receiver: Receiver, version: int) -> None:
    from engines.marianne.test_marianne_expected import downgrade

    db = fixture_copy(WORKSPACE)
    downgrade(db, version)
    result = replay(make_config(receiver), StateReader(db, naive_timezone=UTC), tmp_path / "replay.sqlite")
    assert result.complete and result.spans_exported == SPANS and result.spans_dead_lettered == 0
    failed = [s for s in receiver.spans if s.name.startswith("sheet") and s.status_code == 2]
    assert len(failed) == 2 and all("error.type" in s.attributes for s in failed)
    assert all(("marianne.exit_reason" in s.attributes) == (version >= 3) for s in failed)


def test_a_bad_time_is_dead_lettered_alone(fixture_copy, tmp_path: Path, receiver: Receiver) -> None:
    db = fixture_copy(WORKSPACE)
    conn = sqlite3.connect(db)
    conn.execute("UPDATE execution_history SET executed_at = 'yesterday' WHERE id = 3")
    conn.commit()
    conn.close()
    result = replay(make_config(receiver), StateReader(db, naive_timezone=UTC), tmp_path / "replay.sqlite")
    assert result.complete and result.spans_dead_lettered == 1 and result.spans_exported == SPANS - 1
