"""Wall-clock times for stored spans.

0.4.x stores ``time.time()`` epoch seconds.  0.6.x stores ``time.monotonic()`` of the writer host:
seconds since that host booted, meaningless across hosts and reboots.  A run's monotonic values
are anchored to a wall-clock instant written in the same run:

1. ``runs.created_at`` (ISO with microseconds) is written just before the root span starts, so
   ``offset = created_at - min(span start)``.  Error bound: the delay between the run row's
   creation and the root span's start — 0.71 ms at most over every run of the 0.6.11 fixture.
2. Without a run row, ``spans.created_at`` (``datetime('now')`` at save time, whole seconds) is
   matched to the latest span end: ``offset = created_at - max(span end)``.  Error bound: under
   1 s of truncation plus the delay between the root span's end and the save (0.995 s max on the
   fixture).

Values are told apart per row: epoch seconds are above :data:`MIN_PLAUSIBLE_EPOCH` (2001), a
monotonic clock would need a host up for 31 years to get there.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from exporter.timeparse import MIN_PLAUSIBLE_EPOCH

RUN_ANCHOR_ERROR_S = 0.001
SAVE_ANCHOR_ERROR_S = 1.0


def is_monotonic(value: float) -> bool:
    return value < MIN_PLAUSIBLE_EPOCH


@dataclass(frozen=True)
class SpanClock:
    """Converts one run's stored span times to epoch seconds."""

    offset: float  # added to monotonic values; 0.0 when the run's values are already epoch
    error_bound_s: float
    anchored: bool  # False when monotonic values had no anchor (times are then unusable)

    def to_epoch(self, value: float | None) -> float | None:
        if value is None:
            return None
        return value + self.offset if is_monotonic(value) else value


EPOCH_CLOCK = SpanClock(offset=0.0, error_bound_s=0.0, anchored=True)


def clock_for_run(
    *,
    min_start: float,
    max_end: float | None,
    run_created_at: datetime | None,
    latest_span_created_at: datetime | None,
) -> SpanClock:
    """Pick the best anchor for a run whose earliest stored span start is ``min_start``."""
    if not is_monotonic(min_start):
        return EPOCH_CLOCK
    if run_created_at is not None:
        return SpanClock(run_created_at.timestamp() - min_start, RUN_ANCHOR_ERROR_S, True)
    if latest_span_created_at is not None:
        reference = max_end if max_end is not None else min_start
        return SpanClock(latest_span_created_at.timestamp() - reference, SAVE_ANCHOR_ERROR_S, True)
    return SpanClock(0.0, float("inf"), False)
