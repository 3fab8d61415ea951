"""seeknal's file backend: the ``target/`` directory that ``seeknal run`` writes.

``run_state.json`` holds the latest run only; before replacing it (write to a temp file, then
rename), seeknal copies the previous one to ``run_state.json.bak.<run_id>``, where the suffix is
the run that replaced it, not the run inside.  Every file is loaded, deduplicated by the
``run_id`` inside (the main file wins, then the newest backup), into the ``run_state`` and
``node_state`` tables of the database backend, so the same queries serve both layouts.

The node ``fingerprint`` (an object) is stored as its JSON text, as the database backend's
``fingerprint_json``; ``iceberg_snapshot_id`` as it is (both for the node spans).  There is no
``backend_locks`` here (the file backend keeps no lock rows): ``seeknal_locks_held`` is 0 and the
oldest-lock family is absent.  The JSON-only node fields (``last_watermark``…) are
not read, as the database backend drops them too.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from exporter.engines.seeknal.layout import NODES, RUNS, SPAN_COLUMNS, Schema
from exporter.reader.errors import DatabaseUnavailable, Problem

FILE_LAYOUT = "file"
MAIN_FILE = "run_state.json"
BACKUP_INFIX = ".bak."

_TABLES = f"""
CREATE TABLE {RUNS} (
    run_id TEXT PRIMARY KEY, schema_version TEXT, seeknal_version TEXT, last_run TEXT, config_json TEXT
);
CREATE TABLE {NODES} (
    id INTEGER PRIMARY KEY, run_id TEXT NOT NULL, node_id TEXT NOT NULL, hash TEXT, last_run TEXT,
    status TEXT, duration_ms INTEGER, row_count INTEGER, version INTEGER, metadata_json TEXT,
    completed_intervals_json TEXT, completed_partitions_json TEXT, restatement_intervals_json TEXT,
    fingerprint_json TEXT, iceberg_snapshot_id TEXT,
    UNIQUE (run_id, node_id)
);
CREATE INDEX idx_node_state_run_id ON {NODES} (run_id);
CREATE INDEX idx_node_state_status ON {NODES} (status);
"""


def state_files(path: Path) -> list[Path]:
    """``run_state.json`` (``path`` itself, or inside the ``target/`` directory ``path``), then its
    backups, newest suffix first."""
    main = path / MAIN_FILE if path.is_dir() else path
    prefix = main.name + BACKUP_INFIX
    try:
        backups = [entry for entry in main.parent.iterdir() if entry.name.startswith(prefix) and entry.is_file()]
    except OSError:
        backups = []  # the main file's own stat says what is wrong
    return [main, *sorted(backups, key=lambda entry: entry.name, reverse=True)]


def load(conn: sqlite3.Connection, contents: Sequence[tuple[Path, bytes]]) -> Schema:
    conn.executescript(_TABLES)
    states: dict[str, Mapping[str, Any]] = {}
    main = contents[0][1] if contents else b""
    for index, (path, data) in enumerate(contents):
        if index and data != main and main.startswith(data):
            # A backup that ``shutil.copy2`` is still writing: part of the main file, whose run is read whole.
            continue
        state = _parse(path, data)
        states.setdefault(str(state["run_id"]), state)
    for run_id in sorted(states):  # run ids are the writer's %Y%m%d_%H%M%S: rowids follow time
        _insert(conn, run_id, states[run_id])
    return Schema(has_locks=False, has_intervals=True, layout=FILE_LAYOUT, span_columns=SPAN_COLUMNS)


def _parse(path: Path, data: bytes) -> Mapping[str, Any]:
    try:
        state = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DatabaseUnavailable(
            Problem.CORRUPT, f"{path}: not valid JSON ({exc}): a truncated or half-written seeknal run state"
        ) from None
    if (
        not isinstance(state, dict)
        or not isinstance(state.get("run_id"), str)
        or not isinstance(state.get("nodes"), dict)
    ):
        raise DatabaseUnavailable(Problem.UNKNOWN_LAYOUT, f"{path}: not a seeknal run state (no run_id and nodes)")
    if not all(isinstance(node, dict) for node in state["nodes"].values()):
        raise DatabaseUnavailable(Problem.UNKNOWN_LAYOUT, f"{path}: not a seeknal run state (a node is no object)")
    return state


def _insert(conn: sqlite3.Connection, run_id: str, state: Mapping[str, Any]) -> None:
    conn.execute(
        f"INSERT INTO {RUNS} (run_id, schema_version, seeknal_version, last_run, config_json) VALUES (?, ?, ?, ?, ?)",
        (
            run_id,
            _scalar(state.get("schema_version")),
            _scalar(state.get("seeknal_version")),
            _scalar(state.get("last_run")),
            _json(state.get("config")),
        ),
    )
    conn.executemany(
        f"INSERT INTO {NODES} (run_id, node_id, hash, last_run, status, duration_ms, row_count, version, "
        "metadata_json, completed_intervals_json, completed_partitions_json, restatement_intervals_json, "
        "fingerprint_json, iceberg_snapshot_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                run_id,
                node_id,
                _scalar(node.get("hash")),
                _scalar(node.get("last_run")),
                _scalar(node.get("status")),
                _scalar(node.get("duration_ms", 0)),
                _scalar(node.get("row_count", 0)),
                _scalar(node.get("version")),
                _json(node.get("metadata")),
                _json(node.get("completed_intervals")),
                _json(node.get("completed_partitions")),
                _json(node.get("restatement_intervals")),
                _json(node.get("fingerprint")),
                _scalar(node.get("iceberg_snapshot_id")),
            )
            for node_id, node in state["nodes"].items()
        ],
    )


def _scalar(value: object) -> object:
    """As the database backend would hold it; a nested value as its JSON text (a bad value downstream)."""
    if value is None or isinstance(value, str | int | float):
        return value
    return json.dumps(value)


def _json(value: object) -> str | None:
    return None if value is None else json.dumps(value)
