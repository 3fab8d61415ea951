"""Flujo's stored spans as a :class:`~exporter.traces.source.SpanSource`: one trace per run.

The cursor is ``runs.rowid`` as text (what state files of earlier releases hold as ``runs_hwm``, so
they go on working); a run's position is its rowid.  On Postgres, which has no rowid, discovery
follows a re-read window on ``runs.created_at`` instead (:mod:`.pgcursor`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from exporter.engines.flujo.layout import flujo_schema
from exporter.engines.flujo.traces import pgcursor, source
from exporter.engines.flujo.traces.attributes import Limits as FlujoLimits
from exporter.engines.flujo.traces.convert import SpanEncoder
from exporter.engines.flujo.traces.source import RunInfo
from exporter.traces.batching import groups_by_size
from exporter.traces.encoded import Mode
from exporter.traces.source import Found, Limits, Piece, UnitInfo, Work

if TYPE_CHECKING:
    from exporter.engines.base import EngineSchema
    from exporter.reader import Reader, ReadSession
    from exporter.traces.backfill import Backfill, BackfillRequest


def _rowid(cursor: str | None) -> int:
    return int(cursor) if cursor else 0


class FlujoSpans:
    def __init__(self, limits: Limits) -> None:
        self.encoder = SpanEncoder(FlujoLimits(limits.count_limit, limits.value_length_limit), limits.ids)

    def source_id(self, db_path: str) -> str:
        return db_path  # as earlier releases bound the state file

    def supported(self, schema: object) -> bool:
        return source.supported(schema)

    def discover(self, session: ReadSession, cursor: str | None, limit: int) -> list[Found]:
        if _postgres(session):
            return pgcursor.discover(session.db, cursor, limit)
        rows = source.runs_after(session.conn, _rowid(cursor), limit)
        counts = source.span_counts(session.conn, [run_id for _, run_id in rows])
        return [Found(r, i, counts.get(i, 0), str(r)) for r, i in rows]

    def at_end(self, session: ReadSession) -> tuple[str, list[Found]]:
        if _postgres(session):
            return pgcursor.at_end(session.db)
        top = source.max_run_rowid(session.conn)
        unfinished = source.unfinished_runs_upto(session.conn, top)
        counts = source.span_counts(session.conn, [run_id for _, run_id in unfinished])
        return str(top), [Found(r, i, counts.get(i, 0), str(r)) for r, i in unfinished]

    def check_cursor(self, session: ReadSession, cursor: str, unit_id: str) -> tuple[str, str] | None:
        if _postgres(session):
            return None  # no rowids to be reused: the window cursor never points at another run
        hwm = _rowid(cursor)
        if hwm == 0 or not unit_id or source.run_id_at(session.conn, hwm) == unit_id:
            return None
        moved = source.rowids_of(session.conn, [unit_id]).get(unit_id)
        if moved is None:
            moved = source.max_run_rowid_below(session.conn, hwm)
        return str(moved), source.run_id_at(session.conn, moved) or ""

    def behind(self, session: ReadSession, cursor: str | None, unit_ids: Sequence[str]) -> tuple[set[str], set[str]]:
        if _postgres(session):
            return pgcursor.behind(session.db, cursor, unit_ids)
        rowids = source.rowids_of(session.conn, unit_ids)
        if cursor is None:
            return set(rowids), set()
        hwm = _rowid(cursor)
        return set(rowids), {i for i, r in rowids.items() if r <= hwm}

    def span_counts(self, session: ReadSession, unit_ids: Sequence[str]) -> dict[str, int]:
        return source.span_counts(session.db, unit_ids)

    def count_after(self, session: ReadSession, cursor: str | None) -> tuple[int, int]:
        if _postgres(session):
            return pgcursor.count_after(session.db, cursor)
        return source.count_spans_after(session.conn, _rowid(cursor))

    def infos(self, session: ReadSession, unit_ids: Sequence[str]) -> dict[str, UnitInfo]:
        return dict(source.run_infos(session.db, flujo_schema(session.schema), session.naive_tz, unit_ids))

    def replays_itself(self, schema: EngineSchema) -> bool:
        """SQLite files: Flujo's own backfill, paged by rowid.  Postgres has no rowid: unit by unit through
        :meth:`discover` and :meth:`encode`, as the tailer reads it."""
        return flujo_schema(schema).dialect.has_rowid

    def backfill(self, request: BackfillRequest) -> Backfill:
        """Flujo's own backfill: resumes inside a run (its spans are paged by stored span id)."""
        from exporter.engines.flujo.traces.backfill import FlujoBackfill

        return FlujoBackfill(request)

    def encode(self, reader: Reader, work: Sequence[Work], chunk: int) -> Iterator[Piece]:
        """Small runs read together (about ``chunk`` spans a read), a larger one page by page."""
        small = [w for w in work if w.info.span_count <= chunk]
        large = [w for w in work if w.info.span_count > chunk]
        for group in groups_by_size(small, [max(w.info.span_count, 1) for w in small], chunk):
            with reader.session() as s:
                rows = source.spans_of(s.db, [w.info.run_id for w in group])
            by_run: dict[str, list[source.SpanRow]] = defaultdict(list)
            for row in rows:
                by_run[row[0]].append(row)
            for w in group:
                info = _run(w.info)
                encoded, rejected = self.encoder.encode_run(info, by_run.get(info.run_id, []), w.mode, skip=w.skip)
                yield Piece(info, encoded, rejected, True)
        for w in large:
            yield from self._large_run(reader, w, chunk)

    def _large_run(self, reader: Reader, w: Work, chunk: int) -> Iterator[Piece]:
        info = _run(w.info)
        child_ends = None
        after: str | None = None
        while True:
            with reader.session() as s:
                if child_ends is None and w.mode is not Mode.PARTIAL:
                    child_ends = source.last_child_ends(s.db, info.run_id)
                rows = source.span_page(s.db, info.run_id, after, chunk)
            if not rows:
                break
            after = str(rows[-1][1])
            encoded, rejected = self.encoder.encode_run(info, rows, w.mode, skip=w.skip, child_ends=child_ends or {})
            yield Piece(info, encoded, rejected, False)
        yield Piece(info, [], [], True)


def _postgres(session: ReadSession) -> bool:
    return not flujo_schema(session.schema).dialect.has_rowid


def _run(info: UnitInfo) -> RunInfo:
    assert isinstance(info, RunInfo)
    return info
