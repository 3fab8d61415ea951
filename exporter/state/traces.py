"""Traces and normalized spans.

``save_trace`` stores the tree JSON in ``traces`` and re-writes the run's rows in ``spans`` (delete then
insert, like flujo); ``get_trace`` rebuilds the tree from ``spans``.  Span start/end times are stored as
given (epoch seconds in flujo 0.4, ``time.monotonic()`` in 0.6).  Both the 0.6 ``spans`` table
(``id`` key) and the old 0.4 one (``span_id`` primary key, parent foreign key) are handled: foreign keys
are deferred to COMMIT so parent/child order does not matter, and an unknown run_id fails there.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from exporter.state.core import BackendCore, Row, execute, executemany, fetchall, fetchone, log, row_dict
from exporter.state.serialization import dumps, loads_or_raw
from exporter.state.validation import optional_str, required_str, where_clause
from exporter.state.windows import aware_utc

MAX_TREE_DEPTH = 100  # flujo's limit when normalizing a trace tree

SPAN_COLUMNS = (
    "run_id",
    "span_id",
    "parent_span_id",
    "name",
    "start_time",
    "end_time",
    "status",
    "attributes",
    "created_at",
)
_INSERT_SPAN = f"INSERT INTO spans ({', '.join(SPAN_COLUMNS)}) VALUES ({', '.join('?' for _ in SPAN_COLUMNS)})"
_SPAN_SELECT = "SELECT span_id, parent_span_id, name, start_time, end_time, status, attributes FROM spans"


def _epoch(value: object, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return aware_utc(value).timestamp()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"span {name} must be a number (seconds), got {type(value).__name__}: {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"span {name} must be finite, got {value!r}")
    return number


def _span_values(node: Mapping[str, Any], parent_span_id: object) -> dict[str, Any]:
    span_id = node.get("span_id")
    start = _epoch(node.get("start_time"), "start_time")
    if start is None:
        raise ValueError(f"span {span_id!r} has no start_time")
    return {
        "span_id": str(span_id) if span_id is not None else str(uuid.uuid4()),
        "parent_span_id": None if parent_span_id is None else str(parent_span_id),
        "name": str(node.get("name") or "unknown"),
        "start_time": start,
        "end_time": _epoch(node.get("end_time"), "end_time"),
        "status": str(node.get("status") or "running"),
        "attributes": dumps(node.get("attributes") or {}),
    }


def flatten_tree(tree: Mapping[str, Any], max_depth: int = MAX_TREE_DEPTH) -> list[dict[str, Any]]:
    """Pre-order list of the tree's spans (parents before children); deeper levels are dropped."""
    spans: list[dict[str, Any]] = []
    stack: list[tuple[object, object, int]] = [(tree, tree.get("parent_span_id"), 0)]
    truncated = False
    while stack:
        node, parent, depth = stack.pop()
        if not isinstance(node, Mapping):
            raise TypeError(f"trace nodes must be dicts, got {type(node).__name__}")
        if depth >= max_depth:
            truncated = True
            continue
        span = _span_values(node, parent)
        spans.append(span)
        children = node.get("children") or []
        if not isinstance(children, Sequence) or isinstance(children, str | bytes):
            raise TypeError("trace node 'children' must be a list")
        stack.extend((child, span["span_id"], depth + 1) for child in reversed(children))
    if truncated:
        log.warning("trace deeper than %d levels: deeper spans were not stored", max_depth)
    return spans


def truncate_tree(tree: Mapping[str, Any], max_depth: int = MAX_TREE_DEPTH) -> dict[str, Any]:
    """A copy of the tree without the levels :func:`flatten_tree` drops (stored in ``traces``)."""
    root: dict[str, Any] = dict(tree)
    stack: list[tuple[dict[str, Any], int]] = [(root, 0)]
    while stack:
        node, depth = stack.pop()
        children = node.get("children")
        if not children or not isinstance(children, Sequence):
            continue
        if depth + 1 >= max_depth:
            node["children"] = []
            continue
        copies = [dict(child) if isinstance(child, Mapping) else child for child in children]
        node["children"] = copies
        stack.extend((child, depth + 1) for child in copies if isinstance(child, dict))
    return root


