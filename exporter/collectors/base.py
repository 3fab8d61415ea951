"""What every collector reads: the current refresh state, the live settings and the clock."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from exporter.clock import Clock
from exporter.config import MetricsConfig
from exporter.refresh import ExporterState


@dataclass(frozen=True)
class View:
    state: Callable[[], ExporterState]
    settings: Callable[[], MetricsConfig]
    clock: Clock


class ViewCollector(Collector):
    """Yields fresh metric families on every scrape from the snapshot; never queries the DB."""

    def __init__(self, view: View) -> None:
        self.view = view

    def cached(self, text: str) -> str:
        seconds = int(self.view.settings().refresh_interval.total_seconds())
        return f"{text} (cached snapshot, refreshed every {seconds}s)"

    def counted(self, text: str) -> str:
        seconds = int(self.view.settings().counts_interval.total_seconds())
        return f"{text} (index count, refreshed every {seconds}s)"

    def aggregated(self, text: str) -> str:
        seconds = int(self.view.settings().aggregate_interval.total_seconds())
        return f"{text} (whole-table aggregate, refreshed every {seconds}s)"


def gauge_from(
    name: str, documentation: str, labels: list[str], samples: Iterable[tuple[tuple[str, ...], float]]
) -> GaugeMetricFamily:
    """A gauge family in a stable order.  The reader hands nothing but valid ``str`` labels; should
    anything else slip through, neither a mixed-type sort nor an unencodable value may turn every
    scrape into an HTTP 500."""
    family = GaugeMetricFamily(name, documentation, labels=labels)
    texts = [([printable(v) for v in values], value) for values, value in samples]
    for values, value in sorted(texts, key=lambda sample: sample[0]):
        family.add_metric(values, value)
    return family


def printable(value: object) -> str:
    """``value`` as label text that always encodes (lone surrogates become backslash escapes)."""
    return str(value).encode("utf-8", "backslashreplace").decode("utf-8")
