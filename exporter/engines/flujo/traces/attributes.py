"""Stored span attributes (a JSON object written by flujo) as valid OpenTelemetry attributes.

Rules, applied in the stored key order:

* ``str``, ``bool``, ``int`` (int64) and ``float`` values are kept as they are; integers outside int64
  become their decimal string.
* A list of values of one primitive type becomes an array attribute (ints mixed with floats become
  floats).  Any other list (mixed, nested, with ``null``) becomes its JSON text.
* A nested object is flattened with dotted keys (``{"usage": {"tokens": 3}}`` -> ``usage.tokens = 3``)
  down to :data:`MAX_DEPTH` levels; deeper objects become their JSON text.
* ``null`` values and empty objects carry nothing and are skipped (OTel has no null attribute).
* Limits (configurable, OTel semantics): at most ``count_limit`` attributes per span, the rest counted
  in ``dropped_attributes_count``; strings (and each string of an array) truncated to
  ``value_length_limit`` characters.  0 disables a limit.  The exporter's own attributes
  (``flujo.run_id``…, ``flujo.exporter.*``) are added on top of the limit and win over a stored key
  with the same name.
* Attributes that are not a JSON object: text that is not JSON is kept as ``flujo.attributes.raw``,
  any other JSON value as ``flujo.attributes`` (its JSON text).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from exporter.traces.wire import AttrValue

MAX_DEPTH = 8
RAW_KEY = "flujo.attributes.raw"
NON_OBJECT_KEY = "flujo.attributes"
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True)
class Limits:
    count_limit: int = 128
    value_length_limit: int = 4096


def parse(raw: object) -> tuple[dict[str, Any], bool]:
    """The stored attributes as a dict, and whether they were a JSON object (``{}`` for NULL)."""
    if raw is None or raw == "":
        return {}, True
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    if not isinstance(raw, str):
        return {NON_OBJECT_KEY: json_text(raw)}, False
    try:
        decoded = json.loads(raw)
    except (ValueError, RecursionError):
        return {RAW_KEY: raw}, False
    if isinstance(decoded, dict):
        return decoded, True
    if decoded is None:
        return {}, True
    return {NON_OBJECT_KEY: json_text(decoded)}, False


def flatten(
    stored: Mapping[str, Any], limits: Limits, reserved: frozenset[str] | set[str] = frozenset()
) -> tuple[list[tuple[str, AttrValue]], int]:
    """Valid (key, value) pairs within the limits, and how many were dropped by the count limit."""
    kept: list[tuple[str, AttrValue]] = []
    seen: set[str] = set()
    dropped = 0
    count_limit = limits.count_limit
    for key, value in _leaves(stored, "", 0):
        if key in reserved or key in seen:
            continue
        if count_limit and len(kept) >= count_limit:
            dropped += 1
            continue
        seen.add(key)
        kept.append((key, truncate(value, limits.value_length_limit)))
    return kept, dropped


def _leaves(obj: Mapping[str, Any], prefix: str, depth: int) -> Iterator[tuple[str, AttrValue]]:
    for raw_key, value in obj.items():
        key = prefix + str(raw_key)
        kind = type(value)
        if kind is str or kind is bool or kind is float:
            yield key, value
        elif kind is int:
            yield key, value if _INT64_MIN <= value <= _INT64_MAX else str(value)
        elif value is None:
            continue
        elif isinstance(value, Mapping):
            if depth + 1 >= MAX_DEPTH:
                yield key, json_text(value)
            else:
                yield from _leaves(value, key + ".", depth + 1)
        elif isinstance(value, list | tuple):
            yield key, _array(value)
        else:  # bool/int/float/str subclasses from a custom decoder, anything else
            yield key, _scalar(value)


def _scalar(value: object) -> AttrValue:
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value) if _INT64_MIN <= value <= _INT64_MAX else str(int(value))
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    return json_text(value)


def _array(values: list[Any] | tuple[Any, ...]) -> AttrValue:
    kinds = {type(v) for v in values}
    if not kinds:
        return []
    if kinds == {str} or kinds == {bool} or kinds == {float}:
        return list(values)
    if kinds == {int} and all(_INT64_MIN <= v <= _INT64_MAX for v in values):
        return list(values)
    if kinds == {int, float}:
        return [float(v) for v in values]
    return json_text(list(values))


def truncate(value: AttrValue, limit: int) -> AttrValue:
    if not limit:
        return value
    if type(value) is str:
        return value[:limit] if len(value) > limit else value
    if isinstance(value, list) and value and type(value[0]) is str:
        return [item[:limit] for item in value]
    return value


def json_text(value: object) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, default=str, allow_nan=True)
    except (ValueError, RecursionError):
        return str(value)


def finite_or_none(value: object) -> float | None:
    """A stored time as a finite float, or None (NULL, text, NaN, inf)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                return None
        else:
            return None
    number = float(value)
    return number if math.isfinite(number) else None