def _span_dict(row: Row) -> dict[str, Any]:
    item = row_dict(row)
    item["attributes"] = loads_or_raw(item.get("attributes"))
    if item["attributes"] is None:
        item["attributes"] = {}
    return item


def build_tree(spans: Sequence[dict[str, Any]], run_id: str = "") -> dict[str, Any] | None:
    """Nest flat spans (ordered by start_time) under their parents; the first root is returned."""
    if not spans:
        return None
    by_id: dict[object, dict[str, Any]] = {}
    for span in spans:
        by_id.setdefault(span["span_id"], span)
    children: dict[object, list[dict[str, Any]]] = {}
    roots: list[dict[str, Any]] = []
    for span in spans:
        parent = span.get("parent_span_id")
        if parent is not None and parent in by_id and parent != span["span_id"]:
            children.setdefault(parent, []).append(span)
        else:
            roots.append(span)
    if len(roots) > 1:
        log.warning("trace of run_id=%r has %d root spans; returning the first", run_id, len(roots))
    root = roots[0] if roots else spans[0]
    out: dict[str, Any] = {**root, "children": []}
    seen = {id(root)}
    stack = [(root, out)]
    while stack:
        src, dst = stack.pop()
        for child in children.get(src["span_id"], []):
            if id(child) in seen:
                continue
            seen.add(id(child))
            node: dict[str, Any] = {**child, "children": []}
            dst["children"].append(node)
            stack.append((child, node))
    return out


def _time_range(value: object) -> tuple[float, float] | None:
    if value is None:
        return None
    if not isinstance(value, Sequence) or isinstance(value, str | bytes) or len(value) != 2:
        raise TypeError("time_range must be a (start, end) pair of epoch seconds")
    start = _epoch(value[0], "time_range start")
    end = _epoch(value[1], "time_range end")
    if start is None or end is None:
        raise TypeError("time_range bounds must be numbers")
    if start > end:
        raise ValueError(f"time_range start {start} is after end {end}")
    return start, end


