"""Oversized span rows: read without materialising the value, exported truncated or skipped, the rest flows."""

from __future__ import annotations

import json
import logging
import random
from datetime import timedelta
from pathlib import Path

import pytest
from traces.conftest import NOW
from traces.flujo_db import FlujoWriter, span_hex, trace_hex, typical_run
from traces.receiver import Receiver

from exporter.engines.flujo.traces.source import MAX_VALUE_BYTES, RAW_KEY, TRUNCATED_KEY, TRUNCATED_PREFIX_BYTES


def vm_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(field)


def test_oversized_values_are_truncated_or_skipped(
    tmp_path: Path, make_tailer, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    w = FlujoWriter(tmp_path / "flujo.db")
    start = NOW - timedelta(minutes=5)
    w.start_run("run_big", start)
    spans, end = typical_run(random.Random(8), start)
    spans[1].attributes = {"blob": "y" * (MAX_VALUE_BYTES - 100)}  # just below the limit: exported whole
    spans[2].attributes = {"payload": "z" * (8 * MAX_VALUE_BYTES)}  # above: truncated
    w.finish_run("run_big", "completed", end)
    w.save_spans("run_big", spans)
    w.conn.execute("UPDATE spans SET name = ? WHERE span_id = ?", ("n" * (2 * MAX_VALUE_BYTES), spans[3].span_id))
    tailer, _ = make_tailer(w.path, NOW)
    del spans[2].attributes["payload"]  # the test's own copy of the big value
    Path("/proc/self/clear_refs").write_text("5")  # reset this process's peak RSS (VmHWM)
    before = vm_kib("VmRSS")
    with caplog.at_level(logging.WARNING, logger="exporter.traces"):
        report = tailer.run_once()
    grown_kib = vm_kib("VmHWM") - before
    got = receiver.by_key()

    def received(n: int) -> object:
        return got.get((trace_hex("run_big"), span_hex("run_big", spans[n].span_id)))

    assert report.exported == len(spans)
    long_name = received(3)
    assert long_name is not None and long_name.name == "n" * TRUNCATED_PREFIX_BYTES  # a 2 MiB name, cut
    assert sum("exported truncated" in r.getMessage() for r in caplog.records) == 2
    whole = received(1)
    assert whole is not None and len(whole.attributes["blob"]) == 4096  # the usual value-length limit
    truncated = received(2)
    assert truncated is not None
    assert truncated.attributes[TRUNCATED_KEY] == len(json.dumps({"payload": "z" * (8 * MAX_VALUE_BYTES)}))
    assert truncated.attributes[RAW_KEY].startswith('{"payload": "zzz')
    assert grown_kib < 4 * MAX_VALUE_BYTES // 1024, "the 8 MiB value was materialised"
