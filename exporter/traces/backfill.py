"""``replay``: resumable backfill of every span of a DB, for any engine with spans.

The engine of the file decides how: an engine whose span source brings its own backfill (Flujo's,
:mod:`exporter.engines.flujo.traces.backfill`, with a position inside a run) runs it; any other is
replayed here over its :class:`~exporter.traces.source.SpanSource`: trace units in cursor order,
filtered by their start (``since`` inclusive, ``until`` exclusive) and/or unit ids, each unit exported
whole (finished ones as FINAL, others as ABANDON).  After each batch the collector accepted, the
cursor past the last unit completely handed to a batch is committed in the state file (``replays``,
under a key derived from the DB and the filters): a rerun continues after it (re-sending at most the
units of the batches in flight, with the same ids) and a finished replay is not repeated
(``restart=True`` starts it over).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from tqdm import tqdm

from exporter.engines.base import EngineSchema
from exporter.reader import Reader
from exporter.traces import store
from exporter.traces.batching import Batch
from exporter.traces.config import TracesConfig
from exporter.traces.delivery import DeadLetter, Delivered, Deliverer, Pipeline
from exporter.traces.encoded import Mode
from exporter.traces.metrics import TraceStats
from exporter.traces.source import SpanSource, UnitInfo, Work
from exporter.traces.transport import Stopped, Transport, make_transport

log = logging.getLogger("exporter.traces")
UNIT_PAGE = 256


@dataclass(frozen=True)
class ReplayResult:
    key: str
    resumed: bool  # an earlier invocation of the same replay had made progress
    complete: bool  # every selected span has been handled (False: interrupted)
    runs: int  # trace units finished in this invocation
    spans_exported: int  # accepted by the collector in this invocation
    spans_dead_lettered: int
    spans_rejected: int  # partial-success rejections
    total_exported: int  # over every invocation of this replay
    seconds: float
    supported: bool = True


def replay_key(
    db: Path | str, since: datetime | None, until: datetime | None, run_ids: Sequence[str]
) -> tuple[str, str]:
    """``db``: a file's path, or a database's URL without its secrets (``PostgresReader.path``)."""
    params = {
        "db": db if isinstance(db, str) else str(db.resolve()),
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "run_ids": sorted(run_ids),
    }
    text = json.dumps(params, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16], text


@dataclass(frozen=True)
class BackfillRequest:
    """One replay: what to export, and the state store and transport :func:`replay` opened for it."""

    config: TracesConfig
    reader: Reader
    store: store.StateStore
    transport: Transport
    key: str
    since: datetime | None
    until: datetime | None
    run_ids: list[str]
    stats: TraceStats
    halt: threading.Event


class BackfillJob:
    """What every backfill holds: its request's store, window and stop, and the delivery pipeline
    wrapping every batch in ``engine``'s envelope."""

    def __init__(self, request: BackfillRequest, engine: str) -> None:
        # Imported here: the tailer module pulls in the transports.
        from exporter.traces.tailer import build_envelope

        self.config = request.config
        self.reader = request.reader
        self.store = request.store
        self.key = request.key
        self.since = request.since.timestamp() if request.since else None
        self.until = request.until.timestamp() if request.until else None
        self.stats = request.stats
        self.halt = request.halt
        envelope = build_envelope(request.config, engine)
        self.deliverer = Deliverer(request.transport, envelope, request.config.retry, request.stats)
        self.pipeline = Pipeline(self.deliverer, self.halt)
        self.batch = Batch(request.config.batch_size, request.config.max_batch_bytes, envelope.overhead())
        self.chunk = max(request.config.batch_size, 256)
        self.exported = self.dead = self.rejected = self.runs = 0

    def _result(
        self, resumed: bool, complete: bool, total: int, started: float, *, supported: bool = True
    ) -> ReplayResult:
        return ReplayResult(
            key=self.key,
            resumed=resumed,
            complete=complete,
            runs=self.runs,
            spans_exported=self.exported,
            spans_dead_lettered=self.dead,
            spans_rejected=self.rejected,
            total_exported=total,
            seconds=time.monotonic() - started,
            supported=supported,
        )


class Backfill(Protocol):
    """One replay over an open state store and transport."""

    def run(self, params: str, progress: bool, restart: bool) -> ReplayResult: ...


@runtime_checkable
class OwnReplay(Protocol):
    """A span source with a backfill of its own (the same guarantees as :func:`replay`) for some layouts."""

    def replays_itself(self, schema: EngineSchema) -> bool:
        """Whether this layout is replayed by :meth:`backfill` (else unit by unit, like any span source)."""

    def backfill(self, request: BackfillRequest) -> Backfill: ...


