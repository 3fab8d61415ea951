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

Namespaces (``traces.id_namespace``): two DBs can hold the same run id, and their traces would then
share ids.  An :class:`IdScheme` with a namespace puts ``NUL "ns:" + utf8(namespace) + NUL`` before
every digest input above, for every engine; without one (the default) every id is the formula above,
unchanged.  No engine's domain starts with NUL, so no namespaced digest input equals an un-namespaced
one, and the namespace (printable, so without NUL) ends at its first NUL.  The module-level functions are the
default scheme; span sources get theirs from ``Limits.ids`` (:mod:`exporter.traces.source`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

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
    """Span ids of one run, memoised: parents are looked up once per child.  ``salt``: the
    namespace's prefix (:meth:`IdScheme.span_ids`)."""

    __slots__ = ("_cache", "_prefix")

    def __init__(self, run_id: str, salt: bytes = b"") -> None:
        self._prefix = salt + SPAN_PREFIX + _utf8(run_id) + b"\x00"
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


NAMESPACE_MAX_LENGTH = 128


def check_namespace(namespace: str) -> str:
    """A namespace as :class:`IdScheme` takes it: 1 to 128 printable characters (no NUL, so it ends
    at the first NUL of a digest input)."""
    if not namespace or len(namespace) > NAMESPACE_MAX_LENGTH or not namespace.isprintable():
        raise ValueError(f"must be 1 to {NAMESPACE_MAX_LENGTH} printable characters")
    return namespace


@dataclass(frozen=True)
class IdScheme:
    """How one source's ids are derived: the module's formulas, behind a namespace when one is set.

    One object per span source (made from ``traces.id_namespace``), so two sources followed by one
    process keep their own ids; ``IdScheme()`` gives exactly the module-level functions' ids."""

    namespace: str | None = None
    _salt: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        salt = b"" if self.namespace is None else b"\x00ns:" + _utf8(check_namespace(self.namespace)) + b"\x00"
        object.__setattr__(self, "_salt", salt)

    def trace_id(self, run_id: str) -> bytes:
        """Flujo: 16-byte trace id of a run (:func:`trace_id` without a namespace)."""
        return _trace_digest(self._salt + TRACE_PREFIX + _utf8(run_id))

    def span_id(self, run_id: str, stored_span_id: str) -> bytes:
        """Flujo: 8-byte span id of a stored span (:func:`span_id` without a namespace)."""
        return _span_digest(self._salt + SPAN_PREFIX + _utf8(run_id) + b"\x00" + _utf8(stored_span_id))

    def span_ids(self, run_id: str) -> SpanIds:
        """Flujo: the memoised span ids of one run."""
        return SpanIds(run_id, self._salt)

    def derived_trace_id(self, domain: bytes, *parts: str) -> bytes:
        """:func:`derived_trace_id` in this scheme."""
        return _trace_digest(self._salt + domain + b"\x00".join(_utf8(p) for p in parts))

    def derived_span_id(self, domain: bytes, *parts: str) -> bytes:
        """:func:`derived_span_id` in this scheme."""
        return _span_digest(self._salt + domain + b"\x00".join(_utf8(p) for p in parts))

    def pynenc_trace_id(self, top_invocation_id: str) -> bytes:
        return self.derived_trace_id(PYNENC_TRACE_PREFIX, top_invocation_id)

    def pynenc_span_id(self, invocation_id: str) -> bytes:
        return self.derived_span_id(PYNENC_SPAN_PREFIX, invocation_id)


def _trace_digest(data: bytes) -> bytes:
    digest = hashlib.sha256(data).digest()[:16]
    return digest if digest != _ZERO_TRACE else digest[:15] + b"\x01"


def _span_digest(data: bytes) -> bytes:
    digest = hashlib.sha256(data).digest()[:8]
    return digest if digest != _ZERO_SPAN else digest[:7] + b"\x01"


DEFAULT_IDS = IdScheme()
