"""What a workspace DB's rows say happened, each thing counted once: attempt outcomes, retries,
jobs finishing and their durations.

Marianne rewrites its rows in place: a resumed job's attempt changes outcome (``undecided`` to
``success`` or ``failed``, ``failed`` to ``failed_then_retried``), a re-run job id overwrites its
row.  Sums over the rows present would go down; these counters do not:

* ``execution_history`` is append-only with an ``AUTOINCREMENT`` id: an id watermark reads each
  attempt once.  An attempt whose outcome is not decided yet waits in a pending set (its id) and
  is counted once it is, under the outcome it has then; a decided one is never counted again.
  Decided: a later attempt of its sheet exists, or the sheet counts more attempts
  (``attempt_count``: Marianne saves the sheet before it records the attempt, so the count moves
  first) -> ``failed_then_retried``; else the sheet ``completed`` -> ``success``, ``failed`` ->
  ``failed``.
* ``jobs`` is small and rewritten in place: each job's row is remembered by id (its
  ``created_at``, retries and finish seen), so a retry or a finish (``completed``, ``failed``,
  ``cancelled`` with its ``completed_at``) is counted once; a re-run job (another ``created_at``)
  is a new job, a resumed one that ends again finishes again.

At start everything present is counted (a daemon started on a file shows its rows' values on its
first scrape); a file replaced at the same path is followed from its end.
"""

from __future__ import annotations

import logging
import sqlite3
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, timedelta

from exporter.engines.marianne.layout import HISTORY, JOBS, SHEETS
from exporter.engines.marianne.statuses import CANCELLED, COMPLETED, FAILED, SHEET_COMPLETED, SHEET_FAILED
from exporter.model import RUN_DURATION_BUCKETS, Histogram
from exporter.reader.badvalues import BadValue, shown
from exporter.timeparse import TimestampError, parse_instant

log = logging.getLogger(__name__)

BATCH = 500
# Attempt outcomes, each final once counted.  An attempt not decided yet is no outcome: it is
# the ``marianne_execution_attempts_undecided`` gauge until it is.
SUCCESS, FAILED_OUTCOME, FAILED_THEN_RETRIED = "success", "failed", "failed_then_retried"
OUTCOMES = (SUCCESS, FAILED_OUTCOME, FAILED_THEN_RETRIED)
FINISHED_STATUSES = (COMPLETED, FAILED, CANCELLED)

_ATTEMPTS = (
    f"SELECT h.id, h.attempt_num, s.attempt_count, s.status, "
    f"(SELECT MAX(l.id) FROM {HISTORY} l WHERE l.job_id = h.job_id AND l.sheet_num = h.sheet_num) "
    f"FROM {HISTORY} h LEFT JOIN {SHEETS} s ON s.job_id = h.job_id AND s.sheet_num = h.sheet_num "
)


@dataclass(frozen=True)
class Followed:
    """Totals of one workspace DB, or summed over a conductor's workspaces."""

    outcomes: Counter[str]  # decided attempts by outcome, every outcome present
    undecided: int  # attempts read whose outcome is not decided yet (not in ``outcomes``)
    retries: int  # jobs' total_retry_count, each increase once
    finished: Counter[str]  # jobs seen finishing, by final status
    durations: Histogram  # completed_at - started_at of the jobs seen finishing with both

    @classmethod
    def merged(cls, parts: Iterable[Followed]) -> Followed:
        outcomes: Counter[str] = Counter(dict.fromkeys(OUTCOMES, 0))
        finished: Counter[str] = Counter()
        undecided = retries = 0
        durations = Histogram(RUN_DURATION_BUCKETS)
        for part in parts:
            outcomes.update(part.outcomes)
            finished.update(part.finished)
            undecided += part.undecided
            retries += part.retries
            durations.merge(part.durations)
        return cls(outcomes, undecided, retries, finished, durations)


@dataclass
class _Job:
    created_at: object  # another value at the same id: the job id was run again, a new job
    retries: int = 0
    finish: tuple[object, object] | None = None  # (status, completed_at) of the finish counted


