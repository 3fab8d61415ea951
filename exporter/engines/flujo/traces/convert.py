"""Stored span rows of one run -> encoded OTLP spans (see the package docstring for the rules).

Span kinds are INTERNAL.  Status: ``completed`` -> OK; ``failed``/``error`` -> ERROR with the failure
feedback (``feedback``, else ``error_summary``/``error``/``error_message``) as description; anything else
(``running``, ``paused``, ``unknown``) -> UNSET.  The stored status is always kept as ``flujo.span.status``.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Mapping, Sequence
from enum import StrEnum
from typing import Any

from exporter.engines.flujo.spantime import SpanClock, is_monotonic
from exporter.engines.flujo.traces import attributes as attrs
from exporter.engines.flujo.traces.source import RunInfo, SpanRow
from exporter.traces import ids, wire
from exporter.traces.encoded import Encoded, LocalReject, Mode

# Attributes added by the exporter (never taken from the stored attributes).
RUN_ID = "flujo.run_id"
PIPELINE_NAME = "flujo.pipeline.name"
PIPELINE_VERSION = "flujo.pipeline.version"
RUN_STATUS = "flujo.run.status"
SPAN_STATUS = "flujo.span.status"
END_INFERRED = "flujo.exporter.end_time_inferred"
END_SOURCE = "flujo.exporter.end_time_source"
CLOCK = "flujo.exporter.clock"
CLOCK_ERROR = "flujo.exporter.clock_error_bound_s"

_SPAN_KEYS = frozenset((SPAN_STATUS, END_INFERRED, END_SOURCE))
_ROOT_KEYS = _SPAN_KEYS | {RUN_ID, PIPELINE_NAME, PIPELINE_VERSION, RUN_STATUS, CLOCK, CLOCK_ERROR}
_FEEDBACK_KEYS = ("feedback", "error_summary", "error", "error_message", "flujo.error.message")


class EndSource(StrEnum):
    RUN_END = "run_end"
    LAST_CHILD_END = "last_child_end"
    SPAN_START = "span_start"


def clock_kind(clock: SpanClock) -> str:
    return clock.kind


def status_of(stored: str, attributes: Mapping[str, Any], limit: int) -> tuple[int, str | None]:
    lowered = stored.lower()
    if lowered == "completed":
        return wire.STATUS_OK, None
    if lowered in ("failed", "error"):
        for key in _FEEDBACK_KEYS:
            value = attributes.get(key)
            if value is not None and value != "":
                text = value if isinstance(value, str) else attrs.json_text(value)
                return wire.STATUS_ERROR, text[:limit] if limit else text
        return wire.STATUS_ERROR, None
    return wire.STATUS_UNSET, None


class SpanEncoder:
    """Encodes the spans of one run at a time; keeps a bounded cache of repeated attributes."""

    def __init__(self, limits: attrs.Limits, id_scheme: ids.IdScheme = ids.DEFAULT_IDS) -> None:
        self.limits = limits
        self.ids = id_scheme
        self.cache = wire.KeyValueCache()
        self._names: dict[object, bytes] = {}
        self._run_cache: dict[tuple[object, ...], bytes] = {}
        self._status_fields = {
            status: self.cache.span_attribute(SPAN_STATUS, status) for status in ("completed", "failed", "running")
        }

    def _run_fields(self, info: RunInfo, clock: SpanClock) -> bytes:
        """The root span's run attributes other than the run id (few distinct combinations: cached)."""
        entry = (info.pipeline_name, info.pipeline_version, info.status, clock.error_bound_s, clock.anchored)
        found = self._run_cache.get(entry)
        if found is None:
            attribute = self.cache.span_attribute
            found = b"".join(
                (
                    attribute(PIPELINE_NAME, info.pipeline_name),
                    attribute(PIPELINE_VERSION, info.pipeline_version),
                    attribute(RUN_STATUS, info.status),
                    attribute(CLOCK, clock_kind(clock)),
                    attribute(CLOCK_ERROR, float(clock.error_bound_s)),
                )
            )
            if len(self._run_cache) >= 10_000:
                self._run_cache.clear()
            self._run_cache[entry] = found
        return found

    def _name_field(self, raw_name: object) -> bytes:
        name = raw_name if type(raw_name) is str else str(raw_name if raw_name is not None else "unknown")
        field = wire.field_bytes(b"\x2a", wire.utf8(name))
        if len(self._names) >= 10_000:
            self._names.clear()
        self._names[raw_name] = field
        return field

    def encode_run(
        self,
        info: RunInfo,
        rows: Sequence[SpanRow],
        mode: Mode,
        *,
        skip: frozenset[str] | set[str] = frozenset(),
        child_ends: Mapping[str, object] | None = None,
    ) -> tuple[list[Encoded], list[LocalReject]]:
        """Encoded spans (in row order) and rows rejected locally.

        ``skip`` holds stored span ids already exported.  In PARTIAL mode open spans are left out (not
        rejected: they are sent once the run finishes).  ``child_ends`` is needed only when ``rows`` is
        not the whole run (large runs read page by page).
        """
        clock = info.clock
        trace_id = self.ids.trace_id(info.run_id)
        span_ids = self.ids.span_ids(info.run_id)
        attribute = self.cache.span_attribute
        encode_attributes = self._attributes
        length_limit = self.limits.value_length_limit
        out: list[Encoded] = []
        rejected: list[LocalReject] = []
        ends = child_ends
        root_fields = self.cache.string_miss(RUN_ID, info.run_id) + self._run_fields(info, clock)
        seen: set[str] = set()
        names = self._names
        status_fields = self._status_fields
        pack_times = _KIND_AND_TIMES
        nanos = wire.nanos
        trace_field = b"\x0a\x10" + trace_id + b"\x12\x08"  # trace_id, then the tag of span_id
        to_epoch = clock.to_epoch
        epoch_clock = clock.offset == 0.0 and clock.anchored
        run_id = info.run_id
        partial = mode is Mode.PARTIAL
        for row in rows:
            _run, raw_key, raw_parent, raw_name, raw_start, raw_end, raw_status, raw_attrs = row
            key = raw_key if type(raw_key) is str else str(raw_key)
            if key in seen or key in skip:
                continue
            seen.add(key)
            try:
                start = raw_start if type(raw_start) is float else attrs.finite_or_none(raw_start)
                if start is None or start != start or start in _INFINITIES:
                    rejected.append(LocalReject(run_id, key, "invalid_start_time", f"start_time={raw_start!r}"))
                    continue
                if epoch_clock:
                    start_epoch = start
                else:
                    if not clock.anchored and is_monotonic(start):
                        rejected.append(LocalReject(run_id, key, "unanchored_time", "monotonic time and no anchor row"))
                        continue
                    start_epoch = to_epoch(start)  # type: ignore[assignment]
                end = raw_end if type(raw_end) is float else attrs.finite_or_none(raw_end)
                inferred: bytes = b""
                if end is None or end != end or end in _INFINITIES:
                    if partial:
                        continue
                    if mode is Mode.FINAL and info.end is not None:
                        end_epoch, source = info.end, EndSource.RUN_END
                    else:
                        if ends is None:
                            ends = _child_ends(rows)
                        child = attrs.finite_or_none(ends.get(key))
                        if child is not None:
                            end_epoch, source = to_epoch(child) or start_epoch, EndSource.LAST_CHILD_END
                        else:
                            end_epoch, source = start_epoch, EndSource.SPAN_START
                    inferred = attribute(END_INFERRED, True) + attribute(END_SOURCE, source.value)
                else:
                    end_epoch = end if epoch_clock else (to_epoch(end) or start_epoch)
                if end_epoch < start_epoch:
                    end_epoch = start_epoch
                if 0 < start_epoch < 1.8e10 and 0 < end_epoch < 1.8e10:  # exact nanoseconds, inlined
                    whole = int(start_epoch)
                    start_ns = whole * 1_000_000_000 + round((start_epoch - whole) * 1e9)
                    whole = int(end_epoch)
                    end_ns = whole * 1_000_000_000 + round((end_epoch - whole) * 1e9)
                else:
                    start_ns, end_ns = nanos(start_epoch), nanos(end_epoch)
                stored = _decode(raw_attrs)
                is_root = raw_parent is None or raw_parent == "" or raw_parent == key
                name_field = names.get(raw_name)
                if name_field is None:
                    name_field = self._name_field(raw_name)
                parts = [
                    trace_field,
                    span_ids(key),
                    b""
                    if is_root
                    else b"\x22\x08" + span_ids(raw_parent if type(raw_parent) is str else str(raw_parent)),
                    name_field,
                    pack_times(b"\x30\x01\x39", start_ns, b"\x41", end_ns),  # kind INTERNAL, start, end
                ]
                dropped = encode_attributes(stored, _ROOT_KEYS if is_root else _SPAN_KEYS, parts)
                status_text = raw_status if type(raw_status) is str else str(raw_status or "unknown")
                status_field = status_fields.get(status_text)
                if status_field is None:
                    status_field = attribute(SPAN_STATUS, status_text)
                parts.append(status_field)
                if inferred:
                    parts.append(inferred)
                if is_root:
                    parts.append(root_fields)
                if dropped:
                    parts.append(b"\x50" + wire.varint(dropped))
                if status_text == "completed":
                    parts.append(_STATUS_OK)
                else:
                    code, message = status_of(status_text, stored, length_limit)
                    if code or message:
                        parts.append(wire.status(code, message))
                body = b"".join(parts)
            except Exception as exc:  # a row this code cannot handle must not block the others
                rejected.append(LocalReject(run_id, key, "encode_error", f"{type(exc).__name__}: {exc}"))
                continue
            size = len(body)
            field = b"\x12" + (_BYTE[size] if size < 0x80 else wire.varint(size)) + body
            out.append(Encoded(run_id, key, field, len(field)))
        return out, rejected

    def _attributes(self, stored: dict[str, Any], reserved: frozenset[str], out: list[bytes]) -> int:
        """Append the encoded attribute fields to ``out``; returns how many the count limit dropped."""
        cache = self.cache
        strings = cache.strings
        string = cache.string_miss
        doubles = cache.double_prefix
        double = cache.double
        ints = cache.ints
        integer = cache.integer_miss
        boolean = cache.boolean
        pack_double = wire.DOUBLE
        count_limit = self.limits.count_limit
        length_limit = self.limits.value_length_limit
        mark = len(out)
        kept = dropped = 0
        for key, value in stored.items():
            if key in reserved:
                continue
            kind = type(value)
            if kind is str:
                if length_limit and len(value) > length_limit:
                    value = value[:length_limit]
                encoded = strings.get((key, value)) or string(key, value)
            elif kind is float:
                prefix = doubles.get(key)
                encoded = prefix + pack_double(value) if prefix is not None else double(key, value)
            elif kind is int:
                if not _INT64_MIN <= value <= _INT64_MAX:
                    break
                encoded = ints.get((key, value)) or integer(key, value)
            elif kind is bool:
                encoded = boolean(key, value)
            elif value is None:
                continue
            else:
                break  # nested objects, lists, ...: the general path
            if count_limit and kept >= count_limit:
                dropped += 1
                continue
            out.append(encoded)
            kept += 1
        else:
            return dropped
        del out[mark:]
        flat, dropped = attrs.flatten(stored, self.limits, reserved)
        out.extend(cache.span_attribute(k, v) for k, v in flat)
        return dropped


_STATUS_OK = b"\x7a\x02\x18\x01"
_KIND_AND_TIMES = struct.Struct("<3sQsQ").pack  # kind = INTERNAL, start and end times (fixed64)
_BYTE = wire.BYTE
_SCAN: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
_INFINITIES = (float("inf"), float("-inf"))
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _decode(raw: object) -> dict[str, Any]:
    """The stored attributes; the C scanner directly for the usual compact JSON object."""
    if type(raw) is str and raw[:1] == "{":
        try:
            decoded, end = _SCAN(raw, 0)
        except (StopIteration, ValueError, RecursionError):
            pass
        else:
            if end == len(raw) and type(decoded) is dict:
                return decoded
    return attrs.parse(raw)[0]


def _child_ends(rows: Sequence[SpanRow]) -> dict[str, object]:
    """Latest end (or start, for open children) of each span's direct children."""
    ends: dict[str, float] = {}
    for row in rows:
        parent = row[2]
        if parent is None:
            continue
        value = attrs.finite_or_none(row[5])
        if value is None:
            value = attrs.finite_or_none(row[4])
        if value is None:
            continue
        key = str(parent)
        if key not in ends or value > ends[key]:
            ends[key] = value
    return dict(ends)
