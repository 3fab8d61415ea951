"""Export of a DB's spans over OTLP: the daemon's tailer and ``replay`` (backfill), for every engine
with a span source (:mod:`exporter.traces.source`; pynenc's are rebuilt from its history, see
:mod:`exporter.engines.pynenc.traces`).  What follows describes Flujo's.

Each run becomes one trace; every stored span one OTLP span (kind INTERNAL) under one shared resource
(``service.name`` from ``traces.service_name``, default the engine's name) and the instrumentation scope
``flujo-state-exporter`` with the exporter's version.

Identity (:mod:`exporter.traces.ids`): ``trace_id = sha256("flujo-trace:" + run_id)[:16]``,
``span_id = sha256("flujo-span:" + run_id + NUL + stored span_id)[:8]``, the parent likewise from the
stored ``parent_span_id``: a re-send carries identical ids.

Time: 0.4.x epoch span times are exported as stored (float seconds -> integer nanoseconds; the float
itself carries about 0.2 µs of precision at today's epochs).  0.6.x stores ``time.monotonic()``: each run
is anchored by :func:`exporter.engines.flujo.spantime.clock_for_run`: the offset lies between ``runs.created_at``
(written before the root span starts) and the run's stored end or the spans' save time (written after it
ends); the midpoint is exported and half the bracket is the error bound (about 1 ms on the 0.6.11
fixture; live apps start the root 3-433 ms after ``created_at``, and the bracket covers it).  Without a
run row the latest ``spans.created_at`` is the anchor (bound 1 s).  The root span says which
(``flujo.exporter.clock``, ``flujo.exporter.clock_error_bound_s``; ``inf`` when only a lower bound is
known).  A span without an end time is exported once its run has
finished, ending at the run's end (or, when that is unknown or the run was abandoned, at its last
child's end, else at its own start), flagged ``flujo.exporter.end_time_inferred = true`` with
``flujo.exporter.end_time_source``.

Content: the span name; status (completed -> OK, failed/error -> ERROR with the failure feedback as
description, anything else UNSET; the stored value in ``flujo.span.status``); stored attributes
flattened (:mod:`exporter.engines.flujo.traces.attributes`) within the configured limits; ``flujo.run_id``,
``flujo.pipeline.name``, ``flujo.pipeline.version`` and ``flujo.run.status`` on root spans.

See :mod:`exporter.traces.tailer` for the delivery guarantees and :mod:`exporter.traces.metrics` for
the metrics.  ``python -m exporter.traces replay|tail --help`` runs either without the daemon.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from exporter.traces.config import TracesConfig, apply_otel_env, default_state_file, resolve_endpoint

if TYPE_CHECKING:
    from exporter.traces.backfill import ReplayResult, replay
    from exporter.traces.metrics import TraceStats
    from exporter.traces.tailer import SpanTailer

# grpc and protobuf cost ~12 MB and ~85 ms to import: loaded only when span export is used.
_LAZY = {
    "TraceStats": "exporter.traces.metrics",
    "ReplayResult": "exporter.traces.backfill",
    "replay": "exporter.traces.backfill",
    "SpanTailer": "exporter.traces.tailer",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "ReplayResult",
    "SpanTailer",
    "TraceStats",
    "TracesConfig",
    "apply_otel_env",
    "default_state_file",
    "replay",
    "resolve_endpoint",
]
