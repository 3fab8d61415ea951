"""Value types shared by every config section (the daemon's and the features'): durations, counts, files."""

from __future__ import annotations

import math
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator

_DURATION = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}
_DURATION_HINT = "use e.g. 30s, 5m, 1h"


def parse_duration(value: object) -> timedelta:
    """``30s``, ``5m``, ``1.5h``, ``2d``, ``500ms`` or a bare number of seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        raise ValueError(f"invalid duration {describe_value(value)} ({_DURATION_HINT})")
    if seconds < 0:
        raise ValueError(f"duration must not be negative, got {value!r}")
    if not math.isfinite(seconds) or seconds > 100 * 365 * 86400:
        raise ValueError(f"duration too large: {value!r}")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """The shortest of ``1w``, ``2d``, ``3h``, ``5m``, ``30s``, ``500ms`` that is exact."""
    seconds = value.total_seconds()
    for unit in ("w", "d", "h", "m", "s"):
        size = _UNIT_SECONDS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds * 1000:g}ms" if 0 < seconds < 1 else f"{seconds:g}s"


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError(f"must be greater than 0, got {format_duration(value)}")
    return value


def _not_bool(value: object) -> object:
    if isinstance(value, bool):
        raise ValueError(f"must be an integer, got {describe_value(value)}")
    return value


def _readable_file(path: Path) -> Path:
    if path.exists() and not path.is_file():
        raise ValueError(f"not a regular file: {path}")
    try:
        path.open("rb").close()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    return path


_BCRYPT = re.compile(r"^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$")
_BCRYPT_HINT = "python -c \"import bcrypt; print(bcrypt.hashpw(b'secret', bcrypt.gensalt()).decode())\""


def _bcrypt_hash(value: str) -> str:
    if not _BCRYPT.match(value):
        raise ValueError(f"not a bcrypt hash (generate one with: {_BCRYPT_HINT})")
    return value


# HTTP token characters that gRPC metadata keys allow too (the gRPC transport lowercases them).
_HEADER_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def _header_name(name: str) -> str:
    if not _HEADER_NAME.match(name):
        raise ValueError(f"invalid header name {name!r} (use letters, digits, '-', '_' and '.')")
    return name


def _header_value(value: str) -> str:
    # The value is a secret more often than not: the message never shows it.  CR or LF would let a
    # value inject headers; HTTP and gRPC both refuse the request with any control character, forever.
    if any(not " " <= char <= "~" for char in value):
        raise ValueError(
            "header value must be printable ASCII without line breaks or control characters"
            " (percent- or base64-encode other bytes)"
        )
    return value


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
PositiveDuration = Annotated[timedelta, BeforeValidator(parse_duration), AfterValidator(_positive)]
ReadableFile = Annotated[Path, AfterValidator(_readable_file)]
Count = Annotated[int, BeforeValidator(_not_bool)]
BcryptHash = Annotated[str, AfterValidator(_bcrypt_hash)]
HeaderName = Annotated[str, AfterValidator(_header_name)]
HeaderValue = Annotated[str, AfterValidator(_header_value)]


def describe_value(value: object) -> str:
    """A value as written in YAML; containers by kind only (aliases can make them huge)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return repr(value)
    return "a mapping" if isinstance(value, dict) else "a list" if isinstance(value, list) else repr(value)
