"""The tailer's decisions against a DB that flujo keeps writing (simulated with flujo's write pattern)."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from support import parse_exposition, sample, wait_for
from traces.conftest import NOW, make_config
from traces.flujo_db import FlujoWriter, Span, new_span_id, span_hex, trace_hex, typical_run
from traces.receiver import Receiver
from traces.scraped import FAILURES, by_reason, counter

from exporter.reader import StateReader
from exporter.traces import SpanTailer

RNG = random.Random(3)


def finished_run(w: FlujoWriter, run_id: str, start: datetime, **kwargs: object) -> list[Span]:
    w.start_run(run_id, start)
    spans, end = typical_run(RNG, start, **kwargs)  # type: ignore[arg-type]
    w.finish_run(run_id, "completed", end)
    w.save_spans(run_id, spans)
    return spans


def keys(run_id: str, spans: list[Span]) -> set[tuple[str, str]]:
    return {(trace_hex(run_id), span_hex(run_id, s.span_id)) for s in spans}


def test_rewrite_of_an_exported_run_is_not_re_exported(tmp_path: Path, make_tailer, receiver: Receiver) -> None:
    w = FlujoWriter(tmp_path / "flujo.db")
    spans = finished_run(w, "run_a", NOW - timedelta(minutes=5))
    other = finished_run(w, "run_b", NOW - timedelta(minutes=4))
    tailer, clock = make_tailer(w.path, NOW)
    assert tailer.run_once().exported == len(spans) + len(other)
    before = w.span_rowids("run_a")
    w.save_spans("run_a", spans)  # flujo saves again: delete + insert, new rowids
    w.save_spans("run_a", list(reversed(spans)))
    assert set(w.span_rowids("run_a")).isdisjoint(before)
    clock.advance(60)
    assert tailer.run_once().exported == 0
    assert set(receiver.keys) == keys("run_a", spans) | keys("run_b", other)
    assert max(receiver.keys.values()) == 1


def test_grace_period_then_resumed_run_sends_only_new_spans(tmp_path: Path, make_tailer, receiver: Receiver) -> None:
    """A paused (HITL) run: only spans with an end go out after the grace period; after the resume the
    rewritten trace's new spans and the formerly open ones go out once, the others are not repeated."""
    w = FlujoWriter(tmp_path / "flujo.db")
    start = NOW - timedelta(minutes=30)
    w.start_run("run_p", start)
    t0 = start.timestamp()
    root = Span(new_span_id(RNG), "pipeline_root", t0, None, "running", None, {"initial_input": "x"})
    prepare = Span(new_span_id(RNG), "prepare", t0 + 0.1, t0 + 1.0, "completed", root.span_id, {"success": True})
    hitl = Span(new_span_id(RNG), "human_approval", t0 + 1.1, None, "running", root.span_id, {"step_type": "HITL"})
    w.set_status("run_p", "paused", start + timedelta(seconds=2), runs_status="completed")  # as 0.4.35 does
    w.save_spans("run_p", [root, prepare, hitl])
    tailer, clock = make_tailer(w.path, NOW, grace_period="1h", settle_period="5s")

    assert tailer.run_once().exported == 0, "in progress, within the grace period"
    assert tailer.exported_run_ids(["run_p"]) == set()
    clock.advance(3600)
    assert tailer.run_once().exported == 1  # prepare only: open spans wait for the run to finish
    assert set(receiver.keys) == keys("run_p", [prepare])
    assert tailer.run_once().exported == 0, "unchanged signature: nothing re-read, nothing re-sent"
    assert tailer.exported_run_ids(["run_p"]) == set(), "still pending"

    # resume: flujo re-saves the whole tree with the root closed and new steps under the HITL span
    resumed = start + timedelta(hours=2)
    root_done = Span(root.span_id, root.name, t0, resumed.timestamp() + 5, "completed", None, root.attributes)
    apply = Span(new_span_id(RNG), "apply", resumed.timestamp(), resumed.timestamp() + 4, "completed", hitl.span_id)
    w.save_spans("run_p", [root_done, prepare, hitl, apply])
    end = resumed + timedelta(seconds=6)
    w.finish_run("run_p", "completed", end)
    clock.set(end + timedelta(seconds=1))
    assert tailer.run_once().exported == 0, "first seen finished: inside the settle period"
    clock.set(end + timedelta(seconds=10))
    assert tailer.run_once().exported == 3
    assert Counter(receiver.keys.values()) == {1: 4}
    got = receiver.by_key()
    root_got = got[(trace_hex("run_p"), span_hex("run_p", root.span_id))]
    assert root_got.status_code == 1 and root_got.end_ns == round(root_done.end * 1e9)  # type: ignore[operator]
    hitl_got = got[(trace_hex("run_p"), span_hex("run_p", hitl.span_id))]
    assert hitl_got.attributes["flujo.exporter.end_time_source"] == "run_end"
    assert hitl_got.end_ns == round(end.timestamp() * 1e9)
    assert tailer.exported_run_ids(["run_p"]) == {"run_p"}
    assert tailer.run_once().exported == 0


