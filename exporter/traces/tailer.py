"""The daemon component that follows a DB and exports each trace unit's spans once it is ready.

The engine's span source (:mod:`exporter.traces.source`) says what a unit is (a Flujo run, a pynenc
invocation tree), how units are discovered and read; below, "run" is Flujo's unit, and everything
said of its span signature holds for any engine's.  One cycle (every ``poll_interval``):

1. *Discover*: units after the engine's cursor (Flujo: ``runs.rowid`` above the high-water mark)
   are added to ``pending`` (state file) with the cursor, in one transaction.  If the unit recorded at
   the cursor is no longer there (the newest runs were deleted and rowids reused, or the DB was
   VACUUMed), the cursor is moved back: at worst units are exported twice, never skipped.
2. *Decide*, per pending run, from one read of its run rows and the span aggregates:
   finished, and seen so (by this exporter's clock) with an unchanged span signature for
   ``settle_period`` -> FINAL (every span; open spans closed at the run's end, flagged); in progress
   for more than ``abandon_after`` -> ABANDON (the same, open spans closed at their last child's end;
   then the run is no longer followed); in progress for more than ``grace_period`` -> PARTIAL (spans
   with an end time only; the run stays pending); else wait.  The span signature is (count, open
   count, latest save, latest end); a PARTIAL run is re-read only when it changed.
3. *Export* in batches of at most ``batch_size`` spans / ``max_batch_bytes``; the spans of a pending
   run already exported (``exported_spans``) are skipped, so flujo's delete-and-reinsert of all the
   run's spans on every save neither loses nor repeats a span.  After the collector accepted a batch,
   one transaction records it: exported span ids of runs still pending, completed runs removed,
   dead letters, and (at the end of the cycle) the watermark.

Reads use short read transactions; at most one group of runs (about ``batch_size`` spans) and one
batch are in memory, whatever the backlog: during a collector outage the cycle blocks in the retry
loop with that one batch, and the runs behind it wait in the DB.

The state file must work for anything to be sent.  When it cannot be opened or written (corrupt, a
foreign DB, unwritable, disk full), the cycle stops, :meth:`SpanTailer.health` reports it, the
metrics say so (``span_export_success`` 0, ``span_state_errors_total{reason}``) and one line is
logged per change.  A batch the collector accepted but whose record failed to commit is kept in
memory and committed before anything else is sent: nothing is re-sent while the disk is full (a
restart meanwhile re-sends that one batch).  A state file deleted while running is noticed at the
next cycle and rewritten from the still-open copy, so its progress survives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.registry import Collector

from exporter import __version__
from exporter.clock import Clock, system_clock
from exporter.components import Health
from exporter.engines import engine as engine_named
from exporter.reader import DatabaseUnavailable, Reader
from exporter.redact import redact_url
from exporter.traces import store, wire
from exporter.traces.batching import Batch
from exporter.traces.config import TracesConfig, resolve_endpoint
from exporter.traces.delivery import DeadLetter, Deliverer
from exporter.traces.encoded import Encoded, LocalReject, Mode
from exporter.traces.ids import IdScheme
from exporter.traces.metrics import TraceStats, failure_reasons
from exporter.traces.source import Limits, SpanSource, UnitInfo, Work
from exporter.traces.transport import Stopped, Transport, make_transport

log = logging.getLogger("exporter.traces")

SCOPE_NAME = "flujo-state-exporter"
DISCOVERY_PAGE = 1000
PENDING_PAGE = 256
BACKLOG_INTERVAL_S = 15.0


SOURCE_ATTRIBUTE = "state_exporter.source"


def build_envelope(config: TracesConfig, engine: str) -> wire.Envelope:
    """One shared resource (service.name, by default the engine's name, the source's namespace when
    ``id_namespace`` is set, and the configured attributes) and our instrumentation scope."""
    resource_attrs: dict[str, wire.AttrValue] = {"service.name": config.service_name or engine}
    if config.id_namespace is not None:
        resource_attrs[SOURCE_ATTRIBUTE] = config.id_namespace
    for key, value in config.resource_attributes.items():
        if key not in ("service.name", SOURCE_ATTRIBUTE):
            resource_attrs[key] = value
    return wire.Envelope(wire.resource(resource_attrs), wire.scope(SCOPE_NAME, __version__))


def limits_of(config: TracesConfig) -> Limits:
    """What span sources are built with; the one place ``id_namespace`` becomes their id scheme."""
    return Limits(config.limits.attribute_count, config.limits.attribute_value_length, IdScheme(config.id_namespace))


def span_source(schema: object, config: TracesConfig) -> SpanSource | None:
    """The span source of the engine that wrote the file (``None``: the engine has no spans)."""
    found = engine_named(str(getattr(schema, "engine", ""))).spans
    return None if found is None else found(limits_of(config))


@dataclass
class _Track:
    """A run whose spans are being added to batches."""

    mode: Mode
    signature: str
    closed: bool = False  # every span of the run has been handed to the batch
    unsent_keys: list[str] = field(default_factory=list)  # keys in the current batch or rejected locally


@dataclass
class CycleReport:
    discovered: int = 0
    exported: int = 0
    dead_lettered: int = 0
    runs_completed: int = 0
    interrupted: bool = False
    supported: bool = True


# State-file failures after which the file is closed and opened again next cycle: a successful
# open shows they are over.  (A full disk shows only when a commit works again.)
_FIXED_BY_REOPENING = ("corrupt", "foreign", "unwritable", "io")


class SpanTailer:
    """Follows the DB and exports spans; ``run()`` for the daemon, ``run_once()`` for tests and tools."""

    def __init__(
        self,
        config: TracesConfig,
        reader: Reader,
        state_path: Path,
        *,
        clock: Clock = system_clock,
        transport: Transport | None = None,
    ) -> None:
        if isinstance(reader.path, Path):  # a Postgres URL is never a file to collide with
            store.check_separate(state_path, reader.path)
        self.config = config
        self.reader = reader
        self.state_path = state_path
        self.clock = clock
        self.stats = TraceStats(failure_reasons(config.protocol))
        self._transport = transport
        self._store: store.StateStore | None = None
        self._deliverer: Deliverer | None = None
        self._sources: dict[str, SpanSource | None] = {}  # per engine, made on first use
        self._spans: SpanSource | None = None  # the current file's
        self._envelope: wire.Envelope | None = None  # once the engine of the file is known
        self._lock = threading.Lock()  # one cycle at a time
        self._layout_reported: str | None = None
        self._problem_reported: str | None = None
        self._halt = threading.Event()
        self._started_at = clock().timestamp()
        self._state_problem: store.StateError | None = None
        self._unsaved: store.Commit | None = None  # accepted by the collector, not recorded yet
        self._last_hwm: str | None = None
        self._error_reported: str | None = None

    # --- public API ---------------------------------------------------------------------------
    def collector(self) -> Collector:
        return self.stats

    def health(self) -> Health:
        """Not ok while the state file cannot be used (nothing is exported meanwhile)."""
        problem = self._state_problem
        if problem is None:
            return Health(True, "ok")
        return Health(False, f"span export stopped: state file {problem.reason.replace('_', ' ')}")

    async def run(self, stop: asyncio.Event) -> None:
        """Export until ``stop`` is set; the blocking work runs in worker threads."""
        self._halt = threading.Event()
        loop_stop = asyncio.create_task(stop.wait())
        backlog_task = asyncio.create_task(self._backlog_loop(stop))
        log.info(
            "traces: exporting spans of %s to %s (state file %s)", self.reader.path, self._describe(), self.state_path
        )
        try:
            while not stop.is_set():
                cycle = asyncio.create_task(asyncio.to_thread(self._cycle_logged))
                done, _ = await asyncio.wait({cycle, loop_stop}, return_when=asyncio.FIRST_COMPLETED)
                if cycle not in done:
                    self._halt.set()
                    self._abort()
                    with contextlib.suppress(Exception):
                        await cycle
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.config.poll_interval.total_seconds())
        finally:
            self._halt.set()
            loop_stop.cancel()
            backlog_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await backlog_task
            await asyncio.to_thread(self.close)

    def run_once(self, halt: threading.Event | None = None) -> CycleReport:
        """One complete cycle (blocking): discover, decide, export, commit."""
        with self._lock:
            return self._cycle(halt or threading.Event())

    def exported_run_ids(self, run_ids: Iterable[str]) -> set[str]:
        """Which of ``run_ids`` have nothing left to export (safe from any thread).

        True for a run whose spans were all exported (or dead-lettered), and for a run id with no
        ``runs`` row (it has no spans to export).  False for runs still pending or not discovered yet.
        Reads the state file and the Flujo DB with their own connections.
        """
        ids = list(dict.fromkeys(run_ids))
        if not ids:
            return set()
        hwm, bound = store.read_exported_state(self.state_path)
        with self.reader.session() as s:
            spans = self._source(s.schema)
            if spans is None or not spans.supported(s.schema):
                return set(ids)
            if bound is not None and bound != spans.source_id(self._db_path()):
                hwm = None
            existing, behind = spans.behind(s, hwm, ids)
        pending = store.pending_among(self.state_path, [i for i in ids if i in existing])
        return {i for i in ids if i not in existing} | (behind - pending)

    def backlog(self) -> tuple[int, int]:
        """(spans, runs) not exported yet, counted now from the state file and the DB (any thread).

        With an unreadable state file, everything above the last known discovery mark counts."""
        with self.reader.session() as s:
            source = self._source(s.schema)
            if source is None or not source.supported(s.schema):
                return 0, 0
        spans = runs = 0
        try:
            hwm, _ = store.read_exported_state(self.state_path)
            for page in store.pending_pages(self.state_path):
                with self.reader.session() as s:
                    counts = source.span_counts(s, [run_id for run_id, _ in page])
                runs += len(page)
                spans += sum(max(counts.get(run_id, 0) - exported, 0) for run_id, exported in page)
        except store.StateError:
            hwm, spans, runs = self._last_hwm, 0, 0
        with self.reader.session() as s:
            new_runs, new_spans = source.count_after(s, hwm)
        return spans + new_spans, runs + new_runs

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
            self._deliverer = None
        if self._store is not None:
            self._store.close()
            self._store = None

    # --- internals ----------------------------------------------------------------------------
    def _describe(self) -> str:
        try:
            endpoint = resolve_endpoint(self.config)
        except ValueError as exc:
            return f"an invalid endpoint ({exc})"
        return f"{endpoint.protocol} {redact_url(endpoint.target)}"

    def _get_transport(self) -> Transport:
        if self._transport is None:
            self._transport = make_transport(self.config)
        return self._transport

    def _get_store(self) -> store.StateStore:
        if self._store is not None and self._store.replaced():
            self._replace_store(self._store)
        if self._store is None:
            opened = store.StateStore(self.state_path, max_dead_letters=self.config.max_dead_letters)
            try:
                if opened.bind_source(self._source_id()):
                    log.warning(
                        "traces: state file %s belonged to another DB; starting over for %s",
                        self.state_path,
                        self.reader.path,
                    )
                self.stats.set_watermark(opened.watermark())
            except store.StateError:
                opened.close()
                raise
            self._store = opened
            if self._state_problem is not None and self._state_problem.reason in _FIXED_BY_REOPENING:
                # Opened, checked and written (bind_source): usable again, whether or not the
                # collector takes spans right now (a down receiver is not a state-file problem).
                self._state_works()
        return self._store

    def _replace_store(self, current: store.StateStore) -> None:
        """The state file was deleted (rewrite it from the open copy) or swapped (use the new one)."""
        if self.state_path.exists():
            log.warning("traces: state file %s was replaced by another file while running; using it", self.state_path)
            current.close()
            self._store = None
            return
        self.stats.state_replaced()
        current.rebuild()
        log.warning(
            "traces: state file %s was deleted while running; recreated it with the progress so far", self.state_path
        )

    def _state_failed(self, problem: store.StateError) -> None:
        """Stop exporting until the state file works; one log line per new problem."""
        self.stats.state_failed(problem.reason)
        if self.stats.watermark is None:
            # Nothing is known to be exported since this process started: let the watermark alert fire.
            self.stats.set_watermark(self._started_at)
        if self._state_problem is None or self._state_problem.reason != problem.reason:
            log.error(
                "traces: span export stopped, cannot use the state file (%s): %s", problem.reason, problem.message
            )
        self._state_problem = problem
        if self._store is not None and problem.reason in _FIXED_BY_REOPENING:
            self._store.close()  # opened again (and checked again) next cycle
            self._store = None

    def _state_works(self) -> None:
        if self._state_problem is not None:
            log.warning("traces: the state file %s works again; span export resumes", self.state_path)
            self._state_problem = None
            self.stats.state_recovered()

    def _save_unsaved(self, st: store.StateStore) -> None:
        """Record the batch the collector accepted last time before anything else is sent."""
        unsaved = self._unsaved
        if unsaved is None:
            return
        st.commit(unsaved)
        self._unsaved = None
        if unsaved.watermark is not None:
            self.stats.set_watermark(unsaved.watermark)

    def _source(self, schema: object) -> SpanSource | None:
        name = str(getattr(schema, "engine", ""))
        envelope = build_envelope(self.config, name)
        if envelope != self._envelope:  # the first file, or another engine's: its own service.name
            self._envelope, self._deliverer = envelope, None
        if name not in self._sources:
            self._sources[name] = span_source(schema, self.config)
        return self._sources[name]

    @property
    def spans(self) -> SpanSource:
        """The span source of the file the current cycle exports (set at the start of each cycle)."""
        if self._spans is None:
            raise RuntimeError("no span source: the DB's engine has no spans")
        return self._spans

    @property
    def envelope(self) -> wire.Envelope:
        """The request envelope every batch is wrapped in (its size counts against the batch limit)."""
        if self._envelope is None:
            raise RuntimeError("no envelope before the DB's engine is known")
        return self._envelope

    def deliverer(self) -> Deliverer:
        """The deliverer to the configured receiver, created on first use."""
        if self._deliverer is None:
            self._deliverer = Deliverer(self._get_transport(), self.envelope, self.config.retry, self.stats)
        return self._deliverer

    def _db_path(self) -> str:
        """What the state file is bound to: the DB file's real path, or a database's redacted URL."""
        path = self.reader.path
        return str(path.resolve()) if isinstance(path, Path) else path

    def _source_id(self) -> str:
        return self.spans.source_id(self._db_path())

    def _abort(self) -> None:
        transport = self._transport
        if transport is not None:
            transport.abort()

    def _cycle_logged(self) -> None:
        try:
            with self._lock:
                self._cycle(self._halt)
            self._error_reported = None
        except Exception as exc:
            text = f"{type(exc).__name__}: {exc}"
            if text != self._error_reported:  # one traceback per distinct error, not one per poll
                self._error_reported = text
                log.exception("traces: export cycle failed; retrying every %s", self.config.poll_interval)
            else:
                log.debug("traces: export cycle failed again: %s", text)

    async def _backlog_loop(self, stop: asyncio.Event) -> None:
        interval = max(BACKLOG_INTERVAL_S, self.config.poll_interval.total_seconds())
        while not stop.is_set():
            try:
                spans, runs = await asyncio.to_thread(self.backlog)
                self.stats.set_backlog(spans, runs)
            except DatabaseUnavailable:
                pass
            except Exception:
                log.exception("traces: counting the backlog failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    def _cycle(self, halt: threading.Event) -> CycleReport:
        report = CycleReport()
        now = self.clock().timestamp()
        try:
            with self.reader.session() as s:
                schema = s.schema
            spans = self._source(schema)
            if spans is not self._spans and self._store is not None:
                self._store.close()  # another engine's file at the path: bound (and checked) again
                self._store = None
            self._spans = spans
            if spans is None or not spans.supported(schema):
                report.supported = False
                self.stats.set_supported(False)
                if self._layout_reported != schema.layout:
                    self._layout_reported = schema.layout
                    log.warning(
                        "traces: span export not supported by this DB layout (%s %s: no runs/spans tables,"
                        " or no history to rebuild them from); nothing to export",
                        getattr(schema, "engine", "?"),
                        schema.layout,
                    )
                return report
            self.stats.set_supported(True)
            self._layout_reported = None
            self._save_unsaved(self._get_store())
            report.discovered = self._discover(now)
            self._process(now, halt, report)
            self._state_works()  # only after a whole cycle: no "works again" line between two failures
            self._problem_reported = None
        except store.StateError as exc:
            self._state_failed(exc)
            report.interrupted = True
        except DatabaseUnavailable as exc:
            if self._problem_reported != exc.message:
                self._problem_reported = exc.message
                log.warning("traces: cannot read the DB, will retry: %s", exc.message)
            report.interrupted = True
        except Stopped:
            report.interrupted = True
        return report

    # --- discovery ----------------------------------------------------------------------------
    def _discover(self, now: float) -> int:
        st = self._get_store()
        spans = self.spans
        hwm = st.cursor()
        found = 0
        if hwm is None:
            if self.config.start_at == "end":
                with self.reader.session() as s:
                    end, unfinished = spans.at_end(s)
                st.add_pending([(f.position, f.unit_id, f.spans) for f in unfinished], end, "", now)
                self._last_hwm = end
                log.info("traces: starting at the end of the DB (cursor %s, %d in progress)", end, len(unfinished))
                return len(unfinished)
        else:
            hwm = self._check_hwm(st, hwm)
        while True:
            with self.reader.session() as s:
                rows = spans.discover(s, hwm, DISCOVERY_PAGE)
            if not rows:
                return found
            hwm = rows[-1].cursor
            st.add_pending([(f.position, f.unit_id, f.spans) for f in rows], hwm, rows[-1].unit_id, now)
            self._last_hwm = hwm
            found += len(rows)
            if len(rows) < DISCOVERY_PAGE:
                return found

    def _check_hwm(self, st: store.StateStore, hwm: str) -> str:
        """Move the cursor back when the unit recorded at it moved or vanished (rowid reuse, VACUUM)."""
        self._last_hwm = hwm
        expected = st.meta("hwm_run_id") or ""
        with self.reader.session() as s:
            moved = self.spans.check_cursor(s, hwm, expected)
        if moved is None:
            return hwm
        log.warning(
            "traces: rowids changed under the discovery cursor (%s -> %s); re-scanning from there", hwm, moved[0]
        )
        st.move_cursor(*moved)
        return moved[0]

    # --- decide & export ----------------------------------------------------------------------
    def _decide(self, p: store.PendingRun, info: UnitInfo, now: float) -> tuple[Mode | None, float | None, bool]:
        """(mode, or None to wait; when the run finished, for finished runs; whether to record that the
        run is seen finished with its current span signature now).

        A finished run is exported once this exporter has seen it finished, with the same stored spans,
        for ``settle_period`` (by its own clock: flujo saves the spans after the final status, and a
        writer's clock may be off).  0 exports it at first sight.
        """
        if info.finished:
            settle = self.config.settle_period.total_seconds()
            fresh = p.finished_seen is None or p.finished_signature != info.signature
            seen = now if fresh else p.finished_seen
            finished_at = info.end if info.end is not None else seen
            if now - seen >= settle:  # type: ignore[operator]
                return Mode.FINAL, finished_at, fresh
            return None, finished_at, fresh
        age = now - (info.start if info.start is not None else p.first_seen)
        if age >= self.config.abandon_after.total_seconds():
            return Mode.ABANDON, None, False
        if age >= self.config.grace_period.total_seconds():
            return Mode.PARTIAL, None, False
        return None, None, False

    def _process(self, now: float, halt: threading.Event, report: CycleReport) -> None:
        st = self._get_store()
        run = _Exporter(self, st, halt, report)
        try:
            self._export_pending(now, halt, st, run)
        except store.StateError:
            self._unsaved = run.unsaved  # committed first thing next cycle; nothing is sent before
            raise

    def _export_pending(self, now: float, halt: threading.Event, st: store.StateStore, run: _Exporter) -> None:
        oldest_waiting: float | None = None
        after: tuple[int, str] | None = None
        while True:
            if halt.is_set():
                raise Stopped()
            page = st.pending_page(after, PENDING_PAGE)
            if not page:
                break
            after = (page[-1].rowid, page[-1].run_id)
            work: list[tuple[store.PendingRun, UnitInfo, Mode]] = []
            vanished: list[str] = []
            finished_seen: list[tuple[str, float, str]] = []
            counts: list[tuple[str, int]] = []
            with self.reader.session() as s:
                infos = self.spans.infos(s, [p.run_id for p in page])
            for p in page:
                info = infos.get(p.run_id)
                if info is None:
                    vanished.append(p.run_id)
                    if p.spans > p.exported:
                        self.stats.run_vanished()
                        log.warning(
                            "traces: run %s was deleted from the DB before %d of its spans were exported",
                            p.run_id,
                            p.spans - p.exported,
                        )
                    continue
                if info.span_count != p.spans:
                    counts.append((p.run_id, info.span_count))
                mode, finished_at, fresh = self._decide(p, info, now)
                if fresh:
                    finished_seen.append((p.run_id, now, info.signature))
                if mode is None:
                    if finished_at is not None:
                        oldest_waiting = finished_at if oldest_waiting is None else min(oldest_waiting, finished_at)
                    continue
                if mode is Mode.PARTIAL and p.signature == info.signature:
                    continue
                work.append((p, info, mode))
            if vanished or finished_seen or counts:
                st.update_pending(vanished=vanished, finished_seen=finished_seen, counts=counts)
            run.export(work)
        watermark = now if oldest_waiting is None else min(now, oldest_waiting)
        run.finish(watermark)
        self.stats.set_watermark(st.watermark())
        with contextlib.suppress(DatabaseUnavailable):
            spans, runs = self.backlog()
            self.stats.set_backlog(spans, runs)


class _Exporter:
    """Batches the spans of the runs decided in one cycle and commits after each accepted batch."""

    def __init__(self, tailer: SpanTailer, st: store.StateStore, halt: threading.Event, report: CycleReport) -> None:
        self.tailer = tailer
        self.store = st
        self.halt = halt
        self.report = report
        config = tailer.config
        self.chunk = max(config.batch_size, 256)
        self.batch = Batch(config.batch_size, config.max_batch_bytes, tailer.envelope.overhead())
        self.tracks: dict[str, _Track] = {}
        self.local_dead: list[DeadLetter] = []
        self.unsaved: store.Commit | None = None  # what the collector accepted but could not be recorded

    def export(self, work: list[tuple[store.PendingRun, UnitInfo, Mode]]) -> None:
        units = [
            Work(info, mode, self.store.exported_keys(info.run_id) if p.exported else set()) for p, info, mode in work
        ]
        modes = {w.info.run_id: w.mode for w in units}
        for piece in self.tailer.spans.encode(self.tailer.reader, units, self.chunk):
            track = self.tracks.get(piece.info.run_id)
            if track is None or track.closed:
                track = _Track(modes[piece.info.run_id], piece.info.signature)
                self.tracks[piece.info.run_id] = track
            self._add(track, piece.encoded, piece.rejected)
            if piece.last:
                self._close(piece.info.run_id, track)

    def _add(self, track: _Track, encoded: list[Encoded], rejected: list[LocalReject]) -> None:
        for reject in rejected:
            log.error(
                "traces: span %s of run %s dead-lettered, unusable row (%s): %s",
                reject.span_key,
                reject.run_id,
                reject.reason,
                reject.detail,
            )
            self.tailer.stats.dead_lettered(reject.reason, 1)
            self.local_dead.append(DeadLetter(reject.run_id, reject.span_key, reject.reason, reject.detail))
            track.unsent_keys.append(reject.span_key)
        for span in encoded:
            if not self.batch.fits(span):
                self._flush()
            self.batch.add(span)
            track.unsent_keys.append(span.span_key)
            if self.batch.full:
                self._flush()

    @staticmethod
    def _close(run_id: str, track: _Track) -> None:
        track.closed = True  # committed with the next accepted batch (or at the end of the cycle)

    def _flush(self) -> None:
        spans = self.batch.take()
        dead: list[DeadLetter] = []
        if spans:
            delivered = self.tailer.deliverer().deliver(spans, self.halt)
            dead = delivered.dead
            self.report.exported += delivered.accepted
        dead = self.local_dead + dead
        self.local_dead = []
        change = store.Commit(exported_keys=[], completed_runs=[], partial_runs=[], dead=dead)
        for run_id, track in list(self.tracks.items()):
            handled = len(track.unsent_keys)
            if track.closed and track.mode is not Mode.PARTIAL:
                change.completed_runs.append(run_id)
                del self.tracks[run_id]
                continue
            change.exported_keys.extend((run_id, key) for key in track.unsent_keys)
            if track.closed:
                change.partial_runs.append((run_id, track.signature, handled))
                del self.tracks[run_id]
            elif handled:
                change.partial_runs.append((run_id, "", handled))
            track.unsent_keys = []
        self.report.dead_lettered += len(dead)
        self.report.runs_completed += len(change.completed_runs)
        if change.exported_keys or change.completed_runs or change.partial_runs or change.dead:
            self._commit(change)

    def _commit(self, change: store.Commit) -> None:
        try:
            self.store.commit(change)
        except store.StateError:
            self.unsaved = change
            raise

    def finish(self, watermark: float) -> None:
        self._flush()
        self._commit(store.Commit(exported_keys=[], completed_runs=[], partial_runs=[], dead=[], watermark=watermark))
