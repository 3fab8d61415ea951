"""The span-export state file breaking under the exporter: corrupt, foreign, unwritable, full, deleted.

Each case uses a real SQLite state file on a real file system and a live OTLP receiver, and checks
what an operator sees: nothing is sent that cannot be recorded, the failure is in the metrics and in
``health()`` (shown by /readyz), and it is logged once, not once per poll.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import random
import sqlite3
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from support import in_ci, parse_exposition, sample
from traces.conftest import NOW
from traces.flujo_db import FlujoWriter, Span, span_hex, trace_hex, typical_run
from traces.receiver import Receiver

from exporter.traces import SpanTailer

RNG = random.Random(11)


def add_runs(w: FlujoWriter, prefix: str, count: int) -> set[tuple[str, str]]:
    """``count`` finished runs; returns the (trace, span) keys the receiver should get."""
    wanted = set()
    for n in range(count):
        run_id = f"{prefix}_{n:04d}"
        start = NOW - timedelta(minutes=30) + timedelta(seconds=n)
        w.start_run(run_id, start)
        spans, end = typical_run(RNG, start)
        w.finish_run(run_id, "completed", end)
        w.save_spans(run_id, spans)
        wanted |= keys(run_id, spans)
    return wanted


def keys(run_id: str, spans: list[Span]) -> set[tuple[str, str]]:
    return {(trace_hex(run_id), span_hex(run_id, s.span_id)) for s in spans}


def metrics(tailer: SpanTailer) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(tailer.collector())
    return parse_exposition(generate_latest(registry).decode())


def checksum(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def traces_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "exporter.traces" and r.levelno >= logging.ERROR]


@pytest.mark.parametrize("damage", ["corrupt", "foreign", "unwritable"])
def test_unusable_state_file_stops_export_visibly_and_logs_once(
    tmp_path: Path, make_tailer, receiver: Receiver, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    w = FlujoWriter(tmp_path / "flujo.db")
    wanted = add_runs(w, "run", 5)
    state = tmp_path / "state.sqlite"
    if damage == "corrupt":
        state.write_bytes(b"this was a state file until a disk error\n" * 200)
    elif damage == "foreign":
        with contextlib.closing(sqlite3.connect(state)) as copy:  # another application's (here: a Flujo) DB
            w.conn.backup(copy)
    else:
        state.mkdir()  # a directory where the file should be: cannot be created or written
    before = checksum(state) if state.is_file() else None
    tailer, clock = make_tailer(w.path, NOW, state=state)
    assert tailer.health().ok

    with caplog.at_level(logging.INFO, logger="exporter.traces"):
        for _ in range(3):
            report = tailer.run_once()
            assert report.interrupted
            clock.advance(1)
    assert receiver.requests == 0, "nothing may be sent that cannot be recorded"
    health = tailer.health()
    assert not health.ok and damage in health.reason and str(tmp_path) not in health.reason
    errors = traces_errors(caplog)
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert errors[0].exc_info is None, "a clear line, no traceback"
    assert damage in errors[0].getMessage() and str(state) in errors[0].getMessage()
    if before is not None:
        assert checksum(state) == before, "the exporter wrote to a file it could not use"

    s = metrics(tailer)
    assert sample(s, "state_exporter_span_export_success") == 0
    assert sample(s, "state_exporter_span_state_ok") == 0
    assert sample(s, "state_exporter_span_state_errors_total", reason=damage) == 3
    assert sample(s, "state_exporter_span_state_errors_total", reason="disk_full") == 0
    # The watermark alert (time() - watermark > 600) can fire: it stays at the start of this process.
    assert sample(s, "state_exporter_span_watermark_timestamp_seconds") == NOW.timestamp()
    spans, runs = tailer.backlog()  # the backlog is still counted (from the DB) instead of raising
    assert (spans, runs) == (len(wanted), 5)

    # The operator moves the bad file away: export resumes, readiness and metrics recover.
    if state.is_dir():
        state.rmdir()
    else:
        state.rename(tmp_path / "state.sqlite.bad")
    with caplog.at_level(logging.INFO, logger="exporter.traces"):
        assert tailer.run_once().exported == len(wanted)
    assert tailer.health().ok
    assert set(receiver.keys) == wanted
    s = metrics(tailer)
    assert sample(s, "state_exporter_span_export_success") == 1
    assert sample(s, "state_exporter_span_state_ok") == 1
    assert any("works again" in r.getMessage() for r in caplog.records)


def test_every_known_failure_reason_is_exported_at_zero(tmp_path: Path, make_tailer) -> None:
    w = FlujoWriter(tmp_path / "flujo.db")
    grpc_tailer, _ = make_tailer(w.path, NOW)
    http_tailer, _ = make_tailer(w.path, NOW, protocol="http/protobuf")
    s = metrics(grpc_tailer)
    for reason in ("unavailable", "deadline_exceeded", "invalid_argument", "resource_exhausted", "unauthenticated"):
        assert sample(s, "state_exporter_span_export_failures_total", reason=reason) == 0
    for reason in ("corrupt", "foreign", "unwritable", "disk_full", "locked", "io", "deleted"):
        assert sample(s, "state_exporter_span_state_errors_total", reason=reason) == 0
    s = metrics(http_tailer)
    for reason in ("http_400", "http_429", "http_503", "http_5xx", "connection", "timeout"):
        assert sample(s, "state_exporter_span_export_failures_total", reason=reason) == 0


# --- a full disk ----------------------------------------------------------------------------------


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str = "2m") -> Iterator[Path]:
    """A real, small file system (tmpfs, needs root as in CI) that the test can fill up."""
    where.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    if result.returncode != 0:
        message = f"cannot mount a tmpfs here (needs root): {result.stderr.decode().strip()}"
        if in_ci():  # CI runs as root: this test must run there
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(directory: Path) -> Path:
    """Write a file until the file system is full."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as out:
        try:
            while True:
                out.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def test_full_disk_stops_sending_until_the_batch_is_recorded(
    tmp_path: Path, make_tailer, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    w = FlujoWriter(tmp_path / "flujo.db")
    first = add_runs(w, "early", 10)
    with small_tmpfs(tmp_path / "small") as disk:
        state = disk / "state.sqlite"
        tailer, clock = make_tailer(w.path, NOW, state=state, settle_period="30s", batch_size=10)
        assert tailer.run_once().exported == 0  # seen finished: settling
        clock.advance(31)
        assert tailer.run_once().exported == len(first)
        later = add_runs(w, "later", 20)
        assert tailer.run_once().exported == 0  # discovered and seen finished (recorded), settling
        clock.advance(31)
        # Empty the WAL so that the next commit has to grow a file: then fill the disk.
        with contextlib.closing(sqlite3.connect(state)) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        filler = fill(disk)
        requests_before = receiver.requests
        with caplog.at_level(logging.INFO, logger="exporter.traces"):
            for _ in range(5):
                assert tailer.run_once().interrupted
                clock.advance(1)
        # One batch went out (the collector accepted it); its record failed, so nothing more was sent.
        assert receiver.requests - requests_before == 1
        s = metrics(tailer)
        assert sample(s, "state_exporter_span_export_success") == 0
        assert sample(s, "state_exporter_span_state_errors_total", reason="disk_full") == 5
        assert not tailer.health().ok and "disk full" in tailer.health().reason
        assert len(traces_errors(caplog)) == 1

        filler.unlink()  # space again: the accepted batch is recorded first, then export goes on
        report = tailer.run_once()
        assert not report.interrupted and tailer.health().ok
    duplicates = sum(receiver.keys.values()) - len(receiver.keys)
    assert set(receiver.keys) == first | later
    assert duplicates == 0
    s = metrics(tailer)
    assert sample(s, "state_exporter_spans_exported_total") == len(first | later)
    assert sample(s, "state_exporter_span_export_success") == 1


def test_full_disk_before_anything_is_sent_sends_nothing_and_logs_once(
    tmp_path: Path, make_tailer, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    w = FlujoWriter(tmp_path / "flujo.db")
    first = add_runs(w, "early", 3)
    with small_tmpfs(tmp_path / "small") as disk:
        state = disk / "state.sqlite"
        tailer, clock = make_tailer(w.path, NOW, state=state)
        assert tailer.run_once().exported == len(first)
        with contextlib.closing(sqlite3.connect(state)) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        filler = fill(disk)
        add_runs(w, "later", 30)  # discovering them needs a write
        requests = receiver.requests
        with caplog.at_level(logging.INFO, logger="exporter.traces"):
            for _ in range(4):
                assert tailer.run_once().interrupted
                clock.advance(1)
        assert receiver.requests == requests
        assert len(traces_errors(caplog)) == 1
        assert not any("works again" in r.getMessage() for r in caplog.records)
        filler.unlink()
        assert not tailer.run_once().interrupted and tailer.health().ok


# --- deleted while running ------------------------------------------------------------------------


def test_state_file_deleted_while_running_is_recreated_with_its_progress(
    tmp_path: Path, make_tailer, receiver: Receiver
) -> None:
    w = FlujoWriter(tmp_path / "flujo.db")
    first = add_runs(w, "early", 8)
    state = tmp_path / "state" / "traces-state.sqlite"
    tailer, clock = make_tailer(w.path, NOW, state=state)
    assert tailer.run_once().exported == len(first)
    for leftover in state.parent.iterdir():  # rm -rf of the state directory's content
        leftover.unlink()
    later = add_runs(w, "later", 4)
    clock.advance(5)
    assert tailer.run_once().exported == len(later)
    assert state.exists()
    assert sample(metrics(tailer), "state_exporter_span_state_errors_total", reason="deleted") == 1
    tailer.close()

    restarted, _ = make_tailer(w.path, NOW + timedelta(seconds=10), state=state)
    assert restarted.run_once().exported == 0, "the recreated file kept the progress: nothing is re-sent"
    assert set(receiver.keys) == first | later
    assert max(receiver.keys.values()) == 1
    assert os.stat(state).st_mode & 0o777 == 0o600
