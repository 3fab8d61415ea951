"""Ids, attribute flattening and limits, status mapping and the hand-written wire encoding (checked
against the official generated protobuf classes)."""

from __future__ import annotations

import hashlib
import json
import math
import random
import string
from decimal import Decimal
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from traces.receiver import any_value

from exporter.engines.flujo.spantime import EPOCH_CLOCK
from exporter.engines.flujo.traces.attributes import MAX_DEPTH, Limits
from exporter.engines.flujo.traces.convert import Mode, SpanEncoder
from exporter.engines.flujo.traces.source import RunInfo
from exporter.traces import ids, wire


def info(run_id: str = "run_1", status: str = "completed", end: float | None = 1_795_000_010.0) -> RunInfo:
    return RunInfo(
        rowid=1,
        run_id=run_id,
        pipeline_name="etl_daily",
        pipeline_version="1.4.0",
        status=status,
        span_count=1,
        clock=EPOCH_CLOCK,
        end_raw=end,
    )


def encode(attributes: object, *, status: str = "completed", limits: Limits | None = None, parent: str | None = "p",
           name: object = "step", start: object = 1_795_000_000.5, end: object = 1_795_000_001.25) -> Span:  # fmt: skip
    raw = attributes if isinstance(attributes, str) or attributes is None else json.dumps(attributes)
    row = ("run_1", "s1", parent, name, start, end, status, raw)
    encoded, rejected = SpanEncoder(limits or Limits()).encode_run(info(), [row], Mode.FINAL)
    assert not rejected and len(encoded) == 1
    assert encoded[0].field == wire.field_bytes(b"\x12", encoded[0].body) and encoded[0].size == len(encoded[0].field)
    return Span.FromString(encoded[0].body)


def attrs_of(span: Span) -> dict[str, Any]:
    keys = [kv.key for kv in span.attributes]
    assert len(keys) == len(set(keys)), f"duplicate attribute keys {keys}"
    return {kv.key: any_value(kv.value) for kv in span.attributes}


def test_ids_follow_the_documented_derivation() -> None:
    run_id, span_key = "run_4737819096da1dac72ff5d2a386ecbe0", "a3a661d0-a762-4e97-85ee-e6d3cbc2b71d"
    assert ids.trace_id(run_id) == hashlib.sha256(b"flujo-trace:" + run_id.encode()).digest()[:16]
    assert ids.span_id(run_id, span_key) == hashlib.sha256(f"flujo-span:{run_id}\0{span_key}".encode()).digest()[:8]
    assert ids.SpanIds(run_id)(span_key) == ids.span_id(run_id, span_key)
    assert ids.span_id("ab", "c") != ids.span_id("a", "bc")
    assert ids.span_id("run_a", "s") != ids.span_id("run_b", "s"), "0.6 span ids are only unique per run"


def test_span_fields() -> None:
    span = encode({"feedback": "boom"}, status="failed")
    assert span.trace_id == ids.trace_id("run_1") and span.span_id == ids.span_id("run_1", "s1")
    assert span.parent_span_id == ids.span_id("run_1", "p")
    assert span.name == "step" and span.kind == Span.SPAN_KIND_INTERNAL
    assert span.start_time_unix_nano == 1_795_000_000_500_000_000
    assert span.end_time_unix_nano == 1_795_000_001_250_000_000  # exact, not float(seconds * 1e9)
    assert span.status == Status(code=Status.STATUS_CODE_ERROR, message="boom")


@pytest.mark.parametrize(
    ("status", "attributes", "expected"),
    [
        ("completed", {}, (Status.STATUS_CODE_OK, "")),
        ("failed", {}, (Status.STATUS_CODE_ERROR, "")),
        ("error", {"error_summary": "conversion failed"}, (Status.STATUS_CODE_ERROR, "conversion failed")),
        ("running", {}, (Status.STATUS_CODE_UNSET, "")),
        ("paused", {}, (Status.STATUS_CODE_UNSET, "")),
        ("unknown", {"feedback": "x"}, (Status.STATUS_CODE_UNSET, "")),
    ],
)
def test_status_mapping(status: str, attributes: dict[str, Any], expected: tuple[int, str]) -> None:
    span = encode(attributes, status=status)
    assert (span.status.code, span.status.message) == expected
    assert attrs_of(span)["flujo.span.status"] == status


