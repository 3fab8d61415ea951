"""The reader never changes the content of the user's DB.

On a WAL database SQLite creates the standard ``-wal`` (empty) and ``-shm`` files when they are
absent, as every reader does, with the DB file's mode and owner; nothing else is ever created."""

import os
import shutil
import sqlite3
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import (
    ALL_FIXTURES,
    FIXTURES,
    NOBODY,
    SMALL,
    ExclusiveWriter,
    FlujoTiers,
    as_user,
    checksums,
    computed_at,
    other_user,
)

from exporter.engines.flujo import spans as span_queries
from exporter.reader import DatabaseUnavailable, Problem, StateReader
from exporter.timeparse import UTC


def read_everything(db: Path) -> None:
    reader = StateReader(db, naive_timezone=UTC)
    now = computed_at(SMALL)
    tiers = FlujoTiers(reader)
    tiers.fast(now)
    tiers.counts(now)
    tiers.aggregates(now)
    with reader.session() as s:
        if s.schema.has("spans"):
            span_queries.per_run(s.conn, with_runs_table=s.schema.has("runs"))


@pytest.mark.parametrize("name", ALL_FIXTURES)
def test_no_writer_attached_content_unchanged_only_standard_files(fixture_copy, name: str) -> None:
    db = fixture_copy(name)
    before = checksums(db)
    assert set(before) == {"db"}
    read_everything(db)
    after = checksums(db)
    assert after["db"] == before["db"]
    assert set(after) <= {"db", "-wal", "-shm"}
    if "-wal" in after:
        assert Path(f"{db}-wal").stat().st_size == 0  # a reader never writes a frame
    assert {p.name for p in db.parent.iterdir()} <= {db.name, f"{db.name}-wal", f"{db.name}-shm"}


def test_created_wal_and_shm_keep_the_db_files_owner_and_mode(fixture_copy) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root can give the DB another owner; CI runs as root")
    db = fixture_copy(SMALL)  # a WAL database
    os.chown(db, NOBODY, NOBODY)
    db.chmod(0o640)
    read_everything(db)
    for suffix in ("-wal", "-shm"):
        info = Path(f"{db}{suffix}").stat()
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (NOBODY, NOBODY, 0o640), suffix


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory another user can traverse (pytest's tmp_path is private to its owner)."""
    path = Path(tempfile.mkdtemp(prefix="reader-readonly-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        path.chmod(0o755)
        shutil.rmtree(path, ignore_errors=True)


def read_counts(db: Path) -> int:
    stats = FlujoTiers(StateReader(db, naive_timezone=UTC)).counts(computed_at(SMALL))
    return sum(stats.workflows_by_status.values())


def test_read_only_directory_with_the_apps_wal_files_present(shared_dir: Path) -> None:
    """While the app holds the DB open its -wal/-shm exist: a reader without write access still reads."""
    db = shared_dir / "flujo_ops.db"
    shutil.copyfile(FIXTURES / SMALL, db)
    db.chmod(0o644)
    app = sqlite3.connect(db)
    app.execute("SELECT COUNT(*) FROM workflow_state").fetchone()  # creates -wal and -shm
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").chmod(0o644)
    shared_dir.chmod(0o555)
    try:
        assert as_user(other_user(), lambda: read_counts(db)) == 57
    finally:
        app.close()


def test_read_only_directory_without_shm_is_a_clear_error(shared_dir: Path) -> None:
    """A WAL DB whose -shm is absent needs SQLite to create it; where the directory forbids that the
    reader says so (it never falls back to an unsafe immutable read)."""
    db = shared_dir / "flujo_ops.db"
    shutil.copyfile(FIXTURES / SMALL, db)
    db.chmod(0o644)
    shared_dir.chmod(0o555)
    if os.geteuid() != 0 and os.access(shared_dir, os.W_OK):
        pytest.skip("cannot make a directory read-only for this user")

    def attempt() -> tuple[str, str]:
        try:
            read_counts(db)
        except DatabaseUnavailable as exc:
            return exc.problem.value, exc.message
        return "read", ""

    problem, message = as_user(other_user(), attempt)
    assert problem == Problem.UNREADABLE.value
    assert str(db) in message and "-shm" in message and "directory" in message
    assert sorted(p.name for p in shared_dir.iterdir()) == ["flujo_ops.db"]


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
    stats = FlujoTiers(StateReader(db, naive_timezone=UTC)).counts(computed_at(SMALL))
    assert stats.runs_by_status is not None and stats.runs_by_status["running"] == 6  # sees the WAL
    writer.close()


@pytest.mark.parametrize(
    ("content", "problem", "text"),
    [
        (None, Problem.MISSING, "does not exist"),
        (b"", Problem.EMPTY, "empty"),
        (b"This is not a valid SQLite database", Problem.NOT_SQLITE, "not a SQLite database"),
        (b"SQLite format 3\x00" + b"\xff" * 4000, Problem.NOT_SQLITE, "bad file header"),
    ],
)
def test_bad_files_name_the_file_and_stay_unchanged(tmp_path: Path, content, problem, text) -> None:
    db = tmp_path / "flujo_ops.db"
    if content is not None:
        db.write_bytes(content)
    with pytest.raises(DatabaseUnavailable) as info:
        StateReader(db, naive_timezone=UTC).schema()
    assert info.value.problem is problem
    assert str(db) in info.value.message and text in info.value.message
    if content is not None:
        assert db.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ([] if content is None else ["flujo_ops.db"])


def test_locked_by_a_writer(fixture_copy) -> None:
    db = fixture_copy(SMALL)
    with ExclusiveWriter(db), pytest.raises(DatabaseUnavailable) as info:
        FlujoTiers(StateReader(db, naive_timezone=UTC, busy_timeout=0.1)).counts(computed_at(SMALL))
    assert info.value.problem is Problem.LOCKED and str(db) in info.value.message


def test_query_timeout_interrupts(fixture_copy) -> None:
    db = fixture_copy(SMALL)
    reader = StateReader(db, naive_timezone=UTC, query_timeout=0.05)
    with pytest.raises(DatabaseUnavailable) as info, reader.session() as s:
        s.conn.execute(
            "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT COUNT(*) FROM n"
        ).fetchone()
    assert info.value.problem is Problem.TIMEOUT


def test_reader_refuses_writes(fixture_copy) -> None:
    reader = StateReader(fixture_copy(SMALL), naive_timezone=UTC)
    with pytest.raises(DatabaseUnavailable), reader.session() as s:
        s.conn.execute("DELETE FROM runs")


def test_sessions_from_threads(fixture_copy) -> None:
    reader = StateReader(fixture_copy(SMALL), naive_timezone=UTC)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(20):
                FlujoTiers(reader).counts(computed_at(SMALL))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