def test_in_progress_run_never_finishing_is_abandoned_once(tmp_path: Path, make_tailer, receiver: Receiver) -> None:
    w = FlujoWriter(tmp_path / "flujo.db")
    start = NOW - timedelta(hours=2)
    w.start_run("run_x", start)
    t0 = start.timestamp()
    root = Span(new_span_id(RNG), "pipeline_root", t0, None, "running")
    child = Span(new_span_id(RNG), "step", t0 + 1, t0 + 3, "completed", root.span_id)
    w.save_spans("run_x", [root, child])
    tailer, clock = make_tailer(w.path, NOW, grace_period="1h", abandon_after="1d")
    assert tailer.run_once().exported == 1
    clock.advance(86400)
    assert tailer.run_once().exported == 1
    got = receiver.by_key()[(trace_hex("run_x"), span_hex("run_x", root.span_id))]
    assert got.attributes["flujo.exporter.end_time_source"] == "last_child_end"
    assert got.end_ns == round((t0 + 3) * 1e9)
    assert tailer.exported_run_ids(["run_x"]) == {"run_x"}, "no longer followed"
    assert tailer.run_once().exported == 0


def test_running_run_exported_when_it_finishes(tmp_path: Path, make_tailer, receiver: Receiver) -> None:
    w = FlujoWriter(tmp_path / "flujo.db")
    w.start_run("run_r", NOW - timedelta(minutes=1))
    tailer, clock = make_tailer(w.path, NOW, settle_period="5s")
    assert tailer.run_once().exported == 0
    spans, end = typical_run(RNG, NOW - timedelta(minutes=1))
    w.finish_run("run_r", "failed", end)  # flujo: final status, run end, then the span save
    clock.set(end + timedelta(minutes=10))  # the writer's clock may be behind: its end time is not trusted
    assert tailer.run_once().exported == 0, "just seen finished: wait for the span save"
    w.save_spans("run_r", spans)
    clock.advance(5)
    assert tailer.run_once().exported == 0, "spans changed since: settle again"
    clock.advance(5)
    assert tailer.run_once().exported == len(spans)


def test_rowid_reuse_after_delete_is_noticed(tmp_path: Path, make_tailer, receiver: Receiver) -> None:
    w = FlujoWriter(tmp_path / "flujo.db")
    a = finished_run(w, "run_1", NOW - timedelta(minutes=9))
    b = finished_run(w, "run_2", NOW - timedelta(minutes=8))
    tailer, clock = make_tailer(w.path, NOW)
    assert tailer.run_once().exported == len(a) + len(b)
    top = w.conn.execute("SELECT rowid FROM runs WHERE run_id = 'run_2'").fetchone()[0]
    w.delete_run("run_2")
    c = finished_run(w, "run_3", NOW - timedelta(minutes=1))
    assert w.conn.execute("SELECT rowid FROM runs WHERE run_id = 'run_3'").fetchone()[0] == top
    clock.advance(60)
    assert tailer.run_once().exported == len(c)
    assert keys("run_3", c) <= set(receiver.keys)


