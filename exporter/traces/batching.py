"""Grouping encoded spans into export requests bounded by count and bytes; reading runs in bounded groups."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

from exporter.traces.encoded import Encoded

T = TypeVar("T")


class Batch:
    def __init__(self, max_spans: int, max_bytes: int, overhead: int) -> None:
        self.max_spans = max_spans
        self.max_bytes = max_bytes
        self.overhead = overhead
        self.items: list[Encoded] = []
        self.size = overhead

    def __len__(self) -> int:
        return len(self.items)

    def fits(self, span: Encoded) -> bool:
        """Whether ``span`` can join; an empty batch takes any span (a huge one goes alone)."""
        return not self.items or (len(self.items) < self.max_spans and self.size + span.size <= self.max_bytes)

    def add(self, span: Encoded) -> None:
        self.items.append(span)
        self.size += span.size

    def fill(self, spans: Sequence[Encoded], start: int) -> int:
        """Add ``spans[start:]`` while they fit; returns the index of the first one left out."""
        count = len(self.items)
        size = self.size
        max_spans, max_bytes = self.max_spans, self.max_bytes
        end = start
        total = len(spans)
        while end < total and count < max_spans:
            span_size = spans[end].size
            if count and size + span_size > max_bytes:
                break
            size += span_size
            count += 1
            end += 1
        self.items.extend(spans[start:end])
        self.size = size
        return end

    @property
    def full(self) -> bool:
        return len(self.items) >= self.max_spans or self.size >= self.max_bytes

    def take(self) -> list[Encoded]:
        items, self.items, self.size = self.items, [], self.overhead
        return items


def groups_by_size(items: Sequence[T], sizes: Sequence[int], budget: int) -> Iterator[list[T]]:
    """Consecutive groups whose summed size stays within ``budget`` (an oversized item goes alone)."""
    group: list[T] = []
    total = 0
    for item, size in zip(items, sizes, strict=True):
        if group and total + size > budget:
            yield group
            group, total = [], 0
        group.append(item)
        total += size
    if group:
        yield group
