"""A receiver in trouble for a while: its Retry-After is honoured, and a burst of 400s loses nothing."""

from __future__ import annotations

import itertools
from pathlib import Path

import grpc
import pytest
from traces.conftest import NOW
from traces.receiver import Receiver
from traces.test_traces_delivery import PROTOCOLS, dead_letters, key, write_runs

from exporter.traces.delivery import MAX_RETRY_AFTER_S


def test_retry_after_longer_than_max_backoff_is_honoured(tmp_path: Path, make_tailer, receiver: Receiver) -> None:
    stored = write_runs(tmp_path / "flujo.db", 2)
    receiver.failures_to_inject = 2
    receiver.fail_http_status = 429
    receiver.fail_retry_after = "1.5"  # max_backoff is 50ms in these tests
    tailer, _ = make_tailer(tmp_path / "flujo.db", NOW, "http/protobuf")
    assert tailer.run_once().exported == len(stored)
    times = receiver.request_times
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert len(times) == 3 and all(gap >= 1.45 for gap in gaps), gaps
    assert MAX_RETRY_AFTER_S >= 60  # documented cap: a receiver may ask for a minute or more


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_burst_of_400s_dead_letters_nothing(tmp_path: Path, make_tailer, receiver: Receiver, protocol: str) -> None:
    """A proxy or collector answering 400 to everything for a while is failing, not refusing the data:
    the spans are retried, none is dead-lettered (before: split down to single spans and given up)."""
    stored = write_runs(tmp_path / "flujo.db", 20)
    receiver.failures_to_inject = 25  # every request, probes included, for a while
    receiver.fail_http_status = 400
    receiver.fail_code = grpc.StatusCode.INVALID_ARGUMENT
    state = tmp_path / "state.sqlite"
    tailer, _ = make_tailer(tmp_path / "flujo.db", NOW, protocol, state=state, batch_size=16)
    report = tailer.run_once()
    assert report.dead_lettered == 0 and dead_letters(state) == []
    assert set(receiver.keys) == {key(run_id, span) for run_id, span in stored}
    assert report.exported == len(stored)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_malformed_span_is_still_dead_lettered_during_a_burst(
    tmp_path: Path, make_tailer, receiver: Receiver, protocol: str
) -> None:
    """The rule does not keep a really malformed span forever: once the receiver accepts other requests
    and still refuses that span alone (twice), it is dead-lettered and the rest flows."""
    stored = write_runs(tmp_path / "flujo.db", 6, poison={2: "poison"})
    receiver.failures_to_inject = 5
    receiver.fail_http_status = 400
    receiver.fail_code = grpc.StatusCode.INVALID_ARGUMENT
    state = tmp_path / "state.sqlite"
    tailer, _ = make_tailer(tmp_path / "flujo.db", NOW, protocol, state=state)
    report = tailer.run_once()
    poisoned = [(run_id, span) for run_id, span in stored if span.name == "poison"]
    assert [(r, s, reason) for r, s, reason in dead_letters(state)] == [
        (run_id, span.span_id, "malformed") for run_id, span in poisoned
    ]
    assert set(receiver.keys) == {key(r, s) for r, s in stored if s.name != "poison"}
    assert report.dead_lettered == 1
