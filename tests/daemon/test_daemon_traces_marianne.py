"""The daemon with `traces.enabled` on Marianne files: a workspace DB's finished job runs reach a real
OTLP receiver once across a restart; the conductor registry has no spans and says so."""

from __future__ import annotations

import time
from pathlib import Path

from daemon.test_daemon_traces import finished_only_config
from engines.cases import MARIANNE_REGISTRY, MARIANNE_WORKSPACE
from processes import http_get, running_daemon
from support import parse_exposition, sample, wait_for
from traces.receiver import Receiver

# The fixture's finished runs (etl-report, flaky-import, old-import, skip-run): jobs, sheets that ran, attempts.
FINISHED_SPANS = (1 + 3 + 4) + (1 + 2 + 4) + (1 + 2 + 2) + (1 + 2 + 1)


config = finished_only_config  # runs that never finish wait for ten years: only the finished go out


def test_daemon_exports_marianne_runs_once_across_a_restart(fixture_copy, tmp_path: Path) -> None:
    db = fixture_copy(MARIANNE_WORKSPACE)
    state = tmp_path / "traces-state.sqlite"
    with Receiver() as receiver:
        with running_daemon(tmp_path, config=config(db, receiver, state)) as daemon:
            receiver.wait_for(FINISHED_SPANS, timeout=30)
            s = parse_exposition(http_get(daemon.url + "/metrics")[1])
            assert sample(s, "state_exporter_span_export_supported") == 1
        with running_daemon(tmp_path, config=config(db, receiver, state)):
            time.sleep(2.0)  # ten polls of the restarted daemon (a process: no clock to drive)
        assert set(receiver.keys.values()) == {1} and len(receiver.keys) == FINISHED_SPANS
        roots = [span for span in receiver.spans if not span.parent_span_id]
        assert len({span.trace_id for span in receiver.spans}) == len(roots) == 4
        assert {span.resource["service.name"] for span in receiver.spans} == {"marianne"}


def test_daemon_on_the_registry_exports_nothing(fixture_copy, tmp_path: Path) -> None:
    db = fixture_copy(MARIANNE_REGISTRY)
    with Receiver() as receiver:
        with running_daemon(tmp_path, config=config(db, receiver, tmp_path / "traces-state.sqlite")) as daemon:

            def supported() -> float | None:
                exposed = parse_exposition(http_get(daemon.url + "/metrics")[1])
                return exposed.get(("state_exporter_span_export_supported", frozenset()))

            wait_for(lambda: supported() is not None, 30, "the first export cycle")
            assert supported() == 0
            wait_for(lambda: "span export not supported" in daemon.output(), 30, "the log line")
            assert "(marianne registry:" in daemon.output()
        assert receiver.requests == 0
