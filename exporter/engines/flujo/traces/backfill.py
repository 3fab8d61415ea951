"""``replay``: resumable backfill of stored spans, independent of the tailer's state.

Runs are taken in ``runs.rowid`` order, filtered by run start (``since`` inclusive, ``until``
exclusive) and/or run ids; the spans of a run in stored span id order.  After each batch the collector
accepted, the position of its last span (runs rowid, span id) is committed in the state file under a
key derived from the DB and the filters, so running the same replay again continues after the last
accepted batch (at most that one batch in flight is sent twice after a crash) and a finished replay is
not repeated (``restart=True`` starts it over).  Runs still in progress are exported as they are, open
spans closed at their last child's end and flagged.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import defaultdict
from typing import Any

from tqdm import tqdm

from exporter.engines.flujo.layout import ENGINE_NAME, flujo_schema
from exporter.engines.flujo.traces import source
from exporter.engines.flujo.traces.attributes import Limits
from exporter.engines.flujo.traces.convert import SpanEncoder
from exporter.engines.flujo.traces.source import RunInfo
from exporter.reader import ReadSession
from exporter.traces.backfill import BackfillJob, BackfillRequest, ReplayResult
from exporter.traces.delivery import DeadLetter, Delivered
from exporter.traces.encoded import Encoded, LocalReject, Mode
from exporter.traces.tailer import limits_of
from exporter.traces.transport import Stopped

log = logging.getLogger("exporter.traces")
RUN_PAGE = 256


class FlujoBackfill(BackfillJob):
    """Flujo's own backfill (see the module docstring), driven by :func:`exporter.traces.replay`."""

    def __init__(self, request: BackfillRequest) -> None:
        super().__init__(request, ENGINE_NAME)
        self.run_ids = request.run_ids
        limits = limits_of(request.config)
        self.encoder = SpanEncoder(Limits(limits.count_limit, limits.value_length_limit), limits.ids)
        self.local_dead: list[DeadLetter] = []
        self.position: tuple[int, str | None] = (0, None)
        self.bar: Any = None

    # --- selection ------------------------------------------------------------------------------
    def _where(self, s: ReadSession) -> tuple[str, list[object]]:
        clauses: list[str] = []
        args: list[object] = []
        if self.since is not None or self.until is not None:
            s.conn.create_function("flujo_epoch", 1, source.epoch_of, deterministic=True)
            start_expr = flujo_schema(s.schema).run_start_sql("r")
            if self.since is not None:
                clauses.append(f"flujo_epoch({start_expr}) >= ?")
                args.append(self.since)
            if self.until is not None:
                clauses.append(f"flujo_epoch({start_expr}) < ?")
                args.append(self.until)
        if self.run_ids:
            clauses.append(f"r.run_id IN ({','.join('?' * len(self.run_ids))})")
            args.extend(self.run_ids)
        return (" AND ".join(clauses) or "1"), args

    def _remaining(self, cursor: tuple[int, str | None]) -> int:
        with self.reader.session() as s:
            where, args = self._where(s)
            selected = f"SELECT r.run_id FROM runs r WHERE {where} AND r.rowid > ?"
            total = s.conn.execute(
                f"SELECT COUNT(*) FROM spans WHERE run_id IN ({selected})",
                (*args, cursor[0]),
            ).fetchone()[0]
            if cursor[1] is not None:
                total += s.conn.execute(
                    "SELECT COUNT(*) FROM spans WHERE run_id = (SELECT run_id FROM runs WHERE rowid = ?)"
                    " AND span_id > ?",
                    (cursor[0], cursor[1]),
                ).fetchone()[0]
        return int(total)

    def _page(self, cursor: tuple[int, str | None]) -> tuple[list[RunInfo], dict[str, list[source.SpanRow]]]:
        """The next runs in rowid order and, in the same short read, the spans of the small ones.

        A page holds at most :data:`RUN_PAGE` runs and about ``4 * chunk`` spans; a run with more than
        ``chunk`` spans (or the run the cursor stopped in) comes alone and is read page by page later.
        """
        rowid, span = cursor
        budget = 4 * self.chunk
        by_run: dict[str, list[source.SpanRow]] = defaultdict(list)
        with self.reader.session() as s:
            where, args = self._where(s)
            low = "r.rowid >= ?" if span is not None else "r.rowid > ?"
            infos = source.runs_with_counts(
                s.conn, flujo_schema(s.schema), s.naive_tz, f"{where} AND {low}", (*args, rowid), RUN_PAGE
            )
            page: list[RunInfo] = []
            total = 0
            for info in infos:
                alone = info.span_count > self.chunk or (span is not None and info.rowid == rowid)
                if alone:
                    if not page:  # read again with the span aggregates (for its clock), spans page by page
                        page = list(
                            source.run_infos(s.conn, flujo_schema(s.schema), s.naive_tz, [info.run_id]).values()
                        )
                    break
                if page and total + info.span_count > budget:
                    break
                page.append(info)
                total += info.span_count
            if page and page[0].clock is None:
                for row in source.spans_of(s.conn, [i.run_id for i in page]):
                    by_run[row[0]].append(row)
                for info in page:
                    info.clock = source.clock_from_rows(s.conn, info, by_run.get(info.run_id, ()))
        return page, by_run

    # --- run --------------------------------------------------------------------------------------
    def run(self, params: str, progress: bool, restart: bool) -> ReplayResult:
        started = time.monotonic()
        if restart:
            self.store.replay_reset(self.key)
        stored, resumed = self.store.replay_progress(self.key, params)
        if stored.done:
            log.info(
                "replay %s already complete (%d spans exported); restart it to send again", self.key, stored.exported
            )
            return self._result(resumed, True, stored.exported, started)
        with self.reader.session() as s:
            if not source.supported(s.schema):
                log.warning("replay: span export not supported by this DB layout (%s)", s.schema.layout)
                return self._result(resumed, True, stored.exported, started, supported=False)
        cursor: tuple[int, str | None] = (stored.cursor_rowid, stored.cursor_span)
        self.position = cursor
        if resumed and (cursor[0] or stored.exported):
            log.info(
                "replay %s resuming after runs rowid %d (%d spans exported before)",
                self.key,
                cursor[0],
                stored.exported,
            )
        self.bar = tqdm(
            total=self._remaining(cursor), disable=not progress, unit="span", desc=f"replay {self.key}", smoothing=0.1
        )
        try:
            while True:
                if self.halt.is_set():
                    raise Stopped()
                page, by_run = self._page(cursor)
                if not page:
                    break
                self._export_page(page, by_run, cursor)
                cursor = (page[-1].rowid, None)
            self._flush()
            self.pipeline.drain()
            self.store.replay_done(self.key)
            complete = True
        except Stopped:
            complete = False
        finally:
            with contextlib.suppress(Stopped):
                self.pipeline.drain()
            self.bar.close()
        return self._result(resumed, complete, stored.exported + self.exported, started)

    def _export_page(
        self, page: list[RunInfo], by_run: dict[str, list[source.SpanRow]], cursor: tuple[int, str | None]
    ) -> None:
        """Runs in rowid order (the committed position is a keyset cursor).  ``cursor``: the run at
        ``cursor[0]`` has its spans up to ``cursor[1]`` exported already."""
        if len(page) == 1 and (
            page[0].span_count > self.chunk or (cursor[1] is not None and page[0].rowid == cursor[0])
        ):
            self._large_run(page[0], cursor[1] if page[0].rowid == cursor[0] else None)
            return
        for info in page:
            encoded, rejected = self.encoder.encode_run(info, by_run.get(info.run_id, ()), _mode(info))
            self._add(info, encoded, rejected)
            self._run_done(info)

    def _large_run(self, info: RunInfo, after: str | None) -> None:
        child_ends: dict[str, object] | None = None
        while True:
            with self.reader.session() as s:
                if child_ends is None:
                    child_ends = source.last_child_ends(s.conn, info.run_id)
                rows = source.span_page(s.conn, info.run_id, after, self.chunk)
            if not rows:
                break
            after = str(rows[-1][1])
            encoded, rejected = self.encoder.encode_run(info, rows, _mode(info), child_ends=child_ends)
            self._add(info, encoded, rejected)
        self._run_done(info)

    def _add(self, info: RunInfo, encoded: list[Encoded], rejected: list[LocalReject]) -> None:
        """Queue the run's spans (in span id order) for export, cutting batches as they fill up."""
        if rejected:
            self._add_mixed(info, encoded, rejected)
            return
        batch = self.batch
        index, total = 0, len(encoded)
        while index < total:
            end = batch.fill(encoded, index)
            if end > index:
                self.position = (info.rowid, encoded[end - 1].span_key)
                index = end
            if index < total or batch.full:
                self._flush()

    def _add_mixed(self, info: RunInfo, encoded: list[Encoded], rejected: list[LocalReject]) -> None:
        items: list[tuple[str, Encoded | LocalReject]] = [(e.span_key, e) for e in encoded]
        items.extend((r.span_key, r) for r in rejected)
        items.sort(key=lambda item: item[0])
        for key, item in items:
            if isinstance(item, LocalReject):
                log.error(
                    "replay: span %s of run %s dead-lettered, unusable row (%s): %s",
                    key,
                    item.run_id,
                    item.reason,
                    item.detail,
                )
                self.stats.dead_lettered(item.reason, 1)
                self.local_dead.append(DeadLetter(item.run_id, key, item.reason, item.detail))
            else:
                if not self.batch.fits(item):
                    self._flush()
                self.batch.add(item)
            self.position = (info.rowid, key)
            if self.batch.full:
                self._flush()

    def _run_done(self, info: RunInfo) -> None:
        self.position = (info.rowid, None)
        self.runs += 1

    def _flush(self) -> None:
        """Hand the batch to the pipeline; its commit records the position reached when it was cut."""
        spans = self.batch.take()
        local_dead = self.local_dead
        self.local_dead = []
        position = self.position
        handled = len(spans) + len(local_dead)

        def commit(delivered: Delivered) -> None:
            dead = local_dead + delivered.dead
            self.store.replay_commit(self.key, position[0], position[1], delivered.accepted, dead)
            self.exported += delivered.accepted
            self.rejected += delivered.rejected
            self.dead += len(dead)
            if self.bar is not None:
                self.bar.update(handled)

        self.pipeline.submit(spans, commit)


def _mode(info: RunInfo) -> Mode:
    return Mode.FINAL if info.finished else Mode.ABANDON
