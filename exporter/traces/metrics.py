"""Self-metrics of the span export: prometheus_client metrics (:mod:`exporter.selfmetrics`), no DB access.

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

import time

from exporter.selfmetrics import SelfMetrics, one

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


class TraceStats(SelfMetrics):
    """Shared by the export thread, the backlog refresh and scrapes (a collector of its own metrics).

    Counters and the histogram are prometheus_client's (thread-safe); the other values are plain
    attributes, each replaced whole, read by the tailer and at scrape time."""

    def __init__(self, failure_reasons: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.backlog: tuple[int, int] | None = None  # (spans, runs)
        self.watermark: float | None = None
        self.last_success: float | None = None
        self.last_ok: bool | None = None
        self.supported: bool | None = None
        self.state_ok = True
        self._exported = self.counter("state_exporter_spans_exported", "Spans accepted by the OTLP collector")
        self._failed_spans = self.counter(
            "state_exporter_spans_failed", "Spans in OTLP export requests that failed (retried or split, not lost)"
        )
        self._failures = self.counter(
            "state_exporter_span_export_failures",
            "Failed OTLP export requests by reason (gRPC code, http_<status>, connection, timeout)",
            ["reason"],
            [(reason,) for reason in sorted(failure_reasons)],
        )
        self._state_errors = self.counter(
            "state_exporter_span_state_errors",
            "Failed attempts to use the span-export state file, by reason (nothing is exported meanwhile)",
            ["reason"],
            [(reason,) for reason in STATE_ERROR_REASONS],
        )
        self.scrape_gauge(
            "state_exporter_span_state_ok",
            "0 while the span-export state file cannot be used",
            lambda: one(int(self.state_ok)),
        )
        self._dead = self.counter(
            "state_exporter_spans_dead_lettered",
            "Spans given up on and recorded in the state file's dead letters, by reason",
            ["reason"],
            [(reason,) for reason in sorted(DEAD_LETTER_REASONS)],
        )
        self._rejected = self.counter(
            "state_exporter_spans_rejected", "Spans reported rejected by the collector in a partial success"
        )
        self._vanished = self.counter(
            "state_exporter_span_runs_vanished", "Runs deleted from the Flujo DB before their spans were exported"
        )
        self.scrape_gauge(
            "state_exporter_span_backlog_spans",
            "Stored spans not exported yet",
            lambda: _part(self.backlog, 0),
        )
        self.scrape_gauge(
            "state_exporter_span_backlog_runs",
            "Runs whose spans are not all exported yet (runs in progress included)",
            lambda: _part(self.backlog, 1),
        )
        self.scrape_gauge(
            "state_exporter_span_watermark_timestamp_seconds",
            "Every run that finished before this time has had its spans exported (near time() when caught up)",
            lambda: one(self.watermark),
        )
        self._duration = self.histogram(
            "state_exporter_span_export_duration_seconds", "Duration of one OTLP export request", DURATION_BUCKETS
        )
        self.scrape_gauge(
            "state_exporter_span_export_last_success_timestamp_seconds",
            "When an OTLP export request last succeeded",
            lambda: one(self.last_success),
        )
        self.scrape_gauge(
            "state_exporter_span_export_success",
            "1 if the last OTLP export request succeeded and was recorded in the state file",
            self._success,
        )
        self.scrape_gauge(
            "state_exporter_span_export_supported",
            "1 if the DB layout has a spans table to export (0 for the 0.4.32 legacy layout)",
            lambda: None if self.supported is None else one(int(self.supported)),
        )

    def request_done(self, seconds: float) -> None:
        self._duration.observe(seconds)

    def spans_sent(self, accepted: int, rejected: int) -> None:
        self._exported.inc(accepted)
        self._rejected.inc(rejected)
        self.last_success = time.time()
        self.last_ok = True

    def request_failed(self, reason: str, spans: int) -> None:
        self._failures.labels(reason).inc()
        self._failed_spans.inc(spans)
        self.last_ok = False

    def dead_lettered(self, reason: str, spans: int) -> None:
        self._dead.labels(reason).inc(spans)

    def set_backlog(self, spans: int, runs: int) -> None:
        self.backlog = (spans, runs)

    def set_watermark(self, epoch: float | None) -> None:
        self.watermark = epoch

    def set_supported(self, supported: bool) -> None:
        self.supported = supported

    def run_vanished(self, count: int = 1) -> None:
        self._vanished.inc(count)

    def state_failed(self, reason: str) -> None:
        self._state_errors.labels(reason).inc()
        self.state_ok = False

    def state_recovered(self) -> None:
        self.state_ok = True

    def state_replaced(self) -> None:
        """The state file was deleted while running and recreated (counted, not a lasting problem)."""
        self._state_errors.labels("deleted").inc()

    def _success(self) -> dict[tuple[str, ...], float] | None:
        last_ok, state_ok = self.last_ok, self.state_ok
        if last_ok is None and state_ok:
            return None  # no request yet and nothing wrong: absent
        return one(int(bool(last_ok) and state_ok))


def _part(backlog: tuple[int, int] | None, index: int) -> dict[tuple[str, ...], float] | None:
    return None if backlog is None else one(backlog[index])