class TracesMixin(BackendCore):
    """save_trace/get_trace, save_spans/get_spans, get_span_statistics."""

    async def _replace_spans(self, conn: Any, run_id: str, spans: list[dict[str, Any]]) -> None:
        await execute(conn, "PRAGMA defer_foreign_keys = ON")
        await execute(conn, "DELETE FROM spans WHERE run_id = ?", (run_id,))
        if spans:
            now_iso = self.now_iso()
            rows = [
                [run_id if c == "run_id" else now_iso if c == "created_at" else s[c] for c in SPAN_COLUMNS]
                for s in spans
            ]
            await executemany(conn, _INSERT_SPAN, rows)

    async def save_trace(self, run_id: str, tree: Mapping[str, Any]) -> None:
        """Store the trace tree (``traces``) and its normalized spans (``spans``), replacing the
        run's previous ones.  Raises :class:`StateBackendError` if the run does not exist."""
        rid = required_str("run_id", run_id)
        if not isinstance(tree, Mapping):
            raise TypeError(f"tree must be a dict, got {type(tree).__name__}")
        spans = flatten_tree(tree)
        trace_json = dumps(truncate_tree(tree))
        async with self.transaction("save_trace") as (conn, _):
            await execute(
                conn,
                "INSERT INTO traces (run_id, trace_data, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT(run_id) DO UPDATE SET trace_data = excluded.trace_data, "
                "created_at = excluded.created_at",
                (rid, trace_json, self.now_iso()),
            )
            await self._replace_spans(conn, rid, spans)

    async def save_spans(self, run_id: str, spans: Sequence[Mapping[str, Any]]) -> None:
        """Replace the run's normalized spans with ``spans`` (each a dict with ``span_id``,
        ``parent_span_id``, ``name``, ``start_time``, ``end_time``, ``status``, ``attributes``)."""
        rid = required_str("run_id", run_id)
        if not isinstance(spans, Sequence) or isinstance(spans, str | bytes):
            raise TypeError("spans must be a list of dicts")
        values = []
        for span in spans:
            if not isinstance(span, Mapping):
                raise TypeError(f"spans must be dicts, got {type(span).__name__}")
            values.append(_span_values(span, span.get("parent_span_id")))
        async with self.transaction("save_spans") as (conn, _):
            await self._replace_spans(conn, rid, values)

    async def get_trace(self, run_id: str) -> dict[str, Any] | None:
        """The run's span tree ``{span_id, parent_span_id, name, start_time, end_time, status,
        attributes, children}`` rebuilt from ``spans`` (the stored ``traces`` JSON if there are no
        spans), or None."""
        rid = required_str("run_id", run_id)
        async with self.session("get_trace") as (conn, _):
            rows = await fetchall(conn, _SPAN_SELECT + " WHERE run_id = ? ORDER BY start_time, rowid", (rid,))
            stored = None if rows else await fetchone(conn, "SELECT trace_data FROM traces WHERE run_id = ?", (rid,))
        if rows:
            return build_tree([_span_dict(r) for r in rows], rid)
        if stored is None:
            return None
        decoded = loads_or_raw(stored["trace_data"])
        return decoded if isinstance(decoded, dict) else None

    async def get_spans(self, run_id: str, status: str | None = None, name: str | None = None) -> list[dict[str, Any]]:
        """Flat spans of a run ordered by start_time, optionally filtered by status and name."""
        rid = required_str("run_id", run_id)
        status = optional_str("status", status)
        name = optional_str("name", name)
        where, params = where_clause({"run_id": rid, "status": status, "name": name})
        async with self.session("get_spans") as (conn, _):
            rows = await fetchall(conn, f"{_SPAN_SELECT}{where} ORDER BY start_time, rowid", params)
        return [_span_dict(r) for r in rows]

    async def get_span_statistics(
        self, pipeline_name: str | None = None, time_range: tuple[float, float] | None = None
    ) -> dict[str, Any]:
        """``{total_spans, by_name, by_status, avg_duration_by_name: {name: {total, count, average}}}``
        over finished spans (end_time NOT NULL) of runs in ``runs``; ``pipeline_name`` filters
        ``runs.pipeline_name``, ``time_range=(start, end)`` the span start_time (inclusive);
        durations in seconds."""
        pipeline_name = optional_str("pipeline_name", pipeline_name)
        window = _time_range(time_range)
        fixed = ["s.end_time IS NOT NULL"] + (["s.start_time >= ?", "s.start_time <= ?"] if window else [])
        condition, params = where_clause({"r.pipeline_name": pipeline_name}, fixed=fixed, params=window or ())
        where = f"FROM spans s JOIN runs r ON r.run_id = s.run_id{condition}"
        async with self.session("get_span_statistics") as (conn, _):
            by_name_rows = await fetchall(
                conn,
                f"SELECT s.name, COUNT(*), SUM(s.end_time - s.start_time) {where} GROUP BY s.name",
                params,
            )
            by_status_rows = await fetchall(conn, f"SELECT s.status, COUNT(*) {where} GROUP BY s.status", params)
        by_name: dict[str, int] = {}
        durations: dict[str, dict[str, float | int]] = {}
        for name, count, total in by_name_rows:
            by_name[name] = int(count)
            total_s = float(total or 0.0)
            durations[name] = {
                "total": total_s,
                "count": int(count),
                "average": total_s / count if count else 0.0,
            }
        return {
            "total_spans": sum(by_name.values()),
            "by_name": by_name,
            "by_status": {str(status): int(count) for status, count in by_status_rows},
            "avg_duration_by_name": durations,
        }