def test_run_deleted_before_export_counts_as_vanished(tmp_path: Path, make_tailer, receiver: Receiver) -> None:
    w = FlujoWriter(tmp_path / "flujo.db")
    w.start_run("run_v", NOW - timedelta(minutes=2))
    w.save_spans("run_v", typical_run(RNG, NOW - timedelta(minutes=2))[0])
    tailer, _ = make_tailer(w.path, NOW)
    tailer.run_once()
    w.delete_run("run_v")
    tailer.run_once()
    assert counter(tailer.stats, "state_exporter_span_runs_vanished") == 1
    assert tailer.backlog() == (0, 0)


def test_exported_run_ids(tmp_path: Path, make_tailer, receiver: Receiver) -> None:
    w = FlujoWriter(tmp_path / "flujo.db")
    finished_run(w, "run_done", NOW - timedelta(minutes=5))
    w.start_run("run_busy", NOW - timedelta(minutes=1))
    tailer, _ = make_tailer(w.path, NOW)
    asked = ["run_done", "run_busy", "run_unknown"]
    assert tailer.exported_run_ids(asked) == {"run_unknown"}, "nothing exported yet"
    tailer.run_once()
    assert tailer.exported_run_ids(asked) == {"run_done", "run_unknown"}
    finished_run(w, "run_new", NOW - timedelta(minutes=1))
    assert "run_new" not in tailer.exported_run_ids(["run_new"]), "not discovered yet"
    result: list[set[str]] = []
    thread = threading.Thread(target=lambda: result.append(tailer.exported_run_ids(asked)))
    thread.start()
    thread.join()
    assert result == [{"run_done", "run_unknown"}]


def test_start_at_end_skips_history_but_follows_runs_in_progress(
    tmp_path: Path, make_tailer, receiver: Receiver
) -> None:
    w = FlujoWriter(tmp_path / "flujo.db")
    finished_run(w, "run_old", NOW - timedelta(days=3))
    w.start_run("run_live", NOW - timedelta(minutes=1))
    tailer, clock = make_tailer(w.path, NOW, start_at="end")
    assert tailer.run_once().exported == 0
    spans, end = typical_run(RNG, NOW - timedelta(minutes=1))
    w.save_spans("run_live", spans)
    w.finish_run("run_live", "completed", end)
    new = finished_run(w, "run_new", NOW)
    clock.set(NOW + timedelta(minutes=10))
    tailer.run_once()
    assert set(receiver.keys) == keys("run_live", spans) | keys("run_new", new)


def test_state_file_of_another_db_starts_over(tmp_path: Path, make_tailer, receiver: Receiver) -> None:
    one = FlujoWriter(tmp_path / "one.db")
    two = FlujoWriter(tmp_path / "two.db")
    finished_run(one, "run_one", NOW - timedelta(minutes=5))
    spans_two = finished_run(two, "run_two", NOW - timedelta(minutes=5))
    state = tmp_path / "state.sqlite"
    first, _ = make_tailer(one.path, NOW, state=state)
    first.run_once()
    first.close()
    second, _ = make_tailer(two.path, NOW, state=state)
    assert second.run_once().exported == len(spans_two)


