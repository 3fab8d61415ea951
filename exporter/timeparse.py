"""Turn every timestamp convention found in the engines' DBs into real instants.

One engine may mix conventions in one file (Flujo does, see the project's SCHEMA notes):

* ISO-8601 naive in the writer's *local* time (Flujo 0.4.x's run state table),
* ISO-8601 naive in UTC (Flujo 0.4.x's runs and steps),
* ISO-8601 with an offset (0.6.x, ``+00:00``),
* ``YYYY-MM-DD HH:MM:SS`` from SQLite ``datetime('now')`` (UTC),
* epoch seconds as REAL (``spans`` in 0.4.x).

Every window (24 h, hours_back, days_old, stale, stuck) must compare instants, never strings, so
all parsing funnels through :func:`parse_instant`.  Ambiguous local wall times (the repeated hour
when DST ends) resolve to the first occurrence (``fold=0``): the error is at most the DST shift.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# Any wall clock on Earth is within [-12 h, +14 h] of UTC; a text timestamp of instant T therefore
# starts with a date within this margin of T's UTC date.  Used to pre-filter rows by index range.
MAX_UTC_OFFSET = timedelta(hours=14)

# Epoch values below this (2001-09-09) are not wall-clock times: 0.6.x stores time.monotonic().
MIN_PLAUSIBLE_EPOCH = 1_000_000_000.0


# A writer's clock may run a little ahead of ours (another container or host), and a row may be
# written between the refresh reading its clock and its query: a time up to this far ahead is read
# as "now".  Anything further ahead cannot be real and is a bad value.
FUTURE_TOLERANCE = timedelta(minutes=5)


def not_after(instant: datetime, now: datetime) -> datetime | None:
    """``instant`` itself, ``now`` for an instant slightly ahead of it, None beyond the tolerance."""
    if instant <= now:
        return instant
    return now if instant - now <= FUTURE_TOLERANCE else None


class TimestampError(ValueError):
    """A stored value is not a timestamp in any known convention."""


def resolve_timezone(name: str | None) -> tzinfo:
    """The writer's time zone: an IANA name, ``UTC``, or ``None``/``""``/``local`` for this system's."""
    if not name or name == "local":
        local = datetime.now().astimezone().tzinfo
        assert local is not None
        return local
    if name.upper() in ("UTC", "Z", "ETC/UTC"):
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r} (use an IANA name such as Europe/Berlin)") from exc


def parse_instant(value: object, naive_tz: tzinfo = UTC) -> datetime | None:
    """Parse a stored timestamp into an aware UTC datetime; ``None`` for NULL or empty text.

    ``naive_tz`` is the zone a naive ISO string was written in (the writer's local zone where the
    engine writes local times, UTC elsewhere).  Numbers and numeric text are epoch seconds.
    Raises :class:`TimestampError` for anything else.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise TimestampError(f"not a timestamp: {value!r}")
    if isinstance(value, int | float):
        return _from_epoch(float(value))
    if isinstance(value, datetime):
        return _aware(value, naive_tz)
    if not isinstance(value, str):
        raise TimestampError(f"not a timestamp: {value!r}")
    text = value.strip()
    if not text:
        return None
    try:
        return _from_epoch(float(text))
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise TimestampError(f"not a timestamp: {value!r}") from exc
    return _aware(parsed, naive_tz)


def to_epoch(value: object, naive_tz: tzinfo = UTC) -> float | None:
    instant = parse_instant(value, naive_tz)
    return None if instant is None else instant.timestamp()


def iso_utc(instant: datetime) -> str:
    """The form our own backend writes: aware ISO-8601 in UTC (``...+00:00``)."""
    return instant.astimezone(UTC).isoformat()


def instant_before(now: datetime, seconds: float) -> datetime | None:
    """The start of a window reaching ``seconds`` back from ``now``; None when that is before year 1,
    which leaves the window without a lower bound (a user may ask for "everything older than 1e9 days")."""
    try:
        return now - timedelta(seconds=seconds)
    except OverflowError:
        return None


def text_lower_bound(instant: datetime) -> str:
    """A string ``s`` such that every text timestamp of an instant >= ``instant`` sorts >= ``s``.

    Works for every text convention above, whatever the writer's zone, so that a window query can
    use the column's index to pre-select candidates that are then compared exactly in Python.
    """
    try:
        return _utc_date(instant - MAX_UTC_OFFSET).isoformat()
    except OverflowError:
        return ""  # before year 1: every text sorts after it


def text_upper_bound(instant: datetime) -> str:
    """A string ``s`` such that every text timestamp of an instant < ``instant`` sorts < ``s``."""
    try:
        return (_utc_date(instant + MAX_UTC_OFFSET) + timedelta(days=1)).isoformat()
    except OverflowError:
        return "\U0010ffff"  # after year 9999: every text sorts before it


def _utc_date(instant: datetime) -> date:
    return instant.astimezone(UTC).date()


def _from_epoch(seconds: float) -> datetime:
    if not math.isfinite(seconds):
        raise TimestampError(f"not a finite epoch value: {seconds!r}")
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise TimestampError(f"epoch value out of range: {seconds!r}") from exc


def _aware(value: datetime, naive_tz: tzinfo) -> datetime:
    if value.tzinfo is None:
        value = value.replace(tzinfo=naive_tz)
    try:
        return value.astimezone(UTC)
    except (OverflowError, ValueError) as exc:
        # 9999-12-31T23:59:59-05:00 or 0001-01-01T00:00:00+05:00: valid text, no UTC instant exists.
        raise TimestampError(f"timestamp outside the representable range once in UTC: {value.isoformat()!r}") from exc