def replay(
    config: TracesConfig,
    reader: Reader,
    state_path: Path,
    since: datetime | None = None,
    until: datetime | None = None,
    run_id: str | Sequence[str] | None = None,
    progress: bool = False,
    *,
    halt: threading.Event | None = None,
    transport: Transport | None = None,
    restart: bool = False,
    stats: TraceStats | None = None,
) -> ReplayResult:
    """Export the selected units' spans; resumable (see the module docstring).  Blocks until done or ``halt``."""
    # Imported here: the tailer module pulls in the transports.
    from exporter.traces.tailer import span_source

    store.check_separate(state_path, reader.path)
    ids = [run_id] if isinstance(run_id, str) else list(run_id or ())
    with reader.session() as s:
        schema = s.schema
    spans = span_source(schema, config)
    key, params = replay_key(reader.path, since, until, ids)
    # A backfill of its own checks the layout itself (its result then reports what was resumed).
    own = isinstance(spans, OwnReplay) and spans.replays_itself(schema)
    if not own and (spans is None or not spans.supported(schema)):
        log.warning("replay: span export not supported by this DB layout (%s)", schema.layout)
        return ReplayResult(key, False, True, 0, 0, 0, 0, 0, 0.0, supported=False)
    st = store.StateStore(state_path, max_dead_letters=config.max_dead_letters)
    own_transport = transport is None
    transport = transport or make_transport(config)
    try:
        request = BackfillRequest(
            config, reader, st, transport, key, since, until, ids, stats or TraceStats(), halt or threading.Event()
        )
        job: Backfill
        if isinstance(spans, OwnReplay) and own:
            job = spans.backfill(request)
        else:
            assert spans is not None  # checked above
            job = _Replay(request, spans, schema.engine)
        return job.run(params, progress, restart)
    finally:
        if own_transport:
            transport.close()
        st.close()


class _Replay(BackfillJob):
    """Unit by unit, for a span source without a backfill of its own."""

    def __init__(self, request: BackfillRequest, spans: SpanSource, engine: str) -> None:
        super().__init__(request, engine)
        self.spans = spans
        self.run_ids = set(request.run_ids)
        self.local_dead: list[DeadLetter] = []
        self.position: str | None = None  # the cursor past the last unit completely in batches
        self.bar: Any = None

    def _selected(self, info: UnitInfo) -> bool:
        if self.run_ids and info.run_id not in self.run_ids:
            return False
        if self.since is not None and (info.start is None or info.start < self.since):
            return False
        return self.until is None or (info.start is not None and info.start < self.until)

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
        cursor = stored.cursor_span or None
        self.position = cursor
        if resumed and cursor:
            log.info("replay %s resuming after %s (%d spans exported before)", self.key, cursor, stored.exported)
        with self.reader.session() as s:
            remaining = self.spans.count_after(s, cursor)[1]
        self.bar = tqdm(total=remaining, disable=not progress, unit="span", desc=f"replay {self.key}", smoothing=0.1)
        try:
            while True:
                if self.halt.is_set():
                    raise Stopped()
                with self.reader.session() as s:
                    found = self.spans.discover(s, cursor, UNIT_PAGE)
                    infos = self.spans.infos(s, [f.unit_id for f in found])
                if not found:
                    break
                for unit in found:
                    info = infos.get(unit.unit_id)
                    if info is not None and self._selected(info):
                        self._export(info)
                        self.runs += 1
                    elif self.bar is not None:
                        self.bar.update(unit.spans)
                    self.position = unit.cursor
                cursor = found[-1].cursor
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

    def _export(self, info: UnitInfo) -> None:
        mode = Mode.FINAL if info.finished else Mode.ABANDON
        for piece in self.spans.encode(self.reader, [Work(info, mode, set())], self.chunk):
            for reject in piece.rejected:
                log.error(
                    "replay: span %s of %s dead-lettered, unusable row (%s): %s",
                    reject.span_key,
                    reject.run_id,
                    reject.reason,
                    reject.detail,
                )
                self.stats.dead_lettered(reject.reason, 1)
                self.local_dead.append(DeadLetter(reject.run_id, reject.span_key, reject.reason, reject.detail))
            for span in piece.encoded:
                # A full batch is cut when the next span comes, not at once: a batch that ends a unit
                # then commits the cursor past that unit, and a rerun does not send the unit again.
                if self.batch.full or not self.batch.fits(span):
                    self._flush()
                self.batch.add(span)

    def _flush(self) -> None:
        """Hand the batch to the pipeline; its commit records the cursor reached when it was cut."""
        spans = self.batch.take()
        local_dead = self.local_dead
        self.local_dead = []
        position = self.position
        handled = len(spans) + len(local_dead)

        def commit(delivered: Delivered) -> None:
            dead = local_dead + delivered.dead
            self.store.replay_commit(self.key, 0, position, delivered.accepted, dead)
            self.exported += delivered.accepted
            self.rejected += delivered.rejected
            self.dead += len(dead)
            if self.bar is not None:
                self.bar.update(handled)

        self.pipeline.submit(spans, commit)