@dataclass
class HistoryTracker:
    """One workspace DB's counters (owned by the single refresh thread)."""

    cursor: int = 0  # the last execution_history id read
    pending: set[int] = field(default_factory=set)  # ids read but not decided yet
    jobs: dict[str, _Job] = field(default_factory=dict)
    outcomes: Counter[str] = field(default_factory=lambda: Counter(dict.fromkeys(OUTCOMES, 0)))
    retries: int = 0
    finished: Counter[str] = field(default_factory=Counter)
    durations: Histogram = field(default_factory=lambda: Histogram(RUN_DURATION_BUCKETS))
    seeded: bool = False
    _bad: list[BadValue] = field(default_factory=list)
    _follow_new_file: bool = False

    def restarted(self) -> HistoryTracker:
        """Another file took the path: keep every total, follow the new file from its end."""
        self._follow_new_file = True
        return self

    def take_bad_values(self) -> tuple[BadValue, ...]:
        found, self._bad = tuple(self._bad), []
        return found

    def totals(self) -> Followed:
        return Followed(
            Counter(self.outcomes), len(self.pending), self.retries, Counter(self.finished), self.durations.copy()
        )

    def update(self, conn: sqlite3.Connection) -> bool:
        """Read one batch of new attempts (and every job row, a small table); ``True`` once caught
        up.  One read transaction, the caller's."""
        if self._follow_new_file:
            self._follow_new_file = False
            self.cursor, self.pending = _max_id(conn), set()
            self._follow_jobs(conn, count=False)
            return True
        self._follow_jobs(conn, count=True)
        done = self._follow_history(conn)
        self.seeded = self.seeded or done
        return done

    def _follow_jobs(self, conn: sqlite3.Connection, *, count: bool) -> None:
        present = set()
        sql = f"SELECT id, status, created_at, started_at, completed_at, total_retry_count FROM {JOBS}"
        for job_id, status, created, started, completed, retries in conn.execute(sql):
            key = str(job_id)
            present.add(key)
            job = self.jobs.get(key)
            if job is None or job.created_at != created:
                job = self.jobs[key] = _Job(created)
            if isinstance(retries, int) and not isinstance(retries, bool) and retries >= 0:
                if count and retries > job.retries:
                    self.retries += retries - job.retries
                job.retries = retries  # lower: a reset; count its increases from there
            else:
                self._bad.append(BadValue(JOBS, "total_retry_count", key, shown(retries)))
            if status not in FINISHED_STATUSES:
                job.finish = None  # resumed: its next end is another finish
                continue
            finish = (status, completed)
            if job.finish == finish:
                continue
            job.finish = finish
            if count:
                self.finished[status] += 1
                self._observe(key, started, completed)
        for gone in self.jobs.keys() - present:
            del self.jobs[gone]

    def _observe(self, job_id: str, raw_start: object, raw_end: object) -> None:
        instants = []
        for column, raw in (("started_at", raw_start), ("completed_at", raw_end)):
            try:
                instants.append(parse_instant(raw, UTC))
            except TimestampError:
                self._bad.append(BadValue(JOBS, column, job_id, shown(raw)))
                return
        start, end = instants
        # No start (cancelled before it ran) or no end: a finish without a duration.
        if start is not None and end is not None and end >= start:
            self.durations.observe((end - start) / timedelta(seconds=1))

    def _follow_history(self, conn: sqlite3.Connection) -> bool:
        top = _max_id(conn)
        if top < self.cursor:
            log.warning(
                "%s: MAX(id) %d is below the cursor %d: the file was replaced or its newest attempts deleted; "
                "following it from id %d on",
                HISTORY,
                top,
                self.cursor,
                top,
            )
            self.cursor, self.pending = top, set()
            return True
        if self.pending:
            waiting = sorted(self.pending)
            self.pending = set()
            for start in range(0, len(waiting), BATCH):
                chunk = waiting[start : start + BATCH]
                found = conn.execute(f"{_ATTEMPTS} WHERE h.id IN ({', '.join('?' * len(chunk))})", chunk)
                self._decide(found.fetchall())  # an id no longer present: its job was deleted
        rows = conn.execute(
            f"{_ATTEMPTS} WHERE h.id > ? AND h.id <= ? ORDER BY h.id LIMIT ?", (self.cursor, top, BATCH)
        ).fetchall()
        self._decide(rows)
        complete = len(rows) < BATCH
        self.cursor = top if complete else int(rows[-1][0])
        return complete

    def _decide(self, rows: list[tuple[object, ...]]) -> None:
        for row_id, attempt, count, status, last_id in rows:
            assert isinstance(row_id, int)
            outcome = _outcome(row_id, attempt, count, status, last_id)
            if outcome is None:
                self.pending.add(row_id)
            else:
                self.outcomes[outcome] += 1


def _outcome(row_id: int, attempt: object, count: object, status: object, last_id: object) -> str | None:
    later = isinstance(last_id, int) and last_id > row_id
    counted_past = isinstance(attempt, int) and isinstance(count, int) and attempt < count
    if later or counted_past:
        return FAILED_THEN_RETRIED
    if status == SHEET_COMPLETED:
        return SUCCESS
    if status == SHEET_FAILED:
        return FAILED_OUTCOME
    return None  # in progress, waiting for its retry, paused, cancelled, or its sheet row is gone


def _max_id(conn: sqlite3.Connection) -> int:
    return int(conn.execute(f"SELECT COALESCE(MAX(id), 0) FROM {HISTORY}").fetchone()[0])
