"""The daemon's own metrics: prometheus_client's Counter/Gauge/Histogram on one private registry per component.

prometheus_client makes every value thread-safe and renders it.  Two ways in which it differs from the
exposition the daemon has always served are handled here, in one place:

* Every Counter and Histogram also has a ``<name>_created`` series (a gauge family of its own in the text
  format).  :class:`SelfMetrics` drops those samples when it collects.  Deliberately local:
  ``prometheus_client.disable_created_metrics()`` is a process-wide switch that would also change the
  metrics of any other code in the process (tests, an embedding program) depending on what was imported
  first, and ``PROMETHEUS_DISABLE_CREATED_SERIES`` only works when set before prometheus_client is
  imported, so forgetting it in one deployment would silently change the exposition.
* A Gauge without labels is exposed as 0 before it is set, yet some of ours must be absent until known
  (a watermark of 0 would fire every lag alert) or are a whole result replaced at once (a dict per run).
  :class:`ScrapeGauge` reads such a value, kept in a plain attribute that is replaced whole (so a scrape
  sees one consistent value without a lock), and yields nothing while it is ``None``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric

LabelValues = tuple[str, ...]


class ScrapeGauge:
    """A gauge family read at scrape time: ``read`` returns the value per label values, or ``None``
    while the family must be absent."""

    def __init__(
        self,
        name: str,
        documentation: str,
        read: Callable[[], Mapping[LabelValues, float] | None],
        labels: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labels = list(labels)
        self._read = read

    def collect(self) -> Iterator[Metric]:
        values = self._read()
        if values is None:
            return
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labels)
        for label_values, value in values.items():
            family.add_metric(list(label_values), value)
        yield family


def one(value: float | None) -> dict[LabelValues, float] | None:
    """An unlabelled :class:`ScrapeGauge` value (``None``: absent)."""
    return None if value is None else {(): value}


class SelfMetrics:
    """A prometheus_client collector of a component's own metrics, exposed in the order they are created."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)

    def counter(
        self, name: str, documentation: str, labels: Sequence[str] = (), values: Iterable[LabelValues] = ()
    ) -> Counter:
        """``values``: label values exposed at 0 from the start (bounded labels: declare them all)."""
        counter = Counter(name, documentation, labels, registry=self.registry)
        for label_values in values:
            counter.labels(*label_values)
        return counter

    def gauge(
        self, name: str, documentation: str, labels: Sequence[str] = (), values: Iterable[LabelValues] = ()
    ) -> Gauge:
        gauge = Gauge(name, documentation, labels, registry=self.registry)
        for label_values in values:
            gauge.labels(*label_values)
        return gauge

    def histogram(self, name: str, documentation: str, buckets: Sequence[float]) -> Histogram:
        return Histogram(name, documentation, buckets=buckets, registry=self.registry)

    def scrape_gauge(
        self,
        name: str,
        documentation: str,
        read: Callable[[], Mapping[LabelValues, float] | None],
        labels: Sequence[str] = (),
    ) -> None:
        self.registry.register(ScrapeGauge(name, documentation, read, labels))

    def collect(self) -> Iterator[Metric]:
        for family in self.registry.collect():
            created = family.name + "_created"
            family.samples = [sample for sample in family.samples if sample.name != created]
            yield family


def counts(counter: Counter) -> dict[LabelValues, float]:
    """A counter's current values by label values, read through its public ``collect()`` (used to carry
    counters over to the objects that replace them on a config reload)."""
    return {
        tuple(sample.labels.values()): sample.value
        for family in counter.collect()
        for sample in family.samples
        if sample.name == family.name + "_total"
    }
