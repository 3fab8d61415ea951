"""The refresh state as Flujo's own types: another engine's tiers read as "not read yet"."""

from __future__ import annotations

from dataclasses import dataclass

from exporter.collectors.base import ViewCollector
from exporter.engines.flujo.layout import Schema
from exporter.engines.flujo.snapshot import AggregateStats, CountStats, FastStats
from exporter.engines.flujo.tracking import EMPTY_TOTALS, FinishedTotals
from exporter.refresh import ExporterState


@dataclass(frozen=True)
class FlujoState:
    schema: Schema | None
    fast: FastStats | None
    counts: CountStats | None
    aggregates: AggregateStats | None
    finished: FinishedTotals

    @classmethod
    def of(cls, state: ExporterState) -> FlujoState:
        return cls(
            schema=state.schema if isinstance(state.schema, Schema) else None,
            fast=state.fast if isinstance(state.fast, FastStats) else None,
            counts=state.counts if isinstance(state.counts, CountStats) else None,
            aggregates=state.aggregates if isinstance(state.aggregates, AggregateStats) else None,
            finished=state.finished if isinstance(state.finished, FinishedTotals) else EMPTY_TOTALS,
        )


class FlujoCollector(ViewCollector):
    def flujo_state(self) -> FlujoState:
        return FlujoState.of(self.view.state())
