"""seeknal runs as a :class:`~exporter.traces.source.SpanSource`: one trace per run.

seeknal stores no spans; a run's node rows rebuild them (:mod:`.runs` says which nodes a run
executed and in which order runs are discovered):

* the run's span (the root, named ``seeknal run``) from its earliest executed node's start to its
  latest executed node's end (a run that executed nothing, all ``cached``, is an instant at its
  ``last_run``), status from the derived run status (``failed``: ERROR naming the failed nodes);
* a child span per executed node, named after its ``node_id``, from ``last_run - duration_ms`` to
  ``last_run``; ``failed``: ERROR described by ``metadata_json.error`` with an ``exception`` event,
  ``success``: OK; attributes ``seeknal.node_id``, ``seeknal.kind``, ``seeknal.status``,
  ``seeknal.row_count``, ``seeknal.duration_ms``, ``seeknal.hash``, ``seeknal.fingerprint.*`` (the
  fingerprint's hashes) and ``seeknal.iceberg_snapshot_id`` when present;
* a run is finished when its derived status is not ``running``; a ``running`` node (a crashed run's)
  has no end: left out of a PARTIAL export, and otherwise it ends at its latest write, flagged
  ``seeknal.exporter.end_time_inferred``; the run's own span waits for FINAL or ABANDON;
* ids (:func:`~exporter.traces.ids.derived_trace_id`): trace ``sha256("seeknal-trace:" + run_id)``,
  run span ``sha256("seeknal-span:" + run_id)``, node span ``sha256("seeknal-span:" + run_id + NUL +
  node_id)``: a replay or a re-read ``.bak`` file sends the very same ids.

The cursor is ``run_state.rowid`` as text (database backend) or ``run_id:<run id>`` (file backend);
a run's position is its rowid when discovered.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from exporter.engines.seeknal.layout import ENGINE_NAME, Schema, seeknal_schema
from exporter.engines.seeknal.snapshot import node_kind
from exporter.engines.seeknal.statuses import FAILED, RUNNING, SUCCESS
from exporter.engines.seeknal.traces import runs
from exporter.engines.seeknal.traces.runs import Executed, NodeDetails, Order, RunInfo
from exporter.traces import wire
from exporter.traces.encoded import Encoded, LocalReject, Mode
from exporter.traces.ids import IdScheme
from exporter.traces.source import Found, Limits, Piece, UnitInfo, Work

if TYPE_CHECKING:
    from exporter.reader import ReadSession, StateReader

TRACE_DOMAIN = b"seeknal-trace:"
SPAN_DOMAIN = b"seeknal-span:"
ROOT_KEY = "(run)"  # the run span's key among its node ids (a node id is "kind.name")
ROOT_NAME = "seeknal run"
END_INFERRED = "seeknal.exporter.end_time_inferred"
PAGE = 500  # runs read at a time by at_end and count_after


def trace_id(scheme: IdScheme, run_id: str) -> bytes:
    return scheme.derived_trace_id(TRACE_DOMAIN, run_id)


def span_id(scheme: IdScheme, run_id: str, node_id: str | None = None) -> bytes:
    parts = (run_id,) if node_id is None else (run_id, node_id)
    return scheme.derived_span_id(SPAN_DOMAIN, *parts)


class SeeknalSpans:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits

    def source_id(self, db_path: str) -> str:
        return f"{ENGINE_NAME}:{db_path}"

    def supported(self, schema: object) -> bool:
        return isinstance(schema, Schema)

    def discover(self, session: ReadSession, cursor: str | None, limit: int) -> list[Found]:
        order = Order.of(seeknal_schema(session.schema))
        rows = runs.runs_after(session.conn, order, order.parse(cursor), limit)
        infos = runs.run_infos(session.conn, session.naive_tz, [i for _, i in rows])
        return [Found(r, i, infos[i].span_count if i in infos else 1, order.text(order.key(r, i))) for r, i in rows]

    def at_end(self, session: ReadSession) -> tuple[str, list[Found]]:
        order = Order.of(seeknal_schema(session.schema))
        end = runs.last_key(session.conn, order)
        found: list[Found] = []
        after: runs.Key | None = None
        while page := runs.runs_after(session.conn, order, after, PAGE):
            after = order.key(*page[-1])
            infos = runs.run_infos(session.conn, session.naive_tz, [i for _, i in page])
            found.extend(Found(r, i, infos[i].span_count, "") for r, i in page if i in infos and not infos[i].finished)
        return ("" if end is None else order.text(end)), found

    def check_cursor(self, session: ReadSession, cursor: str, unit_id: str) -> tuple[str, str] | None:
        """Run ids (file backend) never move; a rowid whose run is not the one recorded there (the
        newest runs deleted and the rowid reused) moves back to that run, or below where it was."""
        order = Order.of(seeknal_schema(session.schema))
        hwm = order.parse(cursor)
        if order.by_run_id or not isinstance(hwm, int) or not unit_id or runs.run_at(session.conn, hwm) == unit_id:
            return None
        moved = runs.keys_of(session.conn, order, [unit_id]).get(unit_id)
        if not isinstance(moved, int):
            moved = runs.max_rowid_below(session.conn, hwm)
        return str(moved), runs.run_at(session.conn, moved) or ""

    def behind(self, session: ReadSession, cursor: str | None, unit_ids: Sequence[str]) -> tuple[set[str], set[str]]:
        order = Order.of(seeknal_schema(session.schema))
        keys = runs.keys_of(session.conn, order, unit_ids)
        hwm = order.parse(cursor)
        if hwm is None:
            return set(keys), set()
        return set(keys), {i for i, k in keys.items() if order.before_or_at(k, hwm)}

    def span_counts(self, session: ReadSession, unit_ids: Sequence[str]) -> dict[str, int]:
        return {i: info.span_count for i, info in runs.run_infos(session.conn, session.naive_tz, unit_ids).items()}

    def count_after(self, session: ReadSession, cursor: str | None) -> tuple[int, int]:
        order = Order.of(seeknal_schema(session.schema))
        after = order.parse(cursor)
        total_runs = total_spans = 0
        while page := runs.runs_after(session.conn, order, after, PAGE):
            after = order.key(*page[-1])
            infos = runs.run_infos(session.conn, session.naive_tz, [i for _, i in page])
            total_runs += len(infos)
            total_spans += sum(info.span_count for info in infos.values())
        return total_runs, total_spans

    def infos(self, session: ReadSession, unit_ids: Sequence[str]) -> dict[str, UnitInfo]:
        seeknal_schema(session.schema)
        return dict(runs.run_infos(session.conn, session.naive_tz, unit_ids))

    def encode(self, reader: StateReader, work: Sequence[Work], chunk: int) -> Iterator[Piece]:
        """Run by run: the details of its executed nodes in one short read, then its spans in pieces of
        ``chunk`` (a run has as many spans as its project has nodes, plus one)."""
        for w in work:
            info = w.info
            assert isinstance(info, RunInfo)
            todo = [n for n in info.executed if n.node_id not in w.skip]
            details: dict[str, NodeDetails] = {}
            if todo:
                ids = [n.node_id for n in todo]
                with reader.session() as s:
                    details = runs.node_details(s.conn, seeknal_schema(s.schema), info.run_id, ids)
            encoded: list[Encoded] = []
            rejected: list[LocalReject] = []
            if ROOT_KEY not in w.skip:
                root = self._root(info, w.mode)
                if isinstance(root, Encoded):
                    encoded.append(root)
                elif root is not None:
                    rejected.append(root)
            for node in todo:
                try:
                    span = self._node(info, node, details.get(node.node_id), w.mode)
                except Exception as exc:  # a row this code cannot handle must not block the others
                    rejected.append(LocalReject(info.run_id, node.node_id, "encode_error", repr(exc)))
                    continue
                if span is not None:
                    encoded.append(span)
            step = max(chunk, 1)
            if not encoded:
                yield Piece(info, [], rejected, True)
                continue
            for start in range(0, len(encoded), step):
                last = start + step >= len(encoded)
                yield Piece(info, encoded[start : start + step], rejected if last else [], last)

    # --- encoding ---------------------------------------------------------------------------------

    def _text(self, value: str) -> str:
        limit = self.limits.value_length_limit
        return value[:limit] if limit and len(value) > limit else value

    def _root(self, info: RunInfo, mode: Mode) -> Encoded | LocalReject | None:
        if mode is Mode.PARTIAL:
            return None  # the run's end is not known yet
        start, end = info.start_ns, info.end_ns
        if start is None or end is None:  # nothing executed and the run's own last_run unreadable
            return LocalReject(info.run_id, ROOT_KEY, "invalid_start_time", "no executed node and no run last_run")
        attributes: dict[str, wire.AttrValue] = {
            "seeknal.run_id": self._text(info.run_id),
            "seeknal.status": info.status,
            "seeknal.nodes": info.nodes,
            "seeknal.nodes_executed": len(info.executed),
        }
        if not info.finished:
            attributes[END_INFERRED] = True
        status = b""  # UNSET: a run that never finished
        if info.status == SUCCESS:
            status = wire.status(wire.STATUS_OK, None)
        elif info.status == FAILED:
            status = wire.status(wire.STATUS_ERROR, self._text("failed nodes: " + ", ".join(info.failed)))
        return self._span(info.run_id, ROOT_KEY, ROOT_NAME, b"", start, max(end, start), attributes, [], status)

    def _node(self, info: RunInfo, node: Executed, details: NodeDetails | None, mode: Mode) -> Encoded | None:
        attributes: dict[str, wire.AttrValue] = {
            "seeknal.run_id": self._text(info.run_id),
            "seeknal.node_id": self._text(node.node_id),
            "seeknal.kind": self._text(node_kind(node.node_id)),
            "seeknal.status": self._text(node.status),
            "seeknal.duration_ms": (node.end_ns - node.start_ns) // 1_000_000,
        }
        events: list[bytes] = []
        status = b""  # UNSET
        if node.status == RUNNING:
            if mode is Mode.PARTIAL:
                return None
            attributes[END_INFERRED] = True
        elif node.status == SUCCESS:
            status = wire.status(wire.STATUS_OK, None)
        if details is not None:
            attributes.update(self._details(details))
        if node.status == FAILED:
            error = _error_of(details.metadata) if details is not None else None
            description = None if error is None else self._text(error)
            status = wire.status(wire.STATUS_ERROR, description)
            if description is not None:
                events.append(wire.event(node.end_ns, "exception", {"exception.message": description}))
        parent = b"\x22\x08" + span_id(self.limits.ids, info.run_id)
        return self._span(
            info.run_id, node.node_id, node.node_id, parent, node.start_ns, node.end_ns, attributes, events, status
        )

    def _details(self, details: NodeDetails) -> dict[str, wire.AttrValue]:
        found: dict[str, wire.AttrValue] = {}
        if isinstance(details.row_count, int) and not isinstance(details.row_count, bool):
            found["seeknal.row_count"] = details.row_count
        if isinstance(details.hash, str) and details.hash:
            found["seeknal.hash"] = self._text(details.hash)
        fingerprint = _object(details.fingerprint)
        for key in ("content_hash", "schema_hash", "upstream_hash", "config_hash"):
            value = fingerprint.get(key)
            if isinstance(value, str) and value:
                found[f"seeknal.fingerprint.{key}"] = self._text(value)
        snapshot = details.iceberg_snapshot_id
        if isinstance(snapshot, str | int) and not isinstance(snapshot, bool) and str(snapshot):
            found["seeknal.iceberg_snapshot_id"] = self._text(str(snapshot))
        return found

    def _span(
        self,
        run_id: str,
        key: str,
        name: str,
        parent: bytes,
        start_ns: int,
        end_ns: int,
        attributes: dict[str, wire.AttrValue],
        events: list[bytes],
        status: bytes,
    ) -> Encoded:
        dropped = 0
        limit = self.limits.count_limit
        if limit and len(attributes) > limit:
            dropped = len(attributes) - limit
            attributes = dict(list(attributes.items())[:limit])
        body = b"".join(
            (
                b"\x0a\x10" + trace_id(self.limits.ids, run_id),
                b"\x12\x08" + span_id(self.limits.ids, run_id, None if key == ROOT_KEY else key),
                parent,
                wire.field_bytes(b"\x2a", wire.utf8(self._text(name))),
                b"\x30\x01",  # kind INTERNAL
                b"\x39" + max(start_ns, 0).to_bytes(8, "little"),
                b"\x41" + max(end_ns, start_ns, 0).to_bytes(8, "little"),
                wire.attribute_fields(b"\x4a", attributes),
                b"\x50" + wire.varint(dropped) if dropped else b"",
                *events,
                status,
            )
        )
        field = wire.field_bytes(b"\x12", body)
        return Encoded(run_id, key, field, len(field))


def _object(raw: object) -> dict[str, object]:
    try:
        parsed = json.loads(raw) if isinstance(raw, str | bytes) else None
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _error_of(metadata: object) -> str | None:
    """``metadata_json.error``: seeknal's text for a failed node."""
    error = _object(metadata).get("error")
    return error if isinstance(error, str) and error else None
