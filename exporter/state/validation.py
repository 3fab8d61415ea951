"""Argument checks for the public API (the seed's SQL-injection section): wrong types raise
``TypeError``, out-of-range values ``ValueError``; strings are only ever bound as parameters."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

METADATA_KEY_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


def non_negative_number(name: str, value: object) -> float:
    """A finite number >= 0 (int or float, not bool)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}: {value!r}")
    number = float(value)
    if math.isnan(number):
        raise ValueError(f"{name} must be a number, got NaN")
    if number < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return number


def non_negative_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}: {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return int(value)


def optional_limit(value: object) -> int | None:
    return None if value is None else non_negative_int("limit", value)


def optional_str(name: str, value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"{name} must be a str or None, got {type(value).__name__}: {value!r}")


def required_str(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}: {value!r}")
    if not value:
        raise ValueError(f"{name} must not be empty")
    return value


def limit_clause(limit: int | None, offset: int) -> tuple[str, list[int]]:
    if limit is None and offset == 0:
        return "", []
    return " LIMIT ? OFFSET ?", [-1 if limit is None else limit, offset]


def metadata_path(key: object) -> str:
    """JSON path for a ``metadata_filter`` key: ``a.b`` -> ``$."a"."b"``."""
    if not isinstance(key, str):
        raise TypeError(f"metadata_filter keys must be str, got {type(key).__name__}: {key!r}")
    parts = key.split(".")
    if not METADATA_KEY_RE.match(key) or any(not p for p in parts):
        raise ValueError(f"invalid metadata_filter key {key!r} (allowed: letters, digits, '_', '-', '.')")
    return "$" + "".join(f'."{p}"' for p in parts)


def metadata_conditions(column: str, metadata_filter: object) -> tuple[list[str], list[Any]]:
    """SQL conditions (AND-ed) matching JSON scalars in ``column`` via ``json_extract``."""
    if metadata_filter is None:
        return [], []
    if not isinstance(metadata_filter, Mapping):
        raise TypeError(f"metadata_filter must be a dict, got {type(metadata_filter).__name__}")
    conds: list[str] = []
    params: list[Any] = []
    for key, value in metadata_filter.items():
        path = metadata_path(key)
        if value is None:
            conds.append(f"json_type({column}, ?) = 'null'")
            params.append(path)
        elif isinstance(value, bool):
            conds.append(f"json_type({column}, ?) = ?")
            params += [path, "true" if value else "false"]
        elif isinstance(value, int | float | str):
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"metadata_filter[{key!r}] must be finite")
            conds.append(f"json_extract({column}, ?) = ?")
            params += [path, value]
        else:
            raise TypeError(
                f"metadata_filter[{key!r}] must be a JSON scalar (str, int, float, bool, None), "
                f"got {type(value).__name__}"
            )
    return conds, params


def where_clause(
    filters: Mapping[str, object], *, fixed: Sequence[str] = (), params: Sequence[Any] = ()
) -> tuple[str, list[Any]]:
    """`` WHERE ...`` AND-ing the ``fixed`` conditions (whose ``params`` come first) with ``column = ?``
    for every filter whose value is not None; ``""`` when there is nothing to filter.  Column names
    come from the callers' code, never from input; values are always bound."""
    conds, values = list(fixed), list(params)
    for column, value in filters.items():
        if value is not None:
            conds.append(f"{column} = ?")
            values.append(value)
    return (" WHERE " + " AND ".join(conds) if conds else ""), values
