"""Wall-clock times for stored spans.

0.4.x stores ``time.time()`` epoch seconds.  0.6.x stores ``time.monotonic()`` of the writer host:
seconds since that host booted, meaningless across hosts and reboots.  A run's monotonic values
are converted with ``wall = monotonic + offset``, and the offset is bracketed by wall-clock times
flujo 0.6.11 writes in a known order around the root span (``run_session.py``):

* ``runs.created_at`` is written by ``record_run_start`` BEFORE the ``pre_run`` hook starts the root
  span, so ``offset >= created_at - min(span start)`` (lower bound).  The gap is not small: on live
  0.6.11 apps the root span started 2.7 ms to 433 ms (p50 8.3 ms) after ``created_at`` (the state
  save, hooks and imports run in between), so ``created_at`` alone is no 1 ms anchor.
* the ``post_run`` hook ends the root span BEFORE ``persist_final_state`` writes the workflow state,
  then ``save_run_end`` (``runs.updated_at`` / ``end_time`` of a finished run), then ``save_trace``
  (``spans.created_at``, whole seconds from SQLite ``datetime('now')``, so ``+1 s``).  Every stored
  span end is therefore at or before each of them: ``offset <= end - max(span end)`` (upper bounds;
  the smallest one wins).

With both bounds the midpoint is exported and half the bracket's width is the error bound (never
below the timestamps' microsecond resolution): the true offset lies inside the bracket, so the
error cannot exceed it.  On the 0.6.11 fixture the half-widths are 0.59 ms to 1.8 ms.  With only
the lower bound (no parseable end anchor, or bounds that contradict each other, e.g. a host reboot
between a pause and its resume) the offset is the lower bound and the error is unbounded
(``inf``): the root then starts at or before its true start.  Without a run row, the latest
``spans.created_at`` is matched to the latest span end (bound 1 s, measured on the fixture only).

Values are told apart per row: epoch seconds are above :data:`MIN_PLAUSIBLE_EPOCH` (2001), a
monotonic clock would need a host up for 31 years to get there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from exporter.timeparse import MIN_PLAUSIBLE_EPOCH

RESOLUTION_S = 1e-6  # ISO timestamps with microseconds
SPAN_SAVE_RESOLUTION_S = 1.0  # spans.created_at: whole seconds, truncated
SAVE_ANCHOR_ERROR_S = 1.0
UNBOUNDED = math.inf


class ClockKind:
    EPOCH = "epoch"
    BRACKETED = "run_bracketed"  # between runs.created_at and the run's end / the spans' save
    RUN_START = "run_created_at"  # lower bound only
    SPAN_SAVE = "span_created_at"  # no run row: the spans' save time only
    UNANCHORED = "unanchored"


def is_monotonic(value: float) -> bool:
    return value < MIN_PLAUSIBLE_EPOCH


@dataclass(frozen=True)
class SpanClock:
    """Converts one run's stored span times to epoch seconds."""

    offset: float  # added to monotonic values; 0.0 when the run's values are already epoch
    error_bound_s: float  # the converted times are within this of the truth (inf: unbounded)
    anchored: bool  # False when monotonic values had no anchor (times are then unusable)
    kind: str = ClockKind.EPOCH

    def to_epoch(self, value: float | None) -> float | None:
        if value is None:
            return None
        return value + self.offset if is_monotonic(value) else value


EPOCH_CLOCK = SpanClock(offset=0.0, error_bound_s=0.0, anchored=True, kind=ClockKind.EPOCH)


def clock_for_run(
    *,
    min_start: float,
    max_end: float | None,
    run_created_at: datetime | None,
    latest_span_created_at: datetime | None,
    run_ended_at: datetime | None = None,
) -> SpanClock:
    """Pick the best anchor for a run whose earliest stored span start is ``min_start``.

    ``run_ended_at`` is the end flujo wrote for a FINISHED run (``runs.end_time``, else its
    ``updated_at``); pass None for a run still running (its ``updated_at`` is its start).
    """
    if not is_monotonic(min_start):
        return EPOCH_CLOCK
    reference = max_end if max_end is not None else min_start
    uppers = []
    if run_ended_at is not None:
        uppers.append(run_ended_at.timestamp() - reference)
    if latest_span_created_at is not None:
        uppers.append(latest_span_created_at.timestamp() + SPAN_SAVE_RESOLUTION_S - reference)
    upper = min(uppers) if uppers else None
    if run_created_at is not None:
        lower = run_created_at.timestamp() - min_start
        if upper is not None and upper >= lower:
            half = (upper - lower) / 2
            return SpanClock(lower + half, max(half, RESOLUTION_S), True, ClockKind.BRACKETED)
        return SpanClock(lower, UNBOUNDED, True, ClockKind.RUN_START)
    if latest_span_created_at is not None:
        return SpanClock(latest_span_created_at.timestamp() - reference, SAVE_ANCHOR_ERROR_S, True, ClockKind.SPAN_SAVE)
    return SpanClock(0.0, UNBOUNDED, False, ClockKind.UNANCHORED)
