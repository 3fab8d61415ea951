"""The snapshot exposition is rendered once per snapshot; live metrics are always fresh."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge
from support import parse_exposition

from exporter.exposition import CachedExposition


def test_cached_until_the_token_changes_live_part_always_fresh() -> None:
    snapshot, live = CollectorRegistry(), CollectorRegistry()
    gauge = Gauge("flujo_demo", "snapshot value", registry=snapshot)
    counter = Counter("state_exporter_demo", "live value", registry=live)
    token: list[object] = [object()]
    exposition = CachedExposition(snapshot, live, lambda: (token[0],))
    gauge.set(1)
    exposition.render("text/plain")
    gauge.set(2)
    counter.inc()
    second = parse_exposition(exposition.render("text/plain")[0].decode())
    assert second[("flujo_demo", frozenset())] == 1  # same snapshot token: cached
    assert second[("state_exporter_demo_total", frozenset())] == 1  # live: fresh
    token[0] = object()
    third = parse_exposition(exposition.render("text/plain")[0].decode())
    assert third[("flujo_demo", frozenset())] == 2


def test_openmetrics_has_exactly_one_eof_at_the_end() -> None:
    snapshot, live = CollectorRegistry(), CollectorRegistry()
    Gauge("flujo_demo", "snapshot value", registry=snapshot).set(3)
    Gauge("state_exporter_live", "live value", registry=live).set(4)
    exposition = CachedExposition(snapshot, live, lambda: ())
    body, content_type = exposition.render("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text; version=1.0.0")
    text = body.decode()
    assert text.count("# EOF") == 1 and text.endswith("# EOF\n")
    assert "flujo_demo 3.0" in text and "state_exporter_live 4.0" in text
