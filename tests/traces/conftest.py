"""Fixtures of the span-export tests: a live OTLP receiver and tailers pointed at it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from traces.receiver import Receiver

from exporter.clock import ManualClock
from exporter.reader import StateReader
from exporter.traces import SpanTailer, TracesConfig

FAST_RETRY = {"initial_backoff": "10ms", "max_backoff": "50ms"}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as live:
        yield live


def endpoint_for(receiver: Receiver, protocol: str) -> str:
    return receiver.grpc_endpoint if protocol == "grpc" else receiver.http_endpoint


def make_config(receiver: Receiver, protocol: str = "grpc", **overrides: Any) -> TracesConfig:
    data: dict[str, Any] = {
        "enabled": True,
        "protocol": protocol,
        "endpoint": endpoint_for(receiver, protocol),
        "retry": FAST_RETRY,
        "timeout": "5s",
        "settle_period": "0s",
    }
    data.update(overrides)
    return TracesConfig.model_validate(data)


@pytest.fixture
def make_tailer(tmp_path: Path, receiver: Receiver) -> Iterator[Callable[..., tuple[SpanTailer, ManualClock]]]:
    """``make_tailer(db, now, protocol="grpc", **config)`` -> (tailer, clock); closed after the test."""
    made: list[SpanTailer] = []

    def make(
        db: Path, now: datetime, protocol: str = "grpc", state: Path | None = None, **overrides: Any
    ) -> tuple[SpanTailer, ManualClock]:
        clock = ManualClock(now)
        reader = StateReader(db, naive_timezone=UTC)
        tailer = SpanTailer(
            make_config(receiver, protocol, **overrides),
            reader,
            state or tmp_path / f"state-{len(made)}.sqlite",
            clock=clock,
        )
        made.append(tailer)
        return tailer, clock

    yield make
    for tailer in made:
        tailer.close()


NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
