"""Marianne's rebuilt spans as a :class:`~exporter.traces.source.SpanSource`: one trace per job run of
a workspace DB (see :mod:`.runs` for what a run is and :mod:`.convert` for its spans).  The conductor
registry has no sheets and no attempts: :meth:`MarianneSpans.supported` says no, and the tailer
reports the layout as one without spans.

**The discovery cursor** is the set of runs discovered, each as a 16-hex digest of its unit id
(``{"runs": [...]}``), pruned at each discovery to the runs still in the DB.  A run is new when its
digest is not in the set.  Why not a high-water mark, as for Flujo and pynenc:

* ``jobs.rowid`` does not move when a job runs again: Marianne upserts the row in place, so a
  rowid mark would never see the re-run;
* ``created_at`` is not rewritten by that upsert either (a re-run would look like the old run);
* ``started_at`` does change, but is set in memory before the row is saved: a run started earlier
  and saved later than another (two jobs in one workspace waiting on its write lock, or a
  conductor that persists at its first sheet event) would fall behind a ``started_at`` mark and
  never be exported.

The set has no such window: a run is exported once whenever it becomes visible, a re-run (new
``started_at``) is a new digest and so a new trace, and a tailer restarted on its state file
finds nothing new.  It costs one digest per job row with a run (Marianne keeps one row per job id,
so a workspace DB holds a few) and a read of the ``jobs`` rows per discovery; at most
:data:`DISCOVERY_PAGE` runs are returned per call so the cursor copies handed out stay small.

A run overwritten (the job run again) before it was exported whole is gone from the DB: the tailer
counts it as vanished and the new run is exported.  :meth:`check_cursor` never moves the cursor:
it holds no row positions that a VACUUM or a deleted row could shift.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from exporter.engines.marianne.layout import WorkspaceSchema
from exporter.engines.marianne.traces import runs
from exporter.engines.marianne.traces.convert import RunEncoder
from exporter.engines.marianne.traces.runs import JobRun, RunInfo
from exporter.traces.encoded import Encoded, LocalReject
from exporter.traces.source import Found, Limits, Piece, UnitInfo, Work

if TYPE_CHECKING:
    from exporter.reader import ReadSession, StateReader

DISCOVERY_PAGE = 100


def _schema(session: ReadSession) -> WorkspaceSchema:
    schema = session.schema
    if not isinstance(schema, WorkspaceSchema):
        raise TypeError(f"not a Marianne workspace DB: {schema!r}")
    return schema


class MarianneSpans:
    def __init__(self, limits: Limits) -> None:
        self.encoder = RunEncoder(limits)

    def source_id(self, db_path: str) -> str:
        return f"marianne:{db_path}"

    def supported(self, schema: object) -> bool:
        return isinstance(schema, WorkspaceSchema)

    def discover(self, session: ReadSession, cursor: str | None, limit: int) -> list[Found]:
        current = runs.started_runs(session.conn)
        seen = sorted(runs.parse_cursor(cursor) & {run.digest for run in current})
        known = set(seen)
        new = sorted((run for run in current if run.digest not in known), key=lambda r: (r.position, r.unit_id))
        new = new[: max(min(limit, DISCOVERY_PAGE), 1)]
        counts = self._counts(session, new)
        found: list[Found] = []
        for run in new:
            bisect.insort(seen, run.digest)
            found.append(Found(run.position, run.unit_id, counts[run.unit_id], _cursor(seen)))
        return found

    def at_end(self, session: ReadSession) -> tuple[str, list[Found]]:
        current = runs.started_runs(session.conn)
        unfinished = [run for run in current if not run.finished]
        counts = self._counts(session, unfinished)
        return runs.cursor_text(run.digest for run in current), [
            Found(run.position, run.unit_id, counts[run.unit_id], "") for run in unfinished
        ]

    def check_cursor(self, session: ReadSession, cursor: str, unit_id: str) -> tuple[str, str] | None:
        return None  # digests, not positions: nothing a VACUUM or a reused rowid could move

    def behind(self, session: ReadSession, cursor: str | None, unit_ids: Sequence[str]) -> tuple[set[str], set[str]]:
        existing = runs.runs_by_unit(session.conn, unit_ids)
        seen = runs.parse_cursor(cursor)
        return set(existing), {unit_id for unit_id, run in existing.items() if run.digest in seen}

    def span_counts(self, session: ReadSession, unit_ids: Sequence[str]) -> dict[str, int]:
        return {unit_id: info.span_count for unit_id, info in self.infos(session, unit_ids).items()}

    def count_after(self, session: ReadSession, cursor: str | None) -> tuple[int, int]:
        seen = runs.parse_cursor(cursor)
        new = [run for run in runs.started_runs(session.conn) if run.digest not in seen]
        return len(new), sum(self._counts(session, new).values())

    def infos(self, session: ReadSession, unit_ids: Sequence[str]) -> dict[str, UnitInfo]:
        found = runs.runs_by_unit(session.conn, unit_ids)
        return dict(runs.run_infos(session.conn, _schema(session), found.values()))

    def encode(self, reader: StateReader, work: Sequence[Work], chunk: int) -> Iterator[Piece]:
        """Run by run, from what :meth:`infos` read (a run's sheets and attempts, never its prompts),
        in pieces of at most ``chunk`` spans."""
        for w in work:
            info = w.info
            assert isinstance(info, RunInfo)
            spans = self.encoder.encode(info, w.mode, w.skip)
            if not spans:
                yield Piece(info, [], [], True)
                continue
            step = max(chunk, 1)
            for start in range(0, len(spans), step):
                part = spans[start : start + step]
                yield Piece(
                    info,
                    [s for s in part if isinstance(s, Encoded)],
                    [s for s in part if isinstance(s, LocalReject)],
                    start + step >= len(spans),
                )

    def _counts(self, session: ReadSession, found: Sequence[JobRun]) -> dict[str, int]:
        return {
            unit_id: info.span_count for unit_id, info in runs.run_infos(session.conn, _schema(session), found).items()
        }


def _cursor(sorted_digests: list[str]) -> str:
    return json.dumps({"runs": sorted_digests}, separators=(",", ":"))
