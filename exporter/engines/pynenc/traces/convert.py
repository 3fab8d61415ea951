"""One pynenc invocation -> one encoded OTLP span (kind INTERNAL).

* ids (:mod:`exporter.traces.ids`): trace from the top-level invocation id, span from the invocation
  id, parent from the parent's invocation id, each under a ``pynenc-`` prefix (never a Flujo id);
* name: the task (``task_id_key``, e.g. ``seed_tasks.add``);
* start: the first ``registered`` history row; an invocation without one (history trimmed, or
  routed by an older writer) starts at its first ``running`` row, else at its first row;
* end: its final row (``success``, ``failed``, ``concurrency_controlled_final``).  An invocation
  without one is left out of a PARTIAL export, and otherwise ends at the tree's end (FINAL, when not
  before its start) or at its own latest transition, flagged ``pynenc.exporter.end_time_inferred``
  with ``pynenc.exporter.end_time_source`` (``tree_end`` / ``last_transition``);
* status: ``success`` -> OK; ``failed`` -> ERROR, described ``<exception class>: <message>`` from
  the exceptions table, with an ``exception`` event (``exception.type``, ``exception.message``);
  anything else UNSET;
* events: every history row, named after its status, at its time, with ``pynenc.runner_id`` (the
  status record's runner, else the runner context that wrote it); at most :data:`MAX_EVENTS`, the
  rest counted as dropped;
* attributes: ``pynenc.invocation_id``, ``pynenc.task_id``, ``pynenc.status``, ``pynenc.attempts``
  (``running`` rows), ``pynenc.retry_count``, ``pynenc.workflow_id``; on the root ``pynenc.app``.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from exporter.engines.pynenc.statuses import FAILED, FINAL_STATUSES, REGISTERED, RUNNING, SUCCESS
from exporter.engines.pynenc.traces.source import Invocation, TreeInfo
from exporter.traces import wire
from exporter.traces.encoded import Encoded, LocalReject, Mode
from exporter.traces.source import Limits

MAX_EVENTS = 128  # OpenTelemetry's default span event limit
END_INFERRED = "pynenc.exporter.end_time_inferred"
END_SOURCE = "pynenc.exporter.end_time_source"
FINAL = frozenset(FINAL_STATUSES)
_TIMES = struct.Struct("<3sQsQ").pack  # kind INTERNAL, start and end (fixed64)


def runner_of(data: object) -> str | None:
    """The runner of one history row: its status record's, else the runner context's."""
    try:
        parsed = json.loads(data) if isinstance(data, str | bytes) else None
    except ValueError:
        return None
    if not isinstance(parsed, dict):
        return None
    record = parsed.get("status_record")
    runner = record.get("runner_id") if isinstance(record, dict) else None
    if not isinstance(runner, str) or not runner:
        runner = parsed.get("runner_context_id")
    return runner if isinstance(runner, str) and runner else None


def exception_of(data: object) -> tuple[str, str | None]:
    """(class name, message) from ``exception_data`` (``error_name`` and jsonpickle'd ``error_data``)."""
    try:
        parsed = json.loads(data) if isinstance(data, str | bytes) else None
    except ValueError:
        return "unknown", None
    if not isinstance(parsed, dict):
        return "unknown", None
    name = parsed.get("error_name")
    name = name if isinstance(name, str) and name else "unknown"
    detail: Any = parsed.get("error_data")
    if isinstance(detail, str):
        try:
            detail = json.loads(detail)
        except ValueError:
            return name, detail or None
    message = None
    if isinstance(detail, dict):
        reduced = detail.get("py/reduce")
        if isinstance(reduced, list) and len(reduced) > 1 and isinstance(reduced[1], dict):
            args = reduced[1].get("py/tuple")
            if isinstance(args, list) and args:
                message = args[0] if len(args) == 1 and isinstance(args[0], str) else json.dumps(args)
        elif isinstance(detail.get("message"), str):
            message = detail["message"]
    return name, message


class InvocationEncoder:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits

    def _text(self, value: str) -> str:
        limit = self.limits.value_length_limit
        return value[:limit] if limit and len(value) > limit else value

    def encode(
        self, tree: TreeInfo, app_label: str, invocation: Invocation, mode: Mode
    ) -> Encoded | LocalReject | None:
        """The span, a row that cannot be one, or ``None`` (open in a PARTIAL export)."""
        key = invocation.invocation_id
        times = [at for at, _, _ in invocation.history if at is not None]
        if not times:
            return LocalReject(tree.run_id, key, "invalid_start_time", "no history row with a time")
        start = _first(invocation, REGISTERED)
        if start is None:
            start = _first(invocation, RUNNING)
        if start is None:
            start = min(times)
        end = min((at for at, status, _ in invocation.history if status in FINAL and at is not None), default=None)
        inferred: dict[str, wire.AttrValue] = {}
        if end is None:
            if mode is Mode.PARTIAL:
                return None
            if mode is Mode.FINAL and tree.end is not None and tree.end >= start:
                end, source = tree.end, "tree_end"
            else:
                end, source = max(times), "last_transition"
            inferred = {END_INFERRED: True, END_SOURCE: source}
        end = max(end, start)
        attributes: dict[str, wire.AttrValue] = {
            "pynenc.invocation_id": key,
            "pynenc.task_id": self._text(invocation.task),
            "pynenc.status": invocation.status,
            "pynenc.attempts": sum(1 for _, status, _ in invocation.history if status == RUNNING),
        }
        if invocation.retry_count is not None:
            attributes["pynenc.retry_count"] = invocation.retry_count
        if invocation.workflow_id is not None:
            attributes["pynenc.workflow_id"] = self._text(invocation.workflow_id)
        if invocation.parent_id is None:
            attributes["pynenc.app"] = self._text(app_label)
        attributes.update(inferred)
        dropped = 0
        if self.limits.count_limit and len(attributes) > self.limits.count_limit:
            dropped = len(attributes) - self.limits.count_limit
            attributes = dict(list(attributes.items())[: self.limits.count_limit])
        events = []
        for at, status, data in invocation.history[:MAX_EVENTS]:
            runner = runner_of(data)
            event_attributes: dict[str, wire.AttrValue] = {"pynenc.runner_id": self._text(runner)} if runner else {}
            events.append(wire.event(wire.nanos(at if at is not None else start), status, event_attributes))
        dropped_events = max(len(invocation.history) - MAX_EVENTS, 0)
        status_field = b""
        if invocation.status == SUCCESS:
            status_field = wire.status(wire.STATUS_OK, None)
        elif invocation.status == FAILED:
            kind, message = exception_of(invocation.exception) if invocation.exception is not None else (None, None)
            description = None
            if kind is not None:
                description = self._text(f"{kind}: {message}" if message else kind)
                exception: dict[str, wire.AttrValue] = {"exception.type": kind}
                if message:
                    exception["exception.message"] = self._text(message)
                events.append(wire.event(wire.nanos(end), "exception", exception))
            status_field = wire.status(wire.STATUS_ERROR, description)
        parent = (
            b"" if invocation.parent_id is None else b"\x22\x08" + self.limits.ids.pynenc_span_id(invocation.parent_id)
        )
        body = b"".join(
            (
                b"\x0a\x10" + self.limits.ids.pynenc_trace_id(tree.run_id),
                b"\x12\x08" + self.limits.ids.pynenc_span_id(key),
                parent,
                wire.field_bytes(b"\x2a", wire.utf8(invocation.task)),
                _TIMES(b"\x30\x01\x39", wire.nanos(start), b"\x41", wire.nanos(end)),
                wire.attribute_fields(b"\x4a", attributes),
                b"\x50" + wire.varint(dropped) if dropped else b"",
                *events,
                b"\x60" + wire.varint(dropped_events) if dropped_events else b"",
                status_field,
            )
        )
        field = wire.field_bytes(b"\x12", body)
        return Encoded(tree.run_id, key, field, len(field))


def _first(invocation: Invocation, status: str) -> float | None:
    return min((at for at, s, _ in invocation.history if s == status and at is not None), default=None)