def test_flattening_rules() -> None:
    stored = {
        "text": "héllo",
        "flag": False,
        "count": -3,
        "huge": 2**70,
        "ratio": 0.25,
        "nothing": None,
        "usage": {"tokens": {"in": 3, "out": 4}, "model": "gpt"},
        "empty": {},
        "tags": ["a", "b"],
        "ints": [1, 2],
        "mixed_numbers": [1, 2.5],
        "mixed": [1, "a"],
        "with_null": ["a", None],
        "objects": [{"a": 1}],
        "bools": [True, False],
        "deep": {"l1": {"l2": {"l3": {"l4": {"l5": {"l6": {"l7": {"l8": {"l9": 1}}}}}}}}},
    }
    got = attrs_of(encode(stored))
    assert got["text"] == "héllo" and got["flag"] is False and got["count"] == -3
    assert got["huge"] == str(2**70) and got["ratio"] == 0.25
    assert "nothing" not in got and "empty" not in got
    assert got["usage.tokens.in"] == 3 and got["usage.tokens.out"] == 4 and got["usage.model"] == "gpt"
    assert got["tags"] == ["a", "b"] and got["ints"] == [1, 2] and got["mixed_numbers"] == [1.0, 2.5]
    assert got["bools"] == [True, False]
    assert got["mixed"] == '[1, "a"]' and got["with_null"] == '["a", null]' and got["objects"] == '[{"a": 1}]'
    deep_key = "deep." + ".".join(f"l{i}" for i in range(1, MAX_DEPTH))
    assert json.loads(got[deep_key]) == {"l8": {"l9": 1}}


def test_non_object_attributes() -> None:
    assert attrs_of(encode("not json {"))["flujo.attributes.raw"] == "not json {"
    assert attrs_of(encode("[1, 2]"))["flujo.attributes"] == "[1, 2]"
    assert set(attrs_of(encode(None))) == {"flujo.span.status"}


def test_count_and_length_limits() -> None:
    stored = {f"k{i}": "x" * 50 for i in range(10)} | {"arr": ["y" * 50]}
    span = encode(stored, limits=Limits(count_limit=3, value_length_limit=8))
    got = attrs_of(span)
    assert [k for k in got if k.startswith("k")] == ["k0", "k1", "k2"]
    assert got["k0"] == "x" * 8
    assert span.dropped_attributes_count == 8
    assert got["flujo.span.status"] == "completed", "the exporter's own attributes come on top"
    unlimited = attrs_of(encode(stored, limits=Limits(count_limit=0, value_length_limit=0)))
    assert unlimited["arr"] == ["y" * 50] and len(unlimited) == 12
    assert attrs_of(encode(stored | {"arr": ["y" * 50]}, limits=Limits(0, 8)))["arr"] == ["y" * 8]
    failed = encode({"feedback": "z" * 100}, status="failed", limits=Limits(value_length_limit=10))
    assert failed.status.message == "z" * 10


def test_root_span_carries_the_run_and_wins_over_stored_keys() -> None:
    span = encode({"flujo.run_id": "spoofed", "flujo.span.status": "spoofed", "initial_input": "x"}, parent=None)
    got = attrs_of(span)
    assert span.parent_span_id == b""
    assert got["flujo.run_id"] == "run_1" and got["flujo.span.status"] == "completed"
    assert got["flujo.pipeline.name"] == "etl_daily" and got["flujo.pipeline.version"] == "1.4.0"
    assert got["flujo.run.status"] == "completed"
    assert got["flujo.exporter.clock"] == "epoch" and got["flujo.exporter.clock_error_bound_s"] == 0.0
    assert got["initial_input"] == "x"


def test_open_span_is_closed_at_the_run_end_and_flagged() -> None:
    span = encode({}, end=None)
    got = attrs_of(span)
    assert got["flujo.exporter.end_time_inferred"] is True and got["flujo.exporter.end_time_source"] == "run_end"
    assert span.end_time_unix_nano == 1_795_000_010_000_000_000


def test_odd_values_do_not_break_encoding() -> None:
    assert encode({}, name=None).name == "unknown"
    assert encode({}, name=42).name == "42"
    assert encode({"s": "\ud800"}).attributes[0].value.string_value == "\ufffd"
    span = encode({}, end=1_795_000_000.0)  # ends before it starts
    assert span.end_time_unix_nano == span.start_time_unix_nano
    assert encode({}, start="1795000000.5").start_time_unix_nano == 1_795_000_000_500_000_000


def test_rejected_rows() -> None:
    encoder = SpanEncoder(Limits())
    rows = [
        ("run_1", "bad", None, "x", "garbage", None, "completed", "{}"),
        ("run_1", "nan", None, "x", math.nan, None, "completed", "{}"),
        ("run_1", "ok", None, "x", 1_795_000_000.0, 1_795_000_001.0, "completed", "{}"),
    ]
    encoded, rejected = encoder.encode_run(info(), rows, Mode.FINAL)
    assert [e.span_key for e in encoded] == ["ok"]
    assert [(r.span_key, r.reason) for r in rejected] == [("bad", "invalid_start_time"), ("nan", "invalid_start_time")]


def test_cache_keeps_true_one_and_one_point_zero_apart() -> None:
    cache = wire.KeyValueCache()
    values = [True, 1, 1.0, "1", False, 0, 0.0]
    for _ in range(2):
        decoded = [KeyValue.FromString(_strip(cache.span_attribute("k", v))) for v in values]
        assert [any_value(kv.value) for kv in decoded] == values
        assert [type(any_value(kv.value)) for kv in decoded] == [type(v) for v in values]


