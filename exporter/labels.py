"""Bounded label values: a hard cap on distinct values per label, the rest folded into ``other``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

OTHER = "other"
MAX_LABEL_CHARS = 200


def label_text(raw: object) -> str | None:
    """``raw`` as a label value, or ``None`` when it cannot be one and the row must be skipped
    (and counted as a bad value): NULL, a BLOB, a number where text belongs, text that is not valid
    UTF-8 (the reader decodes it with ``surrogateescape``, see :func:`decode_text`), or text longer
    than :data:`MAX_LABEL_CHARS`.  The empty string is a valid (if unhelpful) value."""
    if not isinstance(raw, str) or len(raw) > MAX_LABEL_CHARS:
        return None
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return raw


def decode_text(raw: bytes) -> str:
    """SQLite text factory: invalid UTF-8 survives as lone surrogates instead of failing the whole
    query; :func:`label_text` and the timestamp parser then reject just that value."""
    return raw.decode("utf-8", "surrogateescape")


class LabelCap:
    """Stable allocation for counters: the first ``limit`` values seen keep their own label."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._kept: set[str] = set()

    def copy(self) -> LabelCap:
        twin = LabelCap(self.limit)
        twin._kept = set(self._kept)
        return twin

    def label(self, value: str) -> str:
        if value in self._kept:
            return value
        if len(self._kept) < self.limit:
            self._kept.add(value)
            return value
        return OTHER


def top_values(weights: Mapping[str, int], limit: int) -> set[str]:
    """For gauges: keep the ``limit`` heaviest values (ties broken by name for stable output)."""
    ranked = sorted(weights.items(), key=lambda item: (-item[1], item[0]))
    return {name for name, _ in ranked[:limit]}


def fold(counts: Iterable[tuple[tuple[str, str], int]], limit: int) -> Counter[tuple[str, str]]:
    """Fold ``(value, other_label) -> n`` so at most ``limit`` distinct first-label values remain."""
    items = list(counts)
    weights: Counter[str] = Counter()
    for (value, _), n in items:
        weights[value] += n
    kept = top_values(weights, limit)
    folded: Counter[tuple[str, str]] = Counter()
    for (value, second), n in items:
        folded[(value if value in kept else OTHER, second)] += n
    return folded
