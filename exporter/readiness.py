"""What ``/readyz`` answers: a short reason code anyone may see, and a detail only shown on request."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

READY = "ready"
NO_SNAPSHOT = "no_snapshot"
STALE_SNAPSHOT = "stale_snapshot"
REFRESH_FAILING = "refresh_failing"


def component_failing(name: str) -> str:
    """The code of a failing optional component (``traces_failing``, ``jobs_failing``)."""
    return f"{name}_failing"


@dataclass(frozen=True)
class Readiness:
    """``reason``: a short code from a fixed set (a DB problem such as ``missing`` or ``unknown_layout``,
    or one of this module's codes), safe to show anyone; ``detail``: the full explanation, which may
    name files and tables (shown only with ``web.readyz_detail: full``)."""

    ready: bool
    reason: str
    detail: str = ""

    @staticmethod
    def combined(failures: Iterable[Readiness]) -> Readiness:
        """Ready when nothing failed; else every distinct reason code and every detail."""
        failed = [f for f in failures if not f.ready]
        if not failed:
            return Readiness(True, READY)
        codes = list(dict.fromkeys(f.reason for f in failed))
        return Readiness(False, ", ".join(codes), "; ".join(f.detail or f.reason for f in failed))