def test_metrics_backlog_and_watermark(tmp_path: Path, make_tailer, receiver: Receiver) -> None:
    w = FlujoWriter(tmp_path / "flujo.db")
    total = sum(len(finished_run(w, f"run_{i}", NOW - timedelta(minutes=10 - i))) for i in range(5))
    tailer, clock = make_tailer(w.path, NOW, settle_period="5s")
    assert tailer.backlog() == (total, 5)
    assert tailer.run_once().exported == 0  # first sight
    clock.advance(5)
    tailer.run_once()
    registry = CollectorRegistry()
    registry.register(tailer.collector())
    samples = parse_exposition(generate_latest(registry).decode())
    assert sample(samples, "state_exporter_spans_exported_total") == total
    assert sample(samples, "state_exporter_span_backlog_spans") == 0
    assert sample(samples, "state_exporter_span_backlog_runs") == 0
    assert sample(samples, "state_exporter_span_watermark_timestamp_seconds") == NOW.timestamp() + 5
    assert sample(samples, "state_exporter_span_export_duration_seconds_count") >= 1
    assert sample(samples, "state_exporter_spans_dead_lettered_total", reason="malformed") == 0
    assert sample(samples, "state_exporter_span_export_success") == 1
    assert sample(samples, "state_exporter_span_export_supported") == 1
    # a run that just finished holds the watermark at its end until it is exported
    spans, end = typical_run(RNG, NOW + timedelta(seconds=100))
    w.start_run("run_late", NOW + timedelta(seconds=100))
    w.finish_run("run_late", "completed", end)
    w.save_spans("run_late", spans)
    clock.set(end + timedelta(seconds=1))
    tailer.run_once()
    assert tailer.stats.watermark == end.timestamp()
    assert tailer.backlog() == (len(spans), 1)
    clock.set(end + timedelta(seconds=30))
    tailer.run_once()
    assert tailer.stats.watermark == (end + timedelta(seconds=30)).timestamp()
    assert tailer.backlog() == (0, 0)


def test_async_run_follows_the_db_until_stopped(tmp_path: Path, receiver: Receiver) -> None:
    w = FlujoWriter(tmp_path / "flujo.db")
    now = datetime.now(UTC)
    first = finished_run(w, "run_first", now - timedelta(minutes=3))
    config = make_config(receiver, poll_interval="50ms", settle_period="200ms")
    tailer = SpanTailer(config, StateReader(w.path, naive_timezone=UTC), tmp_path / "state.sqlite")

    async def scenario() -> float:
        stop = asyncio.Event()
        task = asyncio.create_task(tailer.run(stop))
        await asyncio.to_thread(wait_for, lambda: receiver.received() == len(first), 10, "the first run's spans")
        second = finished_run(w, "run_second", now - timedelta(minutes=1))
        await asyncio.to_thread(
            wait_for, lambda: receiver.received() == len(first) + len(second), 10, "the second run's spans"
        )
        stop.set()
        started = time.monotonic()
        await asyncio.wait_for(task, 5)
        return time.monotonic() - started

    assert asyncio.run(scenario()) < 2.0
    assert max(receiver.keys.values()) == 1


def test_stop_during_outage_is_prompt(tmp_path: Path, receiver: Receiver) -> None:
    w = FlujoWriter(tmp_path / "flujo.db")
    finished_run(w, "run_o", NOW - timedelta(minutes=3))
    receiver.stop()
    config = make_config(receiver, poll_interval="50ms", retry={"initial_backoff": "1s", "max_backoff": "30s"})
    tailer = SpanTailer(config, StateReader(w.path, naive_timezone=UTC), tmp_path / "state.sqlite")

    async def scenario() -> float:
        stop = asyncio.Event()
        task = asyncio.create_task(tailer.run(stop))
        await asyncio.to_thread(
            wait_for,
            lambda: by_reason(tailer.stats, FAILURES).get("unavailable", 0) >= 1,
            10,
            "an 'unavailable' export failure",
        )
        stop.set()
        started = time.monotonic()
        await asyncio.wait_for(task, 10)
        return time.monotonic() - started

    assert asyncio.run(scenario()) < 2.0
    state = sqlite3.connect(tmp_path / "state.sqlite")
    assert state.execute("SELECT COUNT(*) FROM pending").fetchone()[0] == 1, "nothing committed"


def test_state_file_cannot_be_the_flujo_db(tmp_path: Path, receiver: Receiver) -> None:
    db = FlujoWriter(tmp_path / "flujo.db").path
    with pytest.raises(ValueError, match="the Flujo DB itself"):
        SpanTailer(make_config(receiver), StateReader(db, naive_timezone=UTC), db)
