"""Recognise seeknal's ``DatabaseStateBackend`` tables from the catalogue alone.

seeknal 2.x writes one ``run_state`` row per run and one ``node_state`` row per (run, node);
``backend_locks`` (optional here) holds the locks its backend takes and releases explicitly.
The JSON file backend (``target/run_state.json``) is loaded into the same tables by ``jsonfile``
(its layout is ``file``, without ``backend_locks``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from exporter.engines.base import missing_from
from exporter.reader.errors import DatabaseUnavailable, Problem

ENGINE_NAME = "seeknal"
DATABASE_LAYOUT = "database"

RUNS = "run_state"
NODES = "node_state"
LOCKS = "backend_locks"

REQUIRED = {
    RUNS: ("run_id", "last_run"),
    NODES: ("id", "run_id", "node_id", "last_run", "status", "duration_ms", "row_count"),
}
LOCK_COLUMNS = ("lock_key", "locked_at")
INTERVAL_COLUMNS = ("completed_intervals_json", "restatement_intervals_json")
# Read into node spans when present (seeknal 2.x's DatabaseStateBackend has both; older files may not).
SPAN_COLUMNS = ("fingerprint_json", "iceberg_snapshot_id")


@dataclass(frozen=True)
class Schema:
    has_locks: bool
    has_intervals: bool
    engine: str = ENGINE_NAME
    layout: str = DATABASE_LAYOUT
    span_columns: tuple[str, ...] = ()  # those of SPAN_COLUMNS that node_state has


def recognise(catalogue: Mapping[str, frozenset[str]]) -> Schema | str:
    missing = missing_from(catalogue, REQUIRED)
    if missing is not None:
        return missing
    locks = catalogue.get(LOCKS, frozenset())
    nodes = catalogue[NODES]
    return Schema(
        has_locks=all(c in locks for c in LOCK_COLUMNS),
        has_intervals=all(c in nodes for c in INTERVAL_COLUMNS),
        span_columns=tuple(c for c in SPAN_COLUMNS if c in nodes),
    )


def seeknal_schema(schema: object) -> Schema:
    if isinstance(schema, Schema):
        return schema
    engine = getattr(schema, "engine", "another engine")
    raise DatabaseUnavailable(Problem.UNKNOWN_LAYOUT, f"this is a {engine} state DB, not a seeknal one")
