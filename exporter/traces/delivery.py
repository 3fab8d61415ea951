"""Getting one batch to the collector: unbounded retry with backoff, splitting of rejected batches.

* A retryable failure is retried forever, waiting ``uniform(0, min(max_backoff, initial * 2**n))``
  ("full jitter") between attempts, or the server's ``Retry-After`` when longer: the receiver's
  ``Retry-After`` is honoured even beyond ``max_backoff``, up to :data:`MAX_RETRY_AFTER_S` (5 minutes;
  a longer value is capped so a wrong header cannot stall the export for hours).  Only this batch is
  held in memory meanwhile; the caller does not read further while :meth:`Deliverer.deliver` blocks.
* A batch refused as malformed (or too large) is only blamed on its content when the receiver accepts
  an empty export request (a *probe*) right after.  If the probe is refused too, the receiver is
  failing as a whole (a proxy or collector answering 400 for a while): the batch is retried with
  backoff like any retryable failure, nothing is split or dead-lettered.  When the probe is accepted,
  the batch is split in halves, each sent on its own, recursively; a single span still refused (with
  an accepted probe after it) is sent alone once more, and refused again it is dead-lettered
  (returned to the caller, who records and counts it) instead of being retried forever.
* :class:`~exporter.traces.transport.Stopped` propagates when the component stops: the batch was not
  (completely) delivered, the caller commits nothing and the batch is sent again after a restart.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

from exporter.redact import redact_text
from exporter.traces.config import RetryConfig
from exporter.traces.encoded import Encoded
from exporter.traces.metrics import TraceStats
from exporter.traces.transport import Kind, Outcome, Stopped, Transport
from exporter.traces.wire import Envelope

log = logging.getLogger("exporter.traces")
MAX_RETRY_AFTER_S = 300.0


@dataclass(frozen=True, slots=True)
class DeadLetter:
    run_id: str
    span_key: str
    reason: str
    detail: str


@dataclass
class Delivered:
    accepted: int = 0
    rejected: int = 0  # counted by the collector in a partial success
    dead: list[DeadLetter] = field(default_factory=list)


class Deliverer:
    def __init__(
        self,
        transport: Transport,
        envelope: Envelope,
        retry: RetryConfig,
        stats: TraceStats,
        *,
        rng: random.Random | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.transport = transport
        self.envelope = envelope
        self.initial = retry.initial_backoff.total_seconds()
        self.cap = retry.max_backoff.total_seconds()
        self.stats = stats
        self._rng = rng or random.Random()
        self._monotonic = monotonic
        self._failing_since: float | None = None
        self._attempts = 0

    def deliver(self, spans: Sequence[Encoded], halt: threading.Event) -> Delivered:
        result = Delivered()
        stack: list[Sequence[Encoded]] = [spans]
        while stack:
            part = stack.pop()
            outcome = self._send(part, halt)
            if outcome.kind is not Kind.OK and not self._receiver_accepts_empty(halt):
                # Refused, but so is a request without spans: the receiver is failing, not this data.
                stack.append(part)
                self._wait_after(outcome, len(part), halt)
                continue
            if outcome.kind is not Kind.OK and len(part) == 1:
                outcome = self._send(part, halt)  # refused alone while the receiver works: confirm once
            if outcome.kind is Kind.OK:
                self._count(result, part, outcome)
            elif len(part) == 1:
                span = part[0]
                result.dead.append(
                    DeadLetter(span.run_id, span.span_key, outcome.kind.value, redact_text(outcome.detail)[:1000])
                )
                self.stats.dead_lettered(outcome.kind.value, 1)
                log.error(
                    "traces: span %s of run %s dead-lettered, the collector refuses it (%s): %s",
                    span.span_key,
                    span.run_id,
                    outcome.reason,
                    redact_text(outcome.detail) or "no detail",
                )
            else:
                middle = len(part) // 2
                log.warning(
                    "traces: batch of %d spans refused (%s: %s); splitting to isolate the bad span",
                    len(part),
                    outcome.reason,
                    redact_text(outcome.detail) or "no detail",
                )
                stack.append(part[middle:])
                stack.append(part[:middle])
        return result

    @staticmethod
    def _count(result: Delivered, part: Sequence[Encoded], outcome: Outcome) -> None:
        result.accepted += len(part) - outcome.rejected
        result.rejected += outcome.rejected
        if outcome.rejected:
            log.warning(
                "traces: the collector rejected %d of %d spans (partial success): %s",
                outcome.rejected,
                len(part),
                redact_text(outcome.detail) or "no message",
            )

    def _send(self, part: Sequence[Encoded], halt: threading.Event) -> Outcome:
        """Send until the collector answers something other than a retryable failure."""
        payload = self.envelope.request_fields([span.field for span in part])
        while True:
            if halt.is_set():
                raise Stopped()
            started = self._monotonic()
            outcome = self.transport.send(payload, halt)
            self.stats.request_done(self._monotonic() - started)
            if outcome.kind is Kind.OK:
                self.stats.spans_sent(len(part) - outcome.rejected, outcome.rejected)
                self._recovered()
                return outcome
            self.stats.request_failed(outcome.reason, len(part))
            if outcome.kind is not Kind.RETRY:
                # Not counted as recovered: a receiver refusing everything for a while must meet a
                # growing backoff, which only an accepted request resets.
                return outcome
            self._wait_after(outcome, len(part), halt)

    def _wait_after(self, outcome: Outcome, spans: int, halt: threading.Event) -> None:
        delay = self._backoff(outcome)
        self._report_failure(outcome, spans, delay)
        if halt.wait(delay):
            raise Stopped()

    def _receiver_accepts_empty(self, halt: threading.Event) -> bool:
        """Whether the receiver accepts an export request without spans (the known-good probe)."""
        if halt.is_set():
            raise Stopped()
        outcome = self.transport.send(self.envelope.request_fields([]), halt)
        if outcome.kind is Kind.OK:
            return True
        self.stats.request_failed(outcome.reason, 0)
        return False

    def _backoff(self, outcome: Outcome) -> float:
        ceiling = min(self.cap, self.initial * (2 ** min(self._attempts, 30)))
        self._attempts += 1
        delay = self._rng.uniform(0, ceiling)
        if outcome.retry_after is not None:
            delay = max(delay, min(outcome.retry_after, MAX_RETRY_AFTER_S))
        return delay

    def _report_failure(self, outcome: Outcome, spans: int, delay: float) -> None:
        now = self._monotonic()
        if self._failing_since is None:
            self._failing_since = now
            log.warning(
                "traces: export of %d spans to %s failed (%s: %s); retrying with backoff until it works",
                spans,
                self.transport.description,
                outcome.reason,
                redact_text(outcome.detail) or "no detail",
            )
        elif self._attempts & (self._attempts - 1) == 0:  # 2, 4, 8, ... attempts: rare, growing gaps
            log.warning(
                "traces: export still failing after %d attempts over %.0fs (%s: %s); next try in %.1fs",
                self._attempts,
                now - self._failing_since,
                outcome.reason,
                redact_text(outcome.detail) or "no detail",
                delay,
            )

    def _recovered(self) -> None:
        if self._failing_since is not None:
            log.info(
                "traces: export to %s works again after %d failed attempts over %.0fs",
                self.transport.description,
                self._attempts,
                self._monotonic() - self._failing_since,
            )
        self._failing_since = None
        self._attempts = 0


class Pipeline:
    """Delivers batches in order on a worker thread while the caller encodes the next one.

    ``submit`` hands over a batch and the function that commits it; the worker sends the batch (with
    :meth:`Deliverer.deliver`'s retries and splitting), then runs that function, then takes the next
    batch.  So at most one batch is ever sent and not yet committed (a crash re-sends at most one
    batch), and at most three are in memory (one in flight, one queued, one being built).  An error on
    the worker (including :class:`Stopped`) is raised to the caller by the next ``submit``/``drain``.
    """

    _DONE = object()

    def __init__(self, deliverer: Deliverer, halt: threading.Event) -> None:
        self.deliverer = deliverer
        self.halt = halt
        self._queue: queue.Queue[object] = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def submit(self, spans: Sequence[Encoded], commit: Callable[[Delivered], None]) -> None:
        self._raise()
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="traces-export", daemon=True)
            self._thread.start()
        while True:
            try:
                self._queue.put((spans, commit), timeout=0.1)
                return
            except queue.Full:
                self._raise()
                if self._thread is not None and not self._thread.is_alive():
                    raise RuntimeError("export worker died") from None

    def drain(self) -> None:
        """Wait until every submitted batch is delivered and committed; stop the worker."""
        thread = self._thread
        if thread is not None:
            while thread.is_alive():
                try:
                    self._queue.put(self._DONE, timeout=0.1)
                    break
                except queue.Full:
                    continue
            thread.join()
            self._thread = None
        self._raise()

    def _raise(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            self._stop_worker()
            raise error

    def _stop_worker(self) -> None:
        thread = self._thread
        if thread is None:
            return
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(self._DONE)
        thread.join()
        self._thread = None
        while True:  # batches queued after the failure were never sent: drop them
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is self._DONE:
                return
            spans, commit = cast(tuple[Sequence[Encoded], Callable[[Delivered], None]], item)
            try:
                commit(self.deliverer.deliver(spans, self.halt) if spans else Delivered())
            except BaseException as exc:  # handed to the producer thread
                self._error = exc
                return
