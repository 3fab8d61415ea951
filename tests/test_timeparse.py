from datetime import UTC, datetime, timedelta, timezone

import pytest

from exporter.timeparse import (
    TimestampError,
    instant_before,
    parse_instant,
    resolve_timezone,
    text_lower_bound,
    text_upper_bound,
)

LA = resolve_timezone("America/Los_Angeles")


@pytest.mark.parametrize(
    ("raw", "naive_tz", "expected"),
    [
        # workflow_state 0.4.x: local naive, with and without microseconds
        ("2026-11-20T23:10:29.651624", UTC, datetime(2026, 11, 20, 23, 10, 29, 651624, UTC)),
        ("2026-11-20T23:10:29", LA, datetime(2026, 11, 21, 7, 10, 29, tzinfo=UTC)),
        # runs/steps 0.4.x: UTC naive
        ("2026-11-20T23:09:41.307514", UTC, datetime(2026, 11, 20, 23, 9, 41, 307514, UTC)),
        # 0.6.x: ISO with offset; the naive zone must not matter
        ("2026-11-21T11:10:02.442713+00:00", LA, datetime(2026, 11, 21, 11, 10, 2, 442713, UTC)),
        ("2026-11-21T13:10:02+02:00", UTC, datetime(2026, 11, 21, 11, 10, 2, tzinfo=UTC)),
        # SQLite datetime('now')
        ("2026-11-21 11:09:42", UTC, datetime(2026, 11, 21, 11, 9, 42, tzinfo=UTC)),
        # spans 0.4.x: epoch REAL, and epoch as text
        (1795216181.30846, LA, datetime.fromtimestamp(1795216181.30846, UTC)),
        ("1795216181.5", UTC, datetime.fromtimestamp(1795216181.5, UTC)),
        (None, UTC, None),
        ("", UTC, None),
    ],
)
def test_every_convention(raw: object, naive_tz: timezone, expected: datetime | None) -> None:
    assert parse_instant(raw, naive_tz) == expected


@pytest.mark.parametrize("raw", ["yesterday", "2026-13-01T00:00:00", True, b"2026", float("nan"), [1]])
def test_garbage_is_rejected(raw: object) -> None:
    with pytest.raises(TimestampError):
        parse_instant(raw)


def test_dst_gap_and_fold_resolve_to_the_first_occurrence() -> None:
    # 2026-11-01 01:30 happens twice in Los Angeles; fold=0 is the PDT one (UTC-7).
    assert parse_instant("2026-11-01T01:30:00", LA) == datetime(2026, 11, 1, 8, 30, tzinfo=UTC)


def test_unknown_zone_names_the_zone() -> None:
    with pytest.raises(ValueError, match="Mars/Olympus"):
        resolve_timezone("Mars/Olympus")


@pytest.mark.parametrize("zone", ["UTC", "America/Los_Angeles", "Pacific/Kiritimati", "Etc/GMT+12"])
def test_text_bounds_hold_for_every_zone_and_format(zone: str) -> None:
    tz = resolve_timezone(zone)
    threshold = datetime(2026, 11, 20, 11, 14, 44, tzinfo=UTC)
    for delta in (timedelta(0), timedelta(microseconds=1), timedelta(hours=5), timedelta(days=3)):
        later = threshold + delta
        earlier = threshold - delta - timedelta(microseconds=1)
        for instant, check in ((later, "lower"), (earlier, "upper")):
            local = instant.astimezone(tz)
            texts = [
                local.replace(tzinfo=None).isoformat(),
                local.isoformat(),
                instant.isoformat(),
                instant.strftime("%Y-%m-%d %H:%M:%S"),
            ]
            for text in texts:
                if check == "lower":
                    assert text >= text_lower_bound(threshold), text
                else:
                    assert text < text_upper_bound(threshold), text


@pytest.mark.parametrize(
    ("text", "zone"),
    [
        ("9999-12-31T23:59:59-05:00", "UTC"),
        ("0001-01-01T00:00:00+05:00", "UTC"),
        ("9999-12-31T23:59:59", "America/Los_Angeles"),  # naive, western writer: past year 9999 in UTC
        ("0001-01-01T00:00:00", "Asia/Tokyo"),  # naive, eastern writer: before year 1 in UTC
        ("9999-12-31 23:59:59-05:00", "UTC"),
    ],
)
def test_text_without_a_utc_instant_is_a_timestamp_error(text: str, zone: str) -> None:
    with pytest.raises(TimestampError, match="representable range"):
        parse_instant(text, resolve_timezone(zone))


@pytest.mark.parametrize("seconds", [1e20, -1e20, float("inf"), float("nan"), "1e400"])
def test_epoch_out_of_range_is_a_timestamp_error(seconds: object) -> None:
    with pytest.raises(TimestampError):
        parse_instant(seconds)


def test_text_bounds_at_the_ends_of_the_calendar() -> None:
    assert text_lower_bound(datetime(1, 1, 1, 5, tzinfo=UTC)) == ""
    assert text_upper_bound(datetime(9999, 12, 31, 20, tzinfo=UTC)) > "9999-12-31T23:59:59"


def test_instant_before_is_the_window_start() -> None:
    now = datetime(2026, 12, 6, 2, 0, tzinfo=UTC)
    assert instant_before(now, 24 * 3600) == datetime(2026, 12, 5, 2, 0, tzinfo=UTC)
    assert instant_before(now, 0.5) == now - timedelta(milliseconds=500)
    assert instant_before(now, 0) == now


@pytest.mark.parametrize("seconds", [2026 * 366 * 86400, 1e9 * 86400, 1e300])
def test_instant_before_year_one_leaves_the_window_unbounded(seconds: float) -> None:
    assert instant_before(datetime(2026, 12, 6, tzinfo=UTC), seconds) is None
