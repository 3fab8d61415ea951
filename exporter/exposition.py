"""Serve the snapshot's exposition rendered once per snapshot; only scrape-time metrics are live.

Everything derived from the snapshot is identical between two refreshes, so it is rendered on the
first scrape after a refresh and reused (a 1M-run DB renders ~600 histogram samples: ~4 ms).
Metrics that change between refreshes (snapshot age, span export, jobs) stay in a live registry
rendered on every scrape and appended.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

_EOF = b"# EOF\n"


class CachedExposition:
    def __init__(
        self, snapshot: CollectorRegistry, live: CollectorRegistry, token: Callable[[], tuple[object, ...]]
    ) -> None:
        """``token`` returns the objects the snapshot exposition depends on; any new one re-renders."""
        self._snapshot = snapshot
        self._live = live
        self._token = token
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[tuple[object, ...], bytes]] = {}  # content type -> (token, body)

    def render(self, accept: str) -> tuple[bytes, str]:
        encoder, content_type = choose_encoder(accept)
        token = self._token()
        with self._lock:
            cached = self._cache.get(content_type)
            if cached is None or not _same(cached[0], token):
                cached = (token, encoder(self._snapshot))
                self._cache[content_type] = cached
        body = cached[1]
        if content_type.startswith("application/openmetrics-text") and body.endswith(_EOF):
            body = body[: -len(_EOF)]
        return body + encoder(self._live), content_type


def _same(a: tuple[object, ...], b: tuple[object, ...]) -> bool:
    """Identity, not equality: the cache must never outlive the objects it was rendered from."""
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))
