"""Self-metrics of the span export; fresh families on every scrape, from counters kept under a lock.

Counters:

* ``state_exporter_spans_exported_total``: spans the collector accepted.
* ``state_exporter_spans_failed_total``: spans in export requests that failed (retried or split, not lost).
* ``state_exporter_span_export_failures_total{reason}``: failed export requests, by gRPC code name,
  ``http_<status>``, ``connection`` or ``timeout``; every reason of the configured protocol is always
  present (at 0 until it happens).
* ``state_exporter_span_state_errors_total{reason}``: failed attempts to use the state file
  (``corrupt``, ``foreign``, ``unwritable``, ``disk_full``, ``locked``, ``io``; ``deleted``: the file
  was deleted while running and was recreated).  Every reason is always present.
* ``state_exporter_spans_dead_lettered_total{reason}``: spans given up on: ``malformed`` / ``too_large``
  (refused alone by the collector), ``invalid_start_time``, ``unanchored_time``, ``encode_error``
  (unusable row).  Every reason is always present.
* ``state_exporter_spans_rejected_total``: spans the collector reported rejected in a partial success.
* ``state_exporter_span_runs_vanished_total``: runs deleted from the DB before their spans were exported.

Gauges and histogram:

* ``state_exporter_span_backlog_spans`` / ``state_exporter_span_backlog_runs``: stored spans / runs not
  exported yet (runs in progress included).
* ``state_exporter_span_watermark_timestamp_seconds``: every run that finished before this instant has
  been exported; close to ``time()`` when caught up, stuck during an outage (durable: from the state file).
  Alert on ``time() - state_exporter_span_watermark_timestamp_seconds > 600``.
* ``state_exporter_span_export_duration_seconds``: histogram of one export request's duration.
* ``state_exporter_span_export_last_success_timestamp_seconds``, ``state_exporter_span_export_success``
  (1 if the last request succeeded and its result could be recorded in the state file; 0 while the
  state file is unusable, even before a first request).
* ``state_exporter_span_state_ok``: 0 while the state file cannot be used (nothing is exported then).
* ``state_exporter_span_export_supported``: 0 when the DB layout has no spans (0.4.32 legacy).
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
DEAD_LETTER_REASONS = ("malformed", "too_large", "invalid_start_time", "unanchored_time", "encode_error")
STATE_ERROR_REASONS = ("corrupt", "foreign", "unwritable", "disk_full", "locked", "io", "deleted")
_GRPC_REASONS = (
    "cancelled",
    "unknown",
    "invalid_argument",
    "deadline_exceeded",
    "not_found",
    "already_exists",
    "permission_denied",
    "resource_exhausted",
    "failed_precondition",
    "aborted",
    "out_of_range",
    "unimplemented",
    "internal",
    "unavailable",
    "data_loss",
    "unauthenticated",
)
_HTTP_REASONS = (
    *(f"http_{status}" for status in (400, 401, 403, 404, 408, 413, 429, 500, 502, 503, 504)),
    "http_1xx",
    "http_3xx",
    "http_4xx",
    "http_5xx",
    "connection",
    "timeout",
)


def failure_reasons(protocol: str) -> tuple[str, ...]:
    """Every ``reason`` the transport of ``protocol`` can report (see :mod:`exporter.traces.transport`)."""
    return _GRPC_REASONS if protocol == "grpc" else _HTTP_REASONS


@dataclass(frozen=True)
class StatsSnapshot:
    exported: int
    failed_spans: int
    rejected: int
    failures: dict[str, int]
    dead: dict[str, int]
    bucket_counts: tuple[int, ...]
    duration_sum: float
    backlog_spans: int | None
    backlog_runs: int | None
    watermark: float | None
    last_success: float | None
    last_ok: bool | None
    supported: bool | None
    vanished: int
    state_errors: dict[str, int]
    state_ok: bool


class TraceStats:
    """Thread-safe counters shared by the export thread, the backlog refresh and scrapes."""

    def __init__(self, failure_reasons: tuple[str, ...] = ()) -> None:
        self.failure_reasons = failure_reasons
        self._lock = threading.Lock()
        self._exported = 0
        self._failed_spans = 0
        self._rejected = 0
        self._failures: Counter[str] = Counter()
        self._dead: Counter[str] = Counter()
        self._buckets = [0] * (len(DURATION_BUCKETS) + 1)
        self._duration_sum = 0.0
        self._backlog: tuple[int, int] | None = None
        self._watermark: float | None = None
        self._last_success: float | None = None
        self._last_ok: bool | None = None
        self._supported: bool | None = None
        self._vanished = 0
        self._state_errors: Counter[str] = Counter()
        self._state_ok = True

    def request_done(self, seconds: float) -> None:
        with self._lock:
            self._buckets[bisect.bisect_left(DURATION_BUCKETS, seconds)] += 1
            self._duration_sum += seconds

    def spans_sent(self, accepted: int, rejected: int) -> None:
        with self._lock:
            self._exported += accepted
            self._rejected += rejected
            self._last_success = time.time()
            self._last_ok = True

    def request_failed(self, reason: str, spans: int) -> None:
        with self._lock:
            self._failures[reason] += 1
            self._failed_spans += spans
            self._last_ok = False

    def dead_lettered(self, reason: str, spans: int) -> None:
        with self._lock:
            self._dead[reason] += spans

    def set_backlog(self, spans: int, runs: int) -> None:
        with self._lock:
            self._backlog = (spans, runs)

    def set_watermark(self, epoch: float | None) -> None:
        with self._lock:
            self._watermark = epoch

    def set_supported(self, supported: bool) -> None:
        with self._lock:
            self._supported = supported

    def run_vanished(self, count: int = 1) -> None:
        with self._lock:
            self._vanished += count

    def state_failed(self, reason: str) -> None:
        with self._lock:
            self._state_errors[reason] += 1
            self._state_ok = False

    def state_recovered(self) -> None:
        with self._lock:
            self._state_ok = True

    def state_replaced(self) -> None:
        """The state file was deleted while running and recreated (counted, not a lasting problem)."""
        with self._lock:
            self._state_errors["deleted"] += 1

    def snapshot(self) -> StatsSnapshot:
        with self._lock:
            return StatsSnapshot(
                exported=self._exported,
                failed_spans=self._failed_spans,
                rejected=self._rejected,
                failures=dict(self._failures),
                dead=dict(self._dead),
                bucket_counts=tuple(self._buckets),
                duration_sum=self._duration_sum,
                backlog_spans=None if self._backlog is None else self._backlog[0],
                backlog_runs=None if self._backlog is None else self._backlog[1],
                watermark=self._watermark,
                last_success=self._last_success,
                last_ok=self._last_ok,
                supported=self._supported,
                vanished=self._vanished,
                state_errors=dict(self._state_errors),
                state_ok=self._state_ok,
            )


class TraceCollector(Collector):
    """Never touches a DB: reads :class:`TraceStats` only."""

    def __init__(self, stats: TraceStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        s = self.stats.snapshot()
        yield _counter("state_exporter_spans_exported", "Spans accepted by the OTLP collector", s.exported)
        yield _counter(
            "state_exporter_spans_failed",
            "Spans in OTLP export requests that failed (retried or split, not lost)",
            s.failed_spans,
        )
        failures = CounterMetricFamily(
            "state_exporter_span_export_failures",
            "Failed OTLP export requests by reason (gRPC code, http_<status>, connection, timeout)",
            labels=["reason"],
        )
        for reason in sorted(set(self.stats.failure_reasons) | set(s.failures)):
            failures.add_metric([reason], s.failures.get(reason, 0))
        yield failures
        state_errors = CounterMetricFamily(
            "state_exporter_span_state_errors",
            "Failed attempts to use the span-export state file, by reason (nothing is exported meanwhile)",
            labels=["reason"],
        )
        for reason in STATE_ERROR_REASONS:
            state_errors.add_metric([reason], s.state_errors.get(reason, 0))
        yield state_errors
        yield _gauge(
            "state_exporter_span_state_ok", "0 while the span-export state file cannot be used", int(s.state_ok)
        )
        dead = CounterMetricFamily(
            "state_exporter_spans_dead_lettered",
            "Spans given up on and recorded in the state file's dead letters, by reason",
            labels=["reason"],
        )
        for reason in sorted(set(DEAD_LETTER_REASONS) | set(s.dead)):
            dead.add_metric([reason], s.dead.get(reason, 0))
        yield dead
        yield _counter(
            "state_exporter_spans_rejected", "Spans reported rejected by the collector in a partial success", s.rejected
        )
        yield _counter(
            "state_exporter_span_runs_vanished",
            "Runs deleted from the Flujo DB before their spans were exported",
            s.vanished,
        )
        if s.backlog_spans is not None and s.backlog_runs is not None:
            yield _gauge("state_exporter_span_backlog_spans", "Stored spans not exported yet", s.backlog_spans)
            yield _gauge(
                "state_exporter_span_backlog_runs",
                "Runs whose spans are not all exported yet (runs in progress included)",
                s.backlog_runs,
            )
        if s.watermark is not None:
            yield _gauge(
                "state_exporter_span_watermark_timestamp_seconds",
                "Every run that finished before this time has had its spans exported (near time() when caught up)",
                s.watermark,
            )
        histogram = HistogramMetricFamily(
            "state_exporter_span_export_duration_seconds", "Duration of one OTLP export request"
        )
        cumulative, buckets = 0, []
        for bound, count in zip((*DURATION_BUCKETS, float("inf")), s.bucket_counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), cumulative))
        histogram.add_metric([], buckets, s.duration_sum)
        yield histogram
        if s.last_success is not None:
            yield _gauge(
                "state_exporter_span_export_last_success_timestamp_seconds",
                "When an OTLP export request last succeeded",
                s.last_success,
            )
        if s.last_ok is not None or not s.state_ok:
            yield _gauge(
                "state_exporter_span_export_success",
                "1 if the last OTLP export request succeeded and was recorded in the state file",
                int(bool(s.last_ok) and s.state_ok),
            )
        if s.supported is not None:
            yield _gauge(
                "state_exporter_span_export_supported",
                "1 if the DB layout has a spans table to export (0 for the 0.4.32 legacy layout)",
                int(s.supported),
            )


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation)
    family.add_metric([], value)
    return family


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation)
    family.add_metric([], value)
    return family
