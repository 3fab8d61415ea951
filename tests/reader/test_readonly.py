"""The reader never changes a byte of the user's DB, its WAL or its shared-memory file."""

import sqlite3
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from support import ALL_FIXTURES, SMALL, ExclusiveWriter, checksums, computed_at

from exporter.reader import DatabaseUnavailable, FlujoReader, Problem
from exporter.reader import spans as span_queries
from exporter.stuck import StuckPolicy
from exporter.timeparse import UTC


def read_everything(db: Path) -> None:
    reader = FlujoReader(db, naive_timezone=UTC)
    now = computed_at(SMALL)
    reader.fast_stats(now, StuckPolicy(timedelta(hours=1)))
    reader.count_stats(now)
    reader.aggregate_stats(now)
    with reader.session() as s:
        if s.schema.has("spans"):
            span_queries.per_run(s.conn, with_runs_table=s.schema.has("runs"))


@pytest.mark.parametrize("name", ALL_FIXTURES)
def test_no_writer_attached_nothing_changes_nothing_created(fixture_copy, name: str) -> None:
    db = fixture_copy(name)
    before = checksums(db)
    assert set(before) == {"db"}
    read_everything(db)
    assert checksums(db) == before  # and no -wal/-shm were left behind


def test_live_writer_db_wal_and_shm_unchanged(fixture_copy) -> None:
    db = fixture_copy(SMALL)
    writer = sqlite3.connect(db)
    writer.execute(
        "INSERT INTO runs (run_id, pipeline_name, pipeline_version, status, start_time)"
        " VALUES ('run_live', 'p', '1', 'running', '2026-11-21T11:00:00')"
    )
    writer.commit()
    writer.execute("SELECT COUNT(*) FROM runs").fetchone()  # an app reads after it writes
    before = checksums(db)
    assert set(before) == {"db", "-wal", "-shm"}
    for _ in range(3):
        read_everything(db)
    assert checksums(db) == before
    stats = FlujoReader(db, naive_timezone=UTC).count_stats(computed_at(SMALL))
    assert stats.runs_by_status is not None and stats.runs_by_status["running"] == 6  # sees the WAL
    writer.close()


def test_readonly_directory_and_file(fixture_copy, tmp_path: Path) -> None:
    db = fixture_copy(SMALL)
    db.chmod(0o444)
    tmp_path.chmod(0o555)
    try:
        read_everything(db)
    finally:
        tmp_path.chmod(0o755)


@pytest.mark.parametrize(
    ("content", "problem", "text"),
    [
        (None, Problem.MISSING, "does not exist"),
        (b"", Problem.EMPTY, "empty"),
        (b"This is not a valid SQLite database", Problem.NOT_SQLITE, "not a SQLite database"),
        (b"SQLite format 3\x00" + b"\xff" * 4000, Problem.CORRUPT, "not a database"),
    ],
)
def test_bad_files_name_the_file_and_stay_unchanged(tmp_path: Path, content, problem, text) -> None:
    db = tmp_path / "flujo_ops.db"
    if content is not None:
        db.write_bytes(content)
    with pytest.raises(DatabaseUnavailable) as info:
        FlujoReader(db, naive_timezone=UTC).schema()
    assert info.value.problem is problem
    assert str(db) in info.value.message and text in info.value.message
    if content is not None:
        assert db.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ([] if content is None else ["flujo_ops.db"])


def test_locked_by_a_writer(fixture_copy) -> None:
    db = fixture_copy(SMALL)
    with ExclusiveWriter(db), pytest.raises(DatabaseUnavailable) as info:
        FlujoReader(db, naive_timezone=UTC, busy_timeout=0.1).count_stats(computed_at(SMALL))
    assert info.value.problem is Problem.LOCKED and str(db) in info.value.message


def test_query_timeout_interrupts(fixture_copy) -> None:
    db = fixture_copy(SMALL)
    reader = FlujoReader(db, naive_timezone=UTC, query_timeout=0.05)
    with pytest.raises(DatabaseUnavailable) as info, reader.session() as s:
        s.conn.execute(
            "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT COUNT(*) FROM n"
        ).fetchone()
    assert info.value.problem is Problem.TIMEOUT


def test_reader_refuses_writes(fixture_copy) -> None:
    reader = FlujoReader(fixture_copy(SMALL), naive_timezone=UTC)
    with pytest.raises(DatabaseUnavailable), reader.session() as s:
        s.conn.execute("DELETE FROM runs")


def test_sessions_from_threads(fixture_copy) -> None:
    reader = FlujoReader(fixture_copy(SMALL), naive_timezone=UTC)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(20):
                reader.count_stats(computed_at(SMALL))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
