"""Small helpers shared by the benchmark scripts (standard library only).

``flujo_probe.py`` runs in a separate virtualenv and does not import this module.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent
DATA_DIR = BENCH_DIR / ".data"  # git-ignored


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (p99 of 200 samples is the 198th smallest)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def ms(seconds: float) -> str:
    if math.isnan(seconds):
        return "n/a"
    return f"{seconds * 1000:.2f} ms" if seconds < 10 else f"{seconds:.1f} s"


def mib(size_bytes: float) -> str:
    return "n/a" if math.isnan(size_bytes) else f"{size_bytes / 2**20:.1f} MiB"


def ratio(ours: float, theirs: float) -> float:
    if math.isnan(ours) or math.isnan(theirs) or theirs <= 0:
        return math.nan
    return ours / theirs
