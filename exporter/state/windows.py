"""Time windows over text timestamp columns, compared as real instants.

A window query first pre-selects candidate rows through the column's index with a *string* range that
is valid for every timestamp convention and writer zone (:func:`exporter.timeparse.text_lower_bound`,
``text_upper_bound``), then compares the parsed instants exactly in Python.  Rows whose timestamp
cannot be parsed are skipped with a warning naming the table, column and run_id.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, tzinfo

from exporter.timeparse import TimestampError, parse_instant, text_lower_bound, text_upper_bound

log = logging.getLogger("exporter.state")

# Sorts after every ISO timestamp text: an "unbounded" upper bound for string ranges.
TEXT_MAX = "\U0010ffff"


def lower_text(instant: datetime | None) -> str:
    """String lower bound for ``column >= ?`` candidates ('' = everything)."""
    if instant is None:
        return ""
    try:
        return text_lower_bound(instant)
    except OverflowError:
        return ""


def upper_text(instant: datetime | None) -> str | None:
    """String upper bound for ``column < ?`` candidates (None = no row can match)."""
    if instant is None:
        return None
    try:
        return text_upper_bound(instant)
    except OverflowError:
        return TEXT_MAX


def instant_of(value: object, naive_tz: tzinfo, *, table: str, column: str, run_id: object) -> datetime | None:
    """Parse a stored timestamp; None (and a warning) when it is NULL/empty or not a timestamp."""
    try:
        instant = parse_instant(value, naive_tz)
    except TimestampError:
        instant = None
    if instant is None:
        log.warning("skipping %s.%s of run_id=%r: not a timestamp (%r)", table, column, run_id, value)
    return instant


def aware_utc(value: datetime) -> datetime:
    """Naive datetimes passed by callers are UTC (flujo passes ``datetime.utcnow()``)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def caller_timestamp(value: object, name: str) -> str | None:
    """Normalise a caller-supplied time (datetime, ISO text or epoch; naive = UTC) to aware UTC ISO."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a datetime, ISO string or epoch number, got bool")
    if isinstance(value, datetime):
        return aware_utc(value).isoformat()
    if isinstance(value, str | int | float):
        try:
            instant = parse_instant(value, UTC)
        except TimestampError as exc:
            raise ValueError(f"{name} is not a timestamp: {value!r}") from exc
        return None if instant is None else instant.isoformat()
    raise TypeError(f"{name} must be a datetime, ISO string or epoch number, got {type(value).__name__}")
