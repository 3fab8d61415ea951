"""The daemon as a process: bad DBs, signals, reload, concurrent scrapers."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from processes import free_port, http_get, running_daemon
from support import SMALL, ExclusiveWriter, content_checksums, parse_exposition, sample, wait_for

from exporter.reader import Problem

FAST = "metrics:\n  refresh_interval: 1s\n  counts_interval: 1s\n  aggregate_interval: 1s\n"


def metrics(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    status, body = http_get(url + "/metrics")
    assert status == 200
    return parse_exposition(body)


def other_application_db(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
    conn.execute("INSERT INTO invoices VALUES (1, 9.5)")
    conn.commit()
    conn.close()


@pytest.mark.parametrize(
    ("kind", "problem", "reason"),
    [
        ("missing", Problem.MISSING, "does not exist"),
        ("empty", Problem.EMPTY, "empty"),
        ("corrupt", Problem.NOT_SQLITE, "not a SQLite database"),
        ("other-app", Problem.UNKNOWN_LAYOUT, "no supported engine recognises this file (Flujo: no workflow_state"),
        ("other-app-engine-flujo", Problem.UNKNOWN_LAYOUT, "not a Flujo state DB: no workflow_state table"),
    ],
)
def test_bad_db_daemon_stays_up(tmp_path: Path, kind: str, problem: Problem, reason: str) -> None:
    db = tmp_path / "flujo_ops.db"
    engine = ("--engine", kind.rpartition("engine-")[2]) if "-engine-" in kind else ()
    if kind == "empty":
        db.write_bytes(b"")
    elif kind == "corrupt":
        db.write_bytes(b"This is not a valid SQLite database")
    elif kind.startswith("other-app"):
        other_application_db(db)
    before = content_checksums(db) if db.exists() else {}
    with running_daemon(tmp_path, "--db", str(db), *engine, config=FAST + "web:\n  readyz_detail: full\n") as daemon:
        status, body = http_get(daemon.url + "/readyz")
        assert status == 503 and body.startswith(f"{problem.value}: ") and reason in body and str(db) in body
        assert http_get(daemon.url + "/healthz")[0] == 200
        s = wait_for(
            lambda: (
                (m := metrics(daemon.url))
                and sample(m, "state_exporter_query_errors_total", reason=problem.value) >= 2
                and m
            ),
            15,
            "two query errors counted",
        )
        assert sample(s, "state_exporter_db_ready") == 0
        assert sample(s, "state_exporter_collector_success", collector="snapshot") == 0
    assert (content_checksums(db) if db.exists() else {}) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("flujo_ops")) == (
        [] if kind == "missing" else ["flujo_ops.db"]
    )


def test_db_locked_by_a_writer_then_released(fixture_copy, tmp_path: Path) -> None:
    db = fixture_copy(SMALL)
    config = FAST + "db:\n  busy_timeout: 100ms\n"
    with ExclusiveWriter(db) as writer, running_daemon(tmp_path, "--db", str(db), config=config) as daemon:
        status, body = http_get(daemon.url + "/readyz")
        assert status == 503 and "locked" in body
        wait_for(
            lambda: sample(metrics(daemon.url), "state_exporter_query_errors_total", reason="locked") >= 1,
            15,
            "a locked query counted",
        )
        writer.release()
        wait_for(lambda: http_get(daemon.url + "/readyz")[0] == 200, 15, "/readyz to answer 200")
        s = wait_for(
            lambda: (m := metrics(daemon.url)) and ("flujo_workflows", frozenset({("status", "paused")})) in m and m,
            15,
            "the paused workflows",
        )
        assert sample(s, "flujo_workflows", status="paused") == 6


def test_db_appears_later(tmp_path: Path, fixture_copy) -> None:
    db = tmp_path / "late.db"
    with running_daemon(tmp_path, "--db", str(db), config=FAST) as daemon:
        assert http_get(daemon.url + "/readyz")[0] == 503
        fixture_copy(SMALL).rename(db)
        wait_for(lambda: http_get(daemon.url + "/readyz")[0] == 200, 15, "/readyz to answer 200")


def test_sigterm_stops_within_5s_while_waiting_10s_for_a_locked_db(fixture_copy, tmp_path: Path) -> None:
    """Every component reads the DB, each waiting up to db.busy_timeout for a writer's lock."""
    db = fixture_copy(SMALL)
    config = (
        FAST
        + "db:\n  busy_timeout: 10s\n"
        + "jobs:\n  stuck_alerts:\n    enabled: true\n    interval: 1s\n    webhook:\n      url: http://127.0.0.1:9/\n"
    )
    with ExclusiveWriter(db), running_daemon(tmp_path, "--db", str(db), config=config) as daemon:
        time.sleep(1.5)  # real time: let the refresh and the job start waiting for the lock
        started = time.monotonic()
        os.kill(daemon.pid, signal.SIGTERM)
        daemon.proc.wait(10)
        assert time.monotonic() - started < 5
        assert daemon.proc.returncode == 0


