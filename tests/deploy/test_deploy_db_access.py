"""The DB access that deploy/ sets up, on real files and real processes of distinct users.

Reading a WAL-mode DB whose -wal and -shm are absent (flujo 0.4.35 deletes them at every last close) makes
SQLite create them: an empty -wal and the -shm index, with the DB file's mode, owned by the reader.  The systemd
unit runs the exporter as a transient user in the app's group, with the DB directory setgid and group-writable
and the DB 0660, so that those files stay writable for the app.  These tests run the reader and the app as
different users (forked children with their own uid, gid and supplementary groups) against a copy of a real
Flujo DB.  Root only, to give the files and processes distinct owners; CI runs as root.

A reader without write access to the directory is covered by tests/reader/test_readonly.py.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import tempfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from support import FIXTURES, NOBODY, SMALL, FlujoTiers, app_writes, as_user, computed_at, integrity_and_rows

from exporter.reader import DatabaseUnavailable, Problem, StateReader
from exporter.timeparse import UTC

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the app and the reader as two users")

APP = 65533  # the app's user and group (numeric: no passwd entry needed)
READER = NOBODY  # the exporter's (transient) user
WORKFLOWS = 57  # rows of workflow_state in the fixture


@pytest.fixture
def db_dir() -> Iterator[Path]:
    """/var/lib/flujo as deploy/README.md prepares it: root:<app group>, setgid, group-writable (2770)."""
    top = Path(tempfile.mkdtemp(prefix="deploy-db-access-"))
    top.chmod(0o755)  # pytest's tmp_path is private to root
    directory = top / "flujo"
    directory.mkdir()
    os.chown(directory, 0, APP)
    directory.chmod(0o2770)
    try:
        yield directory
    finally:
        shutil.rmtree(top, ignore_errors=True)


def app_db(directory: Path, mode: int) -> Path:
    """A copy of a real WAL-mode Flujo DB, owned by the app, with no -wal or -shm next to it."""
    db = directory / "flujo_ops.db"
    shutil.copyfile(FIXTURES / SMALL, db)
    os.chown(db, APP, APP)
    db.chmod(mode)
    assert as_user(APP, lambda: journal_mode(db)) == "wal"
    assert sorted(p.name for p in directory.iterdir()) == [db.name]
    return db


def journal_mode(db: Path) -> str:
    conn = sqlite3.connect(db)
    try:
        mode: str = conn.execute("PRAGMA journal_mode").fetchone()[0]
        return mode
    finally:
        conn.close()  # the last close deletes -wal and -shm


def read_workflows(db: Path) -> int:
    stats = FlujoTiers(StateReader(db, naive_timezone=UTC)).counts(computed_at(SMALL))
    return sum(stats.workflows_by_status.values())


def owner_group_mode(path: Path) -> tuple[int, int, int]:
    info = path.stat()
    return info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)


def test_reader_in_the_apps_group_leaves_the_files_writable_for_the_app(db_dir: Path) -> None:
    db = app_db(db_dir, 0o660)
    for n in (1, 2):  # twice: the app's last close deletes the files, the next read creates them again
        assert as_user(READER, lambda: read_workflows(db), groups=[APP]) == WORKFLOWS
        for suffix in ("-wal", "-shm"):
            # Created by the reader, with the DB's mode and, from the setgid directory, the app's group.
            assert owner_group_mode(Path(f"{db}{suffix}")) == (READER, APP, 0o660), suffix
        assert Path(f"{db}-wal").stat().st_size == 0  # a reader never writes a frame
        as_user(APP, partial(app_writes, db, n))  # through the reader's -shm and -wal
    assert as_user(APP, lambda: integrity_and_rows(db)) == ("ok", [1, 2])
    assert owner_group_mode(db) == (APP, APP, 0o660)


def test_control_a_0644_db_locks_the_app_out(db_dir: Path) -> None:
    """Why the DB must be 0660: with Flujo's default 0644, the -shm the reader creates is read-only for the app,
    and the app can no longer write its own DB (the hazard the deploy files' preparation avoids)."""
    db = app_db(db_dir, 0o644)
    assert as_user(READER, lambda: read_workflows(db), groups=[APP]) == WORKFLOWS
    assert owner_group_mode(Path(f"{db}-shm")) == (READER, APP, 0o644)
    with pytest.raises(sqlite3.OperationalError, match="readonly database"):
        as_user(APP, lambda: app_writes(db, 1))


def test_reader_outside_the_apps_group_is_a_clear_error(db_dir: Path) -> None:
    """The unit without SupplementaryGroups= (or a sidecar with another group): the directory cannot even be
    searched.  The reader says so, names the file, creates nothing, and the app is unaffected."""
    db = app_db(db_dir, 0o660)

    def attempt() -> tuple[str, str]:
        try:
            read_workflows(db)
        except DatabaseUnavailable as exc:
            return exc.problem.value, exc.message
        return "read", ""

    problem, message = as_user(READER, attempt)
    assert problem == Problem.UNREADABLE.value
    assert str(db) in message and "directory" in message
    assert sorted(p.name for p in db_dir.iterdir()) == [db.name]
    as_user(APP, lambda: app_writes(db, 1))
    assert as_user(APP, lambda: integrity_and_rows(db)) == ("ok", [1])
