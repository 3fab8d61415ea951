"""JSON encoding of workflow state values, with a registry for custom types.

``dumps`` turns the Python values a Flujo app puts into a workflow state (pydantic models,
dataclasses, datetimes, enums, sets, bytes, ...) into JSON text.  Types it does not know can be
taught with :func:`register_custom_serializer`; a registered serializer wins over the built-in rules
and applies to subclasses too (the nearest registered class in the MRO is used).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import threading
from collections.abc import Callable, Mapping
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from enum import Enum
from pathlib import PurePath
from typing import Any, TypeVar
from uuid import UUID

from pydantic import BaseModel

T = TypeVar("T")

JSONValue = None | bool | int | float | str | list["JSONValue"] | dict[str, "JSONValue"]

MAX_DEPTH = 300  # nesting levels; one Python frame each (loops, not comprehensions)

_registry: dict[type, Callable[[Any], Any]] = {}
_registry_lock = threading.Lock()
_PRIMITIVES = (type(None), bool, int, float, str)


def register_custom_serializer(type_: type[T], fn: Callable[[T], Any]) -> None:
    """Encode instances of ``type_`` (and its subclasses) with ``fn``.

    ``fn`` returns anything this module can encode (typically a dict of plain values).
    Registering a type again replaces its serializer.
    """
    if not isinstance(type_, type):
        raise TypeError(f"register_custom_serializer needs a class, got {type_!r}")
    if not callable(fn):
        raise TypeError(f"serializer for {type_.__name__} is not callable: {fn!r}")
    with _registry_lock:
        _registry[type_] = fn


def unregister_custom_serializer(type_: type) -> None:
    """Forget the serializer registered for exactly ``type_`` (no error if there is none)."""
    with _registry_lock:
        _registry.pop(type_, None)


def _lookup(cls: type) -> Callable[[Any], Any] | None:
    if not _registry:
        return None
    for klass in cls.__mro__:
        fn = _registry.get(klass)
        if fn is not None:
            return fn
    return None


def to_jsonable(obj: Any, _depth: int = 0) -> JSONValue:
    """A JSON-compatible copy of ``obj`` (dicts with str keys, lists, scalars)."""
    if _depth > MAX_DEPTH:
        raise ValueError(f"value nested deeper than {MAX_DEPTH} levels (circular reference?)")
    cls = type(obj)
    if cls in _PRIMITIVES:
        return obj  # type: ignore[no-any-return]
    custom = _lookup(cls)
    if custom is not None:
        return to_jsonable(custom(obj), _depth + 1)
    if isinstance(obj, Enum):
        return to_jsonable(obj.value, _depth + 1)
    if isinstance(obj, bool):
        return bool(obj)
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj)
    if isinstance(obj, str):
        return str(obj)
    if isinstance(obj, BaseModel):
        return to_jsonable(obj.model_dump(), _depth + 1)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        fields: dict[str, JSONValue] = {}
        for field in dataclasses.fields(obj):
            fields[field.name] = to_jsonable(getattr(obj, field.name), _depth + 1)
        return fields
    if isinstance(obj, datetime | date | time):
        return obj.isoformat()
    if isinstance(obj, timedelta):
        return obj.total_seconds()
    if isinstance(obj, Decimal | UUID | PurePath):
        return str(obj)
    if isinstance(obj, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(obj)).decode("ascii")
    if isinstance(obj, Mapping):
        mapping: dict[str, JSONValue] = {}
        for key, value in obj.items():
            mapping[_key(key)] = to_jsonable(value, _depth + 1)
        return mapping
    if isinstance(obj, list | tuple | set | frozenset):
        items: list[JSONValue] = []
        for value in obj:
            items.append(to_jsonable(value, _depth + 1))
        if not isinstance(obj, set | frozenset):
            return items
        try:
            return sorted(items)  # type: ignore[type-var]
        except TypeError:
            return sorted(items, key=repr)
    raise TypeError(
        f"cannot serialize {cls.__module__}.{cls.__qualname__} to JSON; "
        "register a serializer with exporter.state.register_custom_serializer()"
    )


def _key(key: Any) -> str:
    if isinstance(key, str):
        return str(key)
    if isinstance(key, Enum):
        key = key.value
    if key is None or isinstance(key, bool):
        return json.dumps(key)
    if isinstance(key, int | float):
        return str(key)
    return str(to_jsonable(key)) if _lookup(type(key)) else str(key)


def dumps(obj: Any) -> str:
    """JSON text for ``obj`` (compact separators, UTF-8 kept as is)."""
    return json.dumps(to_jsonable(obj), ensure_ascii=False, separators=(",", ":"))


def dumps_or_none(obj: Any) -> str | None:
    return None if obj is None else dumps(obj)


def loads_or_raw(text: Any) -> Any:
    """Decode a stored JSON column; values that are not JSON text are returned unchanged."""
    if not isinstance(text, str | bytes):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text