def test_high_cardinality_values_stay_correct() -> None:
    cache = wire.KeyValueCache(max_items=100)
    for i in range(2000):
        for value in (i, f"input {i}", i / 3):
            assert any_value(KeyValue.FromString(_strip(cache.span_attribute("k", value))).value) == value


def _strip(field: bytes) -> bytes:
    """A Span.attributes field -> the KeyValue message body."""
    assert field[0] == 0x4A
    length, offset = 0, 1
    shift = 0
    while True:
        byte = field[offset]
        length |= (byte & 0x7F) << shift
        offset += 1
        shift += 7
        if byte < 0x80:
            break
    assert len(field) - offset == length
    return field[offset:]


def test_random_spans_match_the_generated_classes() -> None:
    """Differential test: our bytes parse to exactly the message the official classes build."""
    rng = random.Random(11)
    encoder = SpanEncoder(Limits(count_limit=0, value_length_limit=0))
    for i in range(300):
        stored = {}
        for j in range(rng.randint(0, 12)):
            kind = rng.choice(["s", "b", "i", "f", "arr"])
            key = f"k{j}_" + "".join(rng.choice(string.ascii_letters + "é.") for _ in range(rng.randint(1, 30)))
            if kind == "s":
                stored[key] = "".join(rng.choice(string.printable + "üñ€😀") for _ in range(rng.randint(0, 300)))
            elif kind == "b":
                stored[key] = rng.random() < 0.5
            elif kind == "i":
                stored[key] = rng.choice(
                    [0, 1, -1, 127, 128, 2**31, -(2**63), 2**63 - 1, rng.randint(-(10**12), 10**12)]
                )
            elif kind == "f":
                stored[key] = rng.choice([0.0, -0.0, 1.5, 1e300, -2.5e-300, rng.uniform(-1e6, 1e6)])
            else:
                stored[key] = [rng.randint(-5, 5) for _ in range(rng.randint(1, 4))]
        start = 1_795_000_000 + rng.random() * 1000
        name = "".join(rng.choice(string.ascii_letters + "ß ") for _ in range(rng.randint(1, 200)))
        status = rng.choice(["completed", "failed", "running"])
        row = ("run_r", f"span-{i}", rng.choice([None, "parent"]), name, start, start + 1, status, json.dumps(stored))
        encoded, _ = encoder.encode_run(info("run_r"), [row], Mode.FINAL)
        ours = Span.FromString(encoded[0].body)
        expected_attrs = [KeyValue(key=k, value=_any(v)) for k, v in stored.items()]
        expected_attrs.append(KeyValue(key="flujo.span.status", value=AnyValue(string_value=status)))
        if row[2] is None:
            expected_attrs += [
                KeyValue(key="flujo.run_id", value=AnyValue(string_value="run_r")),
                KeyValue(key="flujo.pipeline.name", value=AnyValue(string_value="etl_daily")),
                KeyValue(key="flujo.pipeline.version", value=AnyValue(string_value="1.4.0")),
                KeyValue(key="flujo.run.status", value=AnyValue(string_value="completed")),
                KeyValue(key="flujo.exporter.clock", value=AnyValue(string_value="epoch")),
                KeyValue(key="flujo.exporter.clock_error_bound_s", value=AnyValue(double_value=0.0)),
            ]
        expected = Span(
            trace_id=ids.trace_id("run_r"),
            span_id=ids.span_id("run_r", f"span-{i}"),
            parent_span_id=ids.span_id("run_r", "parent") if row[2] else b"",
            name=name,
            kind=Span.SPAN_KIND_INTERNAL,
            start_time_unix_nano=round(Decimal(start) * 1_000_000_000),
            end_time_unix_nano=round(Decimal(start + 1) * 1_000_000_000),
            attributes=expected_attrs,
        )
        if status != "running":  # UNSET: no status field at all
            expected.status.code = {"completed": 1, "failed": 2}[status]
        assert ours == expected, i


def _any(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, list):
        return AnyValue(array_value=ArrayValue(values=[_any(v) for v in value]))
    return AnyValue(string_value=value)


def test_envelope_is_a_valid_request() -> None:
    envelope = wire.Envelope(wire.resource({"service.name": "flujo", "env": "prod", "n": 3}), wire.scope("s", "1.0"))
    body = encode({}).SerializeToString()
    request = ExportTraceServiceRequest.FromString(envelope.request([body, body]))
    (resource_spans,) = request.resource_spans
    resource = {kv.key: any_value(kv.value) for kv in resource_spans.resource.attributes}
    assert resource == {"service.name": "flujo", "env": "prod", "n": 3}
    (scope_spans,) = resource_spans.scope_spans
    assert (scope_spans.scope.name, scope_spans.scope.version) == ("s", "1.0")
    assert len(scope_spans.spans) == 2
    assert len(envelope.request([])) < envelope.overhead()
