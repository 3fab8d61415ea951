"""Protocol-buffers wire encoding of OTLP trace messages, written straight from stored rows.

Building ``opentelemetry.proto`` message objects span by span (what the SDK exporter does through its
``ReadableSpan`` objects) costs 15-25 µs per span in Python; most stored attributes repeat
(``success: true``, ``attempts: 1``, ``step_type: "Step"``), so encoding the wire format directly with
a bounded cache of encoded key/value pairs costs a fraction of that.  Every span is encoded once into
its own ``bytes``; a request is the concatenation of a cached envelope and those spans, so splitting a
batch (to isolate a malformed span) never re-encodes anything.

Field numbers (``opentelemetry/proto/trace/v1/trace.proto``, ``common/v1/common.proto``,
``collector/trace/v1/trace_service.proto``, ``resource/v1/resource.proto``)::

    ExportTraceServiceRequest { repeated ResourceSpans resource_spans = 1; }
    ResourceSpans  { Resource resource = 1; repeated ScopeSpans scope_spans = 2; string schema_url = 3; }
    ScopeSpans     { InstrumentationScope scope = 1; repeated Span spans = 2; string schema_url = 3; }
    Span           { bytes trace_id = 1; bytes span_id = 2; string trace_state = 3; bytes parent_span_id = 4;
                     string name = 5; SpanKind kind = 6; fixed64 start_time_unix_nano = 7;
                     fixed64 end_time_unix_nano = 8; repeated KeyValue attributes = 9;
                     uint32 dropped_attributes_count = 10; repeated Event events = 11;
                     uint32 dropped_events_count = 12; ... Status status = 15; fixed32 flags = 16; }
    Span.Event     { fixed64 time_unix_nano = 1; string name = 2; repeated KeyValue attributes = 3; }
    Status         { string message = 2; StatusCode code = 3; }
    KeyValue       { string key = 1; AnyValue value = 2; }
    AnyValue       { oneof: string_value = 1; bool_value = 2; int64 int_value = 3; double double_value = 4;
                     ArrayValue array_value = 5; KeyValueList kvlist_value = 6; bytes bytes_value = 7; }
    ArrayValue     { repeated AnyValue values = 1; }
    Resource       { repeated KeyValue attributes = 1; uint32 dropped_attributes_count = 2; }
    InstrumentationScope { string name = 1; string version = 2; repeated KeyValue attributes = 3; }

The tests decode every request with the official generated classes and compare field by field.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable, Mapping, Sequence

SPAN_KIND_INTERNAL = 1
STATUS_UNSET, STATUS_OK, STATUS_ERROR = 0, 1, 2

DOUBLE = struct.Struct("<d").pack
_FIXED64 = struct.Struct("<Q").pack

AttrValue = str | bool | int | float | Sequence[str] | Sequence[bool] | Sequence[int] | Sequence[float]


def varint(value: int) -> bytes:
    """Unsigned LEB128; negative int64 values are encoded as their 64-bit two's complement."""
    if value < 0:
        value &= 0xFFFFFFFFFFFFFFFF
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def field_bytes(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: the pre-encoded tag, the length, the payload."""
    size = len(payload)
    if size < 0x80:
        return tag + bytes((size,)) + payload
    return tag + varint(size) + payload


_SURROGATE = re.compile("[\ud800-\udfff]")


def utf8(text: str) -> bytes:
    """Protobuf strings must be valid UTF-8: lone surrogates (invalid UTF-8 in the DB, kept by the
    reader's ``surrogateescape``) become U+FFFD."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text).encode("utf-8")


# --- AnyValue ---------------------------------------------------------------------------------------


def any_value(value: AttrValue) -> bytes:
    """Encoded ``AnyValue`` for an already-valid attribute value (made valid by the engine's span reader)."""
    kind = type(value)
    if kind is str:
        return field_bytes(b"\x0a", utf8(value))  # type: ignore[arg-type]
    if kind is bool:
        return b"\x10\x01" if value else b"\x10\x00"
    if kind is int:
        return b"\x18" + varint(value)  # type: ignore[arg-type]
    if kind is float:
        return b"\x21" + DOUBLE(value)
    if isinstance(value, list | tuple):
        return field_bytes(b"\x2a", b"".join(field_bytes(b"\x0a", any_value(item)) for item in value))
    raise TypeError(f"not an attribute value: {type(value).__name__}")


def key_value(key: str, encoded_any: bytes) -> bytes:
    """Encoded ``KeyValue`` *message body* (without the enclosing field tag)."""
    return field_bytes(b"\x0a", utf8(key)) + field_bytes(b"\x12", encoded_any)


def attribute_fields(tag: bytes, attributes: Mapping[str, AttrValue]) -> bytes:
    """Repeated ``KeyValue`` fields with the given field tag (``b"\\x4a"`` in a Span, ``b"\\x0a"`` in a Resource)."""
    return b"".join(field_bytes(tag, key_value(k, any_value(v))) for k, v in attributes.items())


BYTE = [bytes((i,)) for i in range(128)]
_BYTE = BYTE


class KeyValueCache:
    """Encodes ``Span.attributes`` fields fast: per key the encoded prefix, and whole fields for repeated
    short values (``"Step"``, ``true``, ``1``).  ``True``, ``1`` and ``1.0`` are equal as dict keys,
    hence one table per type.  A key that has shown more than :attr:`DISTINCT_VALUES` distinct values
    (an input text, a token count) is not cached any more.  Bounded: a table that reaches ``max_items``
    is cleared."""

    __slots__ = ("_keys", "_misses", "bools", "double_prefix", "ints", "max_items", "max_value_length", "strings")
    DISTINCT_VALUES = 256

    def __init__(self, max_items: int = 50_000, max_value_length: int = 32) -> None:
        self._keys: dict[str, bytes] = {}  # key -> encoded KeyValue.key field
        self.double_prefix: dict[str, bytes] = {}  # key -> everything before the 8 bytes of a double
        self.strings: dict[tuple[str, str], bytes] = {}
        self.ints: dict[tuple[str, int], bytes] = {}
        self.bools: dict[tuple[str, bool], bytes] = {}
        self._misses: dict[str, int] = {}
        self.max_items = max_items
        self.max_value_length = max_value_length

    def _key(self, key: str) -> bytes:
        encoded = self._keys.get(key)
        if encoded is None:
            encoded = field_bytes(b"\x0a", utf8(key))
            if len(self._keys) >= self.max_items:
                self._keys.clear()
                self.double_prefix.clear()
            self._keys[key] = encoded
        return encoded

    @staticmethod
    def _field(encoded_key: bytes, any_body: bytes) -> bytes:
        inner = len(any_body)
        outer = len(encoded_key) + inner + 2  # key field, value tag, value length, value
        if outer < 0x80:
            return b"".join((b"\x4a", _BYTE[outer], encoded_key, b"\x12", _BYTE[inner], any_body))
        return field_bytes(b"\x4a", encoded_key + field_bytes(b"\x12", any_body))

    def double(self, key: str, value: float) -> bytes:
        prefix = self.double_prefix.get(key)
        if prefix is None:
            encoded_key = self._key(key)
            prefix = b"\x4a" + varint(len(encoded_key) + 11) + encoded_key + b"\x12\x09\x21"
            self.double_prefix[key] = prefix
        return prefix + DOUBLE(value)

    def string(self, key: str, value: str) -> bytes:
        found = self.strings.get((key, value))
        return found if found is not None else self.string_miss(key, value)

    def string_miss(self, key: str, value: str) -> bytes:
        """:meth:`string` after a cache miss."""
        encoded_key = self._keys.get(key) or self._key(key)
        data = utf8(value)
        size = len(data)
        outer = len(encoded_key) + size + 4  # key field, value tag + length, string tag + length, string
        if outer < 0x80:
            encoded = b"".join(
                (b"\x4a", _BYTE[outer], encoded_key, b"\x12", _BYTE[size + 2], b"\x0a", _BYTE[size], data)
            )
        else:
            encoded = self._field(encoded_key, field_bytes(b"\x0a", data))
        if len(value) <= self.max_value_length and self._cacheable(key):
            if len(self.strings) >= self.max_items:
                self.strings.clear()
            self.strings[(key, value)] = encoded
        return encoded

    def integer(self, key: str, value: int) -> bytes:
        found = self.ints.get((key, value))
        return found if found is not None else self.integer_miss(key, value)

    def integer_miss(self, key: str, value: int) -> bytes:
        """:meth:`integer` after a cache miss."""
        encoded_key = self._keys.get(key) or self._key(key)
        number = _BYTE[value] if 0 <= value < 0x80 else varint(value)
        outer = len(encoded_key) + len(number) + 3  # key field, value tag + length, int tag, varint
        if outer < 0x80:
            encoded = b"".join((b"\x4a", _BYTE[outer], encoded_key, b"\x12", _BYTE[len(number) + 1], b"\x18", number))
        else:
            encoded = self._field(encoded_key, b"\x18" + number)
        if self._cacheable(key):
            if len(self.ints) >= self.max_items:
                self.ints.clear()
            self.ints[(key, value)] = encoded
        return encoded

    def boolean(self, key: str, value: bool) -> bytes:
        found = self.bools.get((key, value))
        if found is None:
            found = self._field(self._key(key), b"\x10\x01" if value else b"\x10\x00")
            if len(self.bools) >= self.max_items:
                self.bools.clear()
            self.bools[(key, value)] = found
        return found

    def span_attribute(self, key: str, value: AttrValue) -> bytes:
        """The encoded ``Span.attributes`` field for a valid attribute value (see attributes.py)."""
        kind = type(value)
        if kind is str:
            return self.string(key, value)  # type: ignore[arg-type]
        if kind is float:
            return self.double(key, value)  # type: ignore[arg-type]
        if kind is bool:
            return self.boolean(key, value)  # type: ignore[arg-type]
        if kind is int:
            return self.integer(key, value)  # type: ignore[arg-type]
        return self._field(self._key(key), any_value(value))  # arrays

    def _cacheable(self, key: str) -> bool:
        misses = self._misses.get(key, 0)
        if misses > self.DISTINCT_VALUES:
            return False
        if len(self._misses) >= self.max_items:
            self._misses.clear()
        self._misses[key] = misses + 1
        return True


# --- Span -------------------------------------------------------------------------------------------


def status(code: int, message: str | None) -> bytes:
    """The encoded ``Span.status`` field."""
    body = b""
    if message:
        body += field_bytes(b"\x12", utf8(message))
    if code:
        body += b"\x18" + varint(code)
    return field_bytes(b"\x7a", body)


def event(time_ns: int, name: str, attributes: Mapping[str, AttrValue]) -> bytes:
    """The encoded ``Span.events`` field of one event."""
    body = b"\x09" + _FIXED64(time_ns) + field_bytes(b"\x12", utf8(name)) + attribute_fields(b"\x1a", attributes)
    return field_bytes(b"\x5a", body)


def nanos(seconds: float) -> int:
    """Epoch seconds to fixed64 nanoseconds, without the error of ``seconds * 1e9`` (which is off by up
    to 128 ns at today's epochs); negative values become 0, absurd ones the maximum."""
    if seconds <= 0:
        return 0
    if seconds >= 1.8e10:
        return 0xFFFFFFFFFFFFFFFF
    whole = int(seconds)
    return whole * 1_000_000_000 + round((seconds - whole) * 1e9)


# --- Envelope ---------------------------------------------------------------------------------------


def resource(attributes: Mapping[str, AttrValue]) -> bytes:
    return attribute_fields(b"\x0a", attributes)


def scope(name: str, version: str) -> bytes:
    return field_bytes(b"\x0a", utf8(name)) + field_bytes(b"\x12", utf8(version))


class Envelope:
    """``ExportTraceServiceRequest`` with one resource and one scope around pre-encoded spans."""

    __slots__ = ("_resource_field", "_scope_field")

    def __init__(self, resource_body: bytes, scope_body: bytes) -> None:
        self._resource_field = field_bytes(b"\x0a", resource_body)  # ResourceSpans.resource
        self._scope_field = field_bytes(b"\x0a", scope_body)  # ScopeSpans.scope

    def request(self, spans: Iterable[bytes]) -> bytes:
        """A request around Span message bodies."""
        return self.request_fields(field_bytes(b"\x12", body) for body in spans)

    def request_fields(self, span_fields: Iterable[bytes]) -> bytes:
        """A request around spans already wrapped as ``ScopeSpans.spans`` fields (tag, length, body)."""
        scope_spans = self._scope_field + b"".join(span_fields)
        resource_spans = self._resource_field + field_bytes(b"\x12", scope_spans)
        return field_bytes(b"\x0a", resource_spans)

    def overhead(self) -> int:
        """Bytes of a request with no span (the envelope's share of the size limit)."""
        return len(self.request(())) + 16