def test_sigterm_stops_within_5s(fixture_copy, tmp_path: Path) -> None:
    with running_daemon(tmp_path, "--db", str(fixture_copy(SMALL))) as daemon:
        started = time.monotonic()
        os.kill(daemon.pid, signal.SIGTERM)
        daemon.proc.wait(5)
        assert time.monotonic() - started < 5
        assert daemon.proc.returncode == 0


def test_sigint_stops_cleanly(fixture_copy, tmp_path: Path) -> None:
    with running_daemon(tmp_path, "--db", str(fixture_copy(SMALL))) as daemon:
        os.kill(daemon.pid, signal.SIGINT)
        assert daemon.proc.wait(5) == 0


def test_sighup_reload_good_and_bad(fixture_copy, tmp_path: Path) -> None:
    db = fixture_copy(SMALL)
    config = f"db:\n  path: {db}\n  writer_timezone: UTC\n" + FAST
    with running_daemon(tmp_path, config=config) as daemon:
        config_file = next(tmp_path.glob("daemon-*.yaml"))
        wait_for(
            lambda: ("flujo_workflows", frozenset({("status", "running")})) in metrics(daemon.url),
            15,
            "the running workflows",
        )
        assert not any(name == "flujo_runs_total" for name, _ in metrics(daemon.url))
        config_file.write_text(config + "  flujo_compat: true\n")
        os.kill(daemon.pid, signal.SIGHUP)
        wait_for(
            lambda: any(name == "flujo_runs_total" for name, _ in metrics(daemon.url)),
            15,
            "flujo_runs_total after the reload",
        )
        config_file.write_text(config + "  flujo_compat: maybe\n  refresh_intervall: 1s\n")
        os.kill(daemon.pid, signal.SIGHUP)
        wait_for(lambda: "config reload rejected" in daemon.output(), 15, "the rejected reload")
        assert "refresh_intervall" in daemon.output()
        time.sleep(1.5)
        assert any(name == "flujo_runs_total" for name, _ in metrics(daemon.url))  # old config still running
        assert daemon.proc.poll() is None


def test_50_concurrent_scrapers_for_10s(fixture_copy, tmp_path: Path) -> None:
    with running_daemon(tmp_path, "--db", str(fixture_copy(SMALL)), config=FAST, wait_path="/readyz") as daemon:
        errors: list[str] = []
        counts = [0] * 50
        deadline = time.monotonic() + 10

        def scrape(i: int) -> None:
            while time.monotonic() < deadline:
                try:
                    status, body = http_get(daemon.url + "/metrics", timeout=10)
                    if status != 200 or "flujo_workflows{" not in body:
                        errors.append(f"status {status}")
                    parse_exposition(body)
                    counts[i] += 1
                except Exception as exc:
                    errors.append(repr(exc))

        threads = [threading.Thread(target=scrape, args=(i,)) for i in range(50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert all(c > 0 for c in counts)
        print(f"{sum(counts)} scrapes by 50 clients in 10 s, no errors")


def test_readyz_names_a_failing_component_by_code_and_recovers(fixture_copy, tmp_path: Path) -> None:
    """A broken span-export state file makes the daemon unready with the code ``traces_failing``
    (nothing about the file unless ``readyz_detail: full``); moving the file away makes it ready."""
    db = fixture_copy(SMALL)
    state = tmp_path / "traces-state.sqlite"
    state.write_bytes(b"this was a state file until a disk error\n" * 200)
    config = FAST + (
        f"traces:\n  enabled: true\n  endpoint: 127.0.0.1:{free_port()}\n  tls: {{insecure: true}}\n"
        f"  state_file: {state}\n  poll_interval: 1s\n"
    )
    with running_daemon(tmp_path, "--db", str(db), config=config) as daemon:
        wait_for(
            lambda: http_get(daemon.url + "/readyz") == (503, "traces_failing\n"),
            15,
            "/readyz to report traces_failing",
        )
        assert sample(metrics(daemon.url), "state_exporter_component_up", component="traces") == 0
        state.rename(tmp_path / "moved-away.sqlite")
        wait_for(lambda: http_get(daemon.url + "/readyz")[0] == 200, 15, "/readyz to answer 200")
    (tmp_path / "moved-away.sqlite").replace(state)
    with running_daemon(tmp_path, "--db", str(db), config=config + "web:\n  readyz_detail: full\n") as daemon:
        wait_for(
            lambda: http_get(daemon.url + "/readyz")[1].startswith("traces_failing: span export stopped: state"),
            15,
            "/readyz to name the unusable state file",
        )
