"""Deterministic OpenTelemetry ids for stored Flujo spans.

Flujo stores no trace id and a 36-character UUID (or ``error_<run_id>``) as span id, so ids are
derived, never random, and a re-send of the same stored span carries the very same ids (backends
deduplicate or at least show one span, not a copy per attempt):

* ``trace_id = sha256(b"flujo-trace:" + utf8(run_id))[:16]``
* ``span_id  = sha256(b"flujo-span:" + utf8(run_id) + b"\\x00" + utf8(stored_span_id))[:8]``
* ``parent_span_id`` = the ``span_id`` formula applied to the stored ``parent_span_id`` of the same run.

The NUL separator keeps ``(run "ab", span "c")`` and ``(run "a", span "bc")`` apart.  The run id is part
of the span id because 0.6.x does not make ``spans.span_id`` unique across runs.  OTLP forbids all-zero
ids; a digest prefix that happens to be all zero (probability 2**-64) gets its last byte set to 1.
"""

from __future__ import annotations

import hashlib

TRACE_PREFIX = b"flujo-trace:"
SPAN_PREFIX = b"flujo-span:"
_ZERO_TRACE = bytes(16)
_ZERO_SPAN = bytes(8)


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def trace_id(run_id: str) -> bytes:
    """16-byte trace id of a run."""
    digest = hashlib.sha256(TRACE_PREFIX + _utf8(run_id)).digest()[:16]
    return digest if digest != _ZERO_TRACE else digest[:15] + b"\x01"


def span_id(run_id: str, stored_span_id: str) -> bytes:
    """8-byte span id of a stored span (also used for its children's parent id)."""
    digest = hashlib.sha256(SPAN_PREFIX + _utf8(run_id) + b"\x00" + _utf8(stored_span_id)).digest()[:8]
    return digest if digest != _ZERO_SPAN else digest[:7] + b"\x01"


class SpanIds:
    """Span ids of one run, memoised: parents are looked up once per child."""

    __slots__ = ("_cache", "_prefix")

    def __init__(self, run_id: str) -> None:
        self._prefix = SPAN_PREFIX + _utf8(run_id) + b"\x00"
        self._cache: dict[str, bytes] = {}

    def __call__(self, stored_span_id: str) -> bytes:
        found = self._cache.get(stored_span_id)
        if found is None:
            found = hashlib.sha256(self._prefix + _utf8(stored_span_id)).digest()[:8]
            if found == _ZERO_SPAN:
                found = found[:7] + b"\x01"
            self._cache[stored_span_id] = found
        return found


def derived_trace_id(domain: bytes, *parts: str) -> bytes:
    """16-byte trace id ``sha256(domain + parts joined by NUL)[:16]`` for spans an engine's rows are
    rebuilt into.  Each engine brings its own ``domain`` (e.g. ``b"pynenc-trace:"``), so no id of one
    engine can equal another's; the NUL keeps ``("ab", "c")`` and ``("a", "bc")`` apart."""
    digest = hashlib.sha256(domain + b"\x00".join(_utf8(p) for p in parts)).digest()[:16]
    return digest if digest != _ZERO_TRACE else digest[:15] + b"\x01"


def derived_span_id(domain: bytes, *parts: str) -> bytes:
    """8-byte span id ``sha256(domain + parts joined by NUL)[:8]`` (see :func:`derived_trace_id`)."""
    digest = hashlib.sha256(domain + b"\x00".join(_utf8(p) for p in parts)).digest()[:8]
    return digest if digest != _ZERO_SPAN else digest[:7] + b"\x01"


# pynenc (rebuilt spans, one per invocation): other prefixes, so no id can equal a Flujo one.
PYNENC_TRACE_PREFIX = b"pynenc-trace:"
PYNENC_SPAN_PREFIX = b"pynenc-span:"


def pynenc_trace_id(top_invocation_id: str) -> bytes:
    """16-byte trace id of a pynenc invocation tree: ``sha256("pynenc-trace:" + top-level id)[:16]``."""
    return derived_trace_id(PYNENC_TRACE_PREFIX, top_invocation_id)


def pynenc_span_id(invocation_id: str) -> bytes:
    """8-byte span id of a pynenc invocation: ``sha256("pynenc-span:" + invocation id)[:8]`` (invocation
    ids are unique, so the tree is not part of it; a parent's id is its own span id)."""
    return derived_span_id(PYNENC_SPAN_PREFIX, invocation_id)
