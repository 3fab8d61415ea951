"""The self-metrics kept in prometheus_client's Counter/Gauge/Histogram render exactly as the daemon's
hand-built families did: no ``_created`` series, optional families absent until known."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from support import parse_exposition, sample

from exporter.jobs.metrics import JobMetrics, JobsCollector
from exporter.selfmetrics import SelfMetrics
from exporter.traces.metrics import DURATION_BUCKETS, TraceStats, failure_reasons
from exporter.web_stats import AuthFailure, BadRequest, Dropped, HttpStats


def render(collector: Collector) -> tuple[str, str]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry).decode(), generate_openmetrics(registry).decode()


def busy_trace_stats() -> TraceStats:
    stats = TraceStats(failure_reasons("grpc"))
    stats.request_done(0.2)
    stats.spans_sent(5, 1)
    stats.request_failed("unavailable", 3)
    stats.dead_lettered("malformed", 1)
    stats.state_replaced()
    stats.run_vanished()
    return stats


def busy_jobs() -> JobMetrics:
    metrics = JobMetrics({"cleanup": True}, ("webhook",))
    metrics.cleanup_deleted({"runs": 2})
    metrics.stale_failed(1)
    metrics.delivery("webhook", "success")
    return metrics


def busy_http() -> HttpStats:
    stats = HttpStats()
    stats.bad_request(BadRequest.MALFORMED)
    stats.drop(Dropped.HEADER_TIMEOUT)
    stats.auth_failure(AuthFailure.INVALID)
    return stats


@pytest.mark.parametrize("make", [busy_trace_stats, busy_jobs, busy_http], ids=["traces", "jobs", "http"])
def test_no_created_series_in_either_format(make: Callable[[], SelfMetrics]) -> None:
    metrics = make()
    text, openmetrics = render(metrics)
    assert "_created" not in text and "_created" not in openmetrics
    assert "_total" in text  # counters are there, only their creation time is not
    # Not vacuous: prometheus_client itself does add them (its default; the daemon does not rely on
    # the process-wide switch that turns them off).
    assert "_created" in generate_latest(metrics.registry).decode()


def test_types_and_values_of_the_span_export_families() -> None:
    text, _ = render(busy_trace_stats())
    types = {family.name: family.type for family in text_string_to_metric_families(text)}
    assert types["state_exporter_spans_exported"] == "counter"
    assert types["state_exporter_span_export_duration_seconds"] == "histogram"
    assert types["state_exporter_span_state_ok"] == "gauge"
    s = parse_exposition(text)
    assert sample(s, "state_exporter_spans_exported_total") == 5
    assert sample(s, "state_exporter_spans_rejected_total") == 1
    assert sample(s, "state_exporter_span_export_failures_total", reason="unavailable") == 1
    assert sample(s, "state_exporter_span_export_failures_total", reason="cancelled") == 0  # declared at 0
    assert sample(s, "state_exporter_span_state_errors_total", reason="deleted") == 1
    assert sample(s, "state_exporter_spans_dead_lettered_total", reason="too_large") == 0


def test_a_duration_on_a_bucket_bound_counts_in_that_bucket() -> None:
    stats = TraceStats()
    bound = DURATION_BUCKETS[3]
    stats.request_done(bound)
    s = parse_exposition(render(stats)[0])
    name = "state_exporter_span_export_duration_seconds"
    assert sample(s, f"{name}_bucket", le=repr(float(bound))) == 1
    assert sample(s, f"{name}_bucket", le=repr(float(DURATION_BUCKETS[2]))) == 0
    assert sample(s, f"{name}_count") == 1 and sample(s, f"{name}_sum") == bound


OPTIONAL = (
    "state_exporter_span_backlog_spans",
    "state_exporter_span_backlog_runs",
    "state_exporter_span_watermark_timestamp_seconds",
    "state_exporter_span_export_last_success_timestamp_seconds",
    "state_exporter_span_export_success",
    "state_exporter_span_export_supported",
)


def test_span_gauges_absent_until_known() -> None:
    stats = TraceStats(failure_reasons("http"))
    families = {family.name for family in text_string_to_metric_families(render(stats)[0])}
    assert families.isdisjoint(OPTIONAL)
    assert "state_exporter_span_state_ok" in families
    stats.set_backlog(7, 2)
    stats.set_watermark(1_700_000_000.5)
    stats.set_supported(True)
    stats.spans_sent(1, 0)
    s = parse_exposition(render(stats)[0])
    assert sample(s, "state_exporter_span_backlog_spans") == 7
    assert sample(s, "state_exporter_span_backlog_runs") == 2
    assert sample(s, "state_exporter_span_watermark_timestamp_seconds") == 1_700_000_000.5
    assert sample(s, "state_exporter_span_export_success") == 1
    assert sample(s, "state_exporter_span_export_supported") == 1
    stats.set_watermark(None)
    assert "state_exporter_span_watermark_timestamp_seconds" not in render(stats)[0]


def test_export_success_is_0_while_the_state_file_fails_even_before_a_request() -> None:
    stats = TraceStats()
    stats.state_failed("locked")
    s = parse_exposition(render(stats)[0])
    assert sample(s, "state_exporter_span_export_success") == 0
    assert sample(s, "state_exporter_span_state_ok") == 0
    stats.state_recovered()
    assert "state_exporter_span_export_success" not in render(stats)[0]  # back to: nothing known yet


def test_reload_carries_counters_over_for_the_configured_receivers() -> None:
    old = JobMetrics({"stuck_alerts": True}, ("alertmanager", "webhook"))
    old.delivery("webhook", "failure")
    old.delivery("alertmanager", "success")
    old.cleanup_deleted({"spans": 4})
    old.alerts_firing(Counter({"etl": 2}))
    new = JobMetrics({"stuck_alerts": True}, ("webhook",))
    new.inherit(old)
    new.delivery("webhook", "failure")
    text = render(JobsCollector(new, lambda _: None))[0]
    s = parse_exposition(text)
    assert sample(s, "state_exporter_alert_deliveries_total", receiver="webhook", outcome="failure") == 2
    assert 'receiver="alertmanager"' not in text  # no longer configured: not exposed
    assert sample(s, "state_exporter_cleanup_deleted_rows_total", table="spans") == 4
    assert sample(s, "state_exporter_stuck_alerts_firing", pipeline="etl") == 0  # seen before: stays, at 0


def test_open_connections_gauge() -> None:
    stats = HttpStats()
    stats.open_connections(3)
    assert sample(parse_exposition(render(stats)[0]), "state_exporter_http_open_connections") == 3
