"""`state-exporter`: one parser for every command, the engines in --help, `--engine`, files no engine knows."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from support import SMALL, computed_at, content_checksums, parse_exposition, sample

from exporter.cli import main
from exporter.config import load_config
from exporter.daemon import make_reader
from exporter.engines import ENGINE_NAMES, engines
from exporter.traces.__main__ import main as traces_main

# Differ between two snapshots of one file: timings and the Python version.
VOLATILE = re.compile(r"^(state_exporter_collector_duration_seconds|state_exporter_build_info)\{.*$", re.M)
ENGINE_CHOICES = "'auto', 'flujo', 'pynenc', 'seeknal' or 'marianne'"  # what a bad db.engine is told it may be
BAD_ENGINE = f"command line: db.engine: must be one of {ENGINE_CHOICES}, got 'nosuch'"


def help_of(argv: list[str], capsys: pytest.CaptureFixture[str], run: Callable[[list[str]], int] = main) -> str:
    with pytest.raises(SystemExit) as done:
        run(argv)
    assert done.value.code == 0
    return capsys.readouterr().out


def other_application_db(path: Path) -> Path:
    """A real SQLite file that no engine wrote."""
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
        conn.execute("INSERT INTO invoices VALUES (1, 9.5)")
    conn.close()
    return path


@pytest.mark.parametrize("argv", [["--help"], ["snapshot", "--help"], ["run", "--help"], ["replay", "--help"]])
def test_help_lists_every_engine_with_its_summary(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    shown = help_of(argv, capsys)
    listed = re.findall(r"^  ([a-z0-9_]+) +(\S.*)$", shown.split("\nengines (")[1], re.M)
    assert listed == [(engine.name, engine.summary) for engine in engines()]
    assert [engine.name for engine in engines()] == list(ENGINE_NAMES)


def test_every_db_command_takes_engine(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("run", "snapshot", "check-config", "replay"):
        assert "--engine NAME" in help_of([command, "--help"], capsys), command


def test_replay_has_the_flags_of_python_m_exporter_traces(capsys: pytest.CaptureFixture[str]) -> None:
    def flags(text: str) -> set[str]:
        return set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", text.split("\noptions:")[1]))

    ours = flags(help_of(["replay", "--help"], capsys))
    theirs = flags(help_of(["replay", "--help"], capsys, traces_main))
    assert ours == theirs
    assert {"--db", "--engine", "--endpoint", "--since", "--restart"} <= ours


def test_no_command_prints_the_help_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "{run,check-config,snapshot,replay,demo}" in capsys.readouterr().out


def test_snapshot_of_a_file_no_engine_knows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = other_application_db(tmp_path / "invoices.db")
    before = content_checksums(db)
    assert main(["snapshot", "--db", str(db)]) == 1
    out, err = capsys.readouterr()
    [line] = err.splitlines()  # one error: the file, and per engine what it lacks
    assert line.startswith(f"state-exporter: {db}: ")
    for engine in engines():
        assert engine.title in line
    assert "no workflow_state table" in line and "(tables: invoices)" in line
    s = parse_exposition(out)
    assert sample(s, "state_exporter_query_errors_total", reason="unknown_layout") == 1
    assert sample(s, "state_exporter_db_ready") == 0
    assert content_checksums(db) == before


def test_snapshot_with_a_named_engine_of_another_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = other_application_db(tmp_path / "invoices.db")
    assert main(["snapshot", "--db", str(db), "--engine", "flujo"]) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line == f"state-exporter: {db}: not a Flujo state DB: no workflow_state table (tables: invoices)"


def test_snapshot_with_the_engine_named_is_the_detected_one(fixture_copy, capsys: pytest.CaptureFixture[str]) -> None:
    db = fixture_copy(SMALL)
    pinned = ["snapshot", "--db", str(db), "--timezone", "UTC", "--now", computed_at(SMALL).isoformat()]
    assert main(pinned) == 0
    detected = VOLATILE.sub("", capsys.readouterr().out)
    assert main([*pinned, "--engine", "flujo"]) == 0
    named = VOLATILE.sub("", capsys.readouterr().out)
    assert named == detected and 'state_exporter_engine_info{engine="flujo"' in named


@pytest.mark.parametrize(
    "argv",
    [
        ["snapshot", "--db", "{db}", "--engine", "nosuch"],
        ["run", "--db", "{db}", "--engine", "nosuch"],
        ["check-config", "{config}", "--engine", "nosuch"],
    ],
    ids=["snapshot", "run", "check-config"],
)
def test_unknown_engine_flag_is_a_config_error(
    tmp_path: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"db:\n  path: {tmp_path / 'flujo.db'}\n")
    filled = [arg.format(db=tmp_path / "flujo.db", config=config) for arg in argv]
    assert main(filled) == 2
    err = capsys.readouterr().err
    assert err.startswith("state-exporter: invalid configuration:\n") and BAD_ENGINE in err.splitlines()


def test_unknown_engine_in_the_file_or_environment(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("db:\n  engine: nosuch\n")
    assert main(["check-config", str(config)]) == 2
    assert f"{config}:2: db.engine: must be one of {ENGINE_CHOICES}, got 'nosuch'" in capsys.readouterr().err
    db = other_application_db(tmp_path / "invoices.db")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATE_EXPORTER_")}
    done = subprocess.run(
        [sys.executable, "-m", "exporter", "snapshot", "--db", str(db)],
        env={**env, "STATE_EXPORTER_DB__ENGINE": "nosuch"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and done.stdout == ""
    expected = f"environment STATE_EXPORTER_DB__ENGINE: db.engine: must be one of {ENGINE_CHOICES}, got 'nosuch'"
    assert expected in done.stderr.splitlines()


def test_the_daemon_reads_with_the_configured_engine(tmp_path: Path) -> None:
    db = tmp_path / "flujo.db"
    assert make_reader(load_config(None, env={}, overrides={"db": {"path": str(db)}})).engine == "auto"
    for name in ENGINE_NAMES:
        config = load_config(None, env={"STATE_EXPORTER_DB__ENGINE": name}, overrides={"db": {"path": str(db)}})
        assert make_reader(config).engine == name


def test_replay_of_a_file_no_engine_knows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = other_application_db(tmp_path / "invoices.db")
    # Port 9 (discard) is never dialled: the DB is refused first.
    base = ["replay", "--db", str(db), "--state", str(tmp_path / "s.sqlite"), "--endpoint", "http://127.0.0.1:9"]
    assert main([*base, "--no-progress", "--engine", "flujo"]) == 1
    err = capsys.readouterr().err
    assert f"state-exporter: {db}: not a Flujo state DB: no workflow_state table (tables: invoices)" in err
    assert main([*base, "--engine", "nosuch"]) == 2
    assert capsys.readouterr().err == f"state-exporter: invalid configuration:\n{BAD_ENGINE}\n"
    config = tmp_path / "config.yaml"
    config.write_text("db:\n  engine: nosuch\n")
    assert main([*base, "--config", str(config)]) == 2
    assert f"{config}:2: db.engine: must be one of {ENGINE_CHOICES}, got 'nosuch'" in capsys.readouterr().err
