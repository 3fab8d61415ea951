"""What every engine's span encoder hands to batching and delivery: encoded spans, rows rejected
before sending, and the export mode a trace unit is read in."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Mode(StrEnum):
    FINAL = "final"  # the unit finished: every span, open ones closed at the unit's end
    PARTIAL = "partial"  # in progress past the grace period: only spans that have an end
    ABANDON = "abandon"  # never finished: every span, open ones closed as well as the data allows


@dataclass(slots=True)
class Encoded:
    run_id: str  # the trace unit (a Flujo run, a pynenc top-level invocation)
    span_key: str  # the span's stored key within the unit (recorded as exported)
    field: bytes  # the span as a ``ScopeSpans.spans`` field: tag, length, Span message
    size: int  # len(field): the bytes the span adds to a request

    @property
    def body(self) -> bytes:
        """The ``Span`` message alone."""
        offset = 1  # past the tag, then past the varint length
        while self.field[offset] & 0x80:
            offset += 1
        return self.field[offset + 1 :]


@dataclass(frozen=True, slots=True)
class LocalReject:
    """A row that cannot become a valid span; dead-lettered without being sent."""

    run_id: str
    span_key: str
    reason: str
    detail: str
