"""Delivery over the real protocols: retries, poison spans, partial success, limits, TLS, headers, gzip."""

from __future__ import annotations

import random
import sqlite3
import threading
from datetime import timedelta
from pathlib import Path

import pytest
import trustme
from traces.conftest import NOW, make_config
from traces.flujo_db import FlujoWriter, Span, new_span_id, span_hex, trace_hex, typical_run
from traces.receiver import Receiver, TLSFiles
from traces.scraped import DEAD, EXPORTED, FAILURES, by_reason, counter

from exporter.clock import ManualClock
from exporter.reader import StateReader
from exporter.timeparse import UTC
from exporter.traces import SpanTailer

PROTOCOLS = ["grpc", "http/protobuf"]


def write_runs(path: Path, runs: int, seed: int = 1, poison: dict[int, str] | None = None) -> list[tuple[str, Span]]:
    """``runs`` finished runs; ``poison`` renames the first step of run i.  Returns (run_id, span) pairs."""
    rng = random.Random(seed)
    w = FlujoWriter(path)
    stored: list[tuple[str, Span]] = []
    for i in range(runs):
        run_id = f"run_{i:03d}"
        start = NOW - timedelta(minutes=60 - i)
        w.start_run(run_id, start)
        spans, end = typical_run(rng, start)
        if poison and i in poison:
            spans[1].name = poison[i]
        w.finish_run(run_id, "completed", end)
        w.save_spans(run_id, spans)
        stored.extend((run_id, span) for span in spans)
    w.close()
    return stored


def key(run_id: str, span: Span) -> tuple[str, str]:
    return trace_hex(run_id), span_hex(run_id, span.span_id)


def dead_letters(state: Path) -> list[tuple[str, str, str]]:
    conn = sqlite3.connect(state)
    try:
        return list(conn.execute("SELECT run_id, span_id, reason FROM dead_letters ORDER BY id"))
    finally:
        conn.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_failures_are_retried_until_accepted(tmp_path: Path, make_tailer, receiver: Receiver, protocol: str) -> None:
    stored = write_runs(tmp_path / "flujo.db", 5)
    receiver.failures_to_inject = 3
    tailer, _ = make_tailer(tmp_path / "flujo.db", NOW, protocol)
    report = tailer.run_once()
    assert report.exported == len(stored) and receiver.received() == len(stored)
    assert max(receiver.keys.values()) == 1, "a failed request was not counted as received"
    stats = tailer.stats
    assert by_reason(stats, FAILURES) == {"unavailable" if protocol == "grpc" else "http_503": 3}
    assert counter(stats, "state_exporter_spans_failed") == 3 * len(stored)
    assert counter(stats, EXPORTED) == len(stored)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_poison_span_is_dead_lettered_while_the_rest_flows(
    tmp_path: Path, make_tailer, receiver: Receiver, protocol: str
) -> None:
    stored = write_runs(tmp_path / "flujo.db", 30, poison={7: "poison"})
    state = tmp_path / "state.sqlite"
    tailer, clock = make_tailer(tmp_path / "flujo.db", NOW, protocol, state=state, batch_size=64)
    report = tailer.run_once()
    bad = [(run_id, span) for run_id, span in stored if span.name == "poison"]
    assert len(bad) == 1
    good = {key(run_id, span) for run_id, span in stored} - {key(*bad[0])}
    assert set(receiver.keys) == good and max(receiver.keys.values()) == 1
    assert report.dead_lettered == 1 and report.exported == len(good)
    assert dead_letters(state) == [(bad[0][0], bad[0][1].span_id, "malformed")]
    assert by_reason(tailer.stats, DEAD) == {"malformed": 1}
    assert tailer.exported_run_ids(["run_007"]) == {"run_007"}, "dead-lettered counts as handled"
    clock.advance(60)
    requests = receiver.requests
    assert tailer.run_once().exported == 0 and receiver.requests == requests, "not retried forever"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_too_large_span_is_dead_lettered(tmp_path: Path, make_tailer, receiver: Receiver, protocol: str) -> None:
    stored = write_runs(tmp_path / "flujo.db", 6, poison={2: "huge"})
    state = tmp_path / "state.sqlite"
    tailer, _ = make_tailer(tmp_path / "flujo.db", NOW, protocol, state=state)
    tailer.run_once()
    assert receiver.received() == len(stored) - 1
    assert [reason for *_, reason in dead_letters(state)] == ["too_large"]


def test_unusable_rows_are_dead_lettered_locally(tmp_path: Path, make_tailer, receiver: Receiver) -> None:
    w = FlujoWriter(tmp_path / "flujo.db")
    rng = random.Random(5)
    w.start_run("run_bad", NOW - timedelta(minutes=5))
    spans, end = typical_run(rng, NOW - timedelta(minutes=5))
    w.finish_run("run_bad", "completed", end)
    w.save_spans("run_bad", spans)
    # a start time that is text, and a name that is not valid UTF-8 (SQLite stores what it is given)
    w.conn.execute("UPDATE spans SET start_time = 'garbage' WHERE span_id = ?", (spans[1].span_id,))
    w.conn.execute("UPDATE spans SET name = CAST(x'6c6f6164ff' AS TEXT) WHERE span_id = ?", (spans[2].span_id,))
    state = tmp_path / "state.sqlite"
    tailer, _ = make_tailer(w.path, NOW, state=state)
    report = tailer.run_once()
    assert report.dead_lettered == 1 and report.exported == len(spans) - 1
    assert dead_letters(state) == [("run_bad", spans[1].span_id, "invalid_start_time")]
    renamed = receiver.by_key()[key("run_bad", spans[2])]
    assert renamed.name == "load\ufffd"
    assert by_reason(tailer.stats, DEAD) == {"invalid_start_time": 1}


def test_partial_success_is_counted_and_committed(tmp_path: Path, make_tailer, receiver: Receiver) -> None:
    stored = write_runs(tmp_path / "flujo.db", 4)
    receiver.partial_reject = 1
    tailer, clock = make_tailer(tmp_path / "flujo.db", NOW, batch_size=5)
    tailer.run_once()
    requests = receiver.requests
    assert counter(tailer.stats, "state_exporter_spans_rejected") == requests
    assert counter(tailer.stats, EXPORTED) == len(stored) - requests
    clock.advance(60)
    assert tailer.run_once().exported == 0, "a partial success is final: not re-sent"


def test_batches_respect_count_and_byte_limits(tmp_path: Path, make_tailer, receiver: Receiver) -> None:
    stored = write_runs(tmp_path / "flujo.db", 20)
    tailer, _ = make_tailer(tmp_path / "flujo.db", NOW, batch_size=7)
    tailer.run_once()
    assert receiver.received() == len(stored)
    assert receiver.requests == -(-len(stored) // 7)
    receiver.clear()
    tailer2, _ = make_tailer(tmp_path / "flujo.db", NOW, max_batch_bytes=2048)
    tailer2.run_once()
    assert receiver.received() == len(stored)
    assert receiver.requests > len(stored) // 7


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    ca = trustme.CA()
    folder = tmp_path_factory.mktemp("pki")
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("client.example")
    files = {
        "ca": folder / "ca.pem",
        "server_cert": folder / "server.pem",
        "server_key": folder / "server.key",
        "client_cert": folder / "client.pem",
        "client_key": folder / "client.key",
    }
    ca.cert_pem.write_to_path(str(files["ca"]))
    files["server_cert"].write_bytes(b"".join(blob.bytes() for blob in server.cert_chain_pems))
    server.private_key_pem.write_to_path(str(files["server_key"]))
    files["client_cert"].write_bytes(b"".join(blob.bytes() for blob in client.cert_chain_pems))
    client.private_key_pem.write_to_path(str(files["client_key"]))
    return files


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_tls_mutual_auth_headers_and_gzip(tmp_path: Path, pki: dict[str, Path], protocol: str) -> None:
    stored = write_runs(tmp_path / "flujo.db", 3)
    tls = TLSFiles(pki["server_cert"], pki["server_key"], client_ca=pki["ca"])
    with Receiver(tls=tls) as secure:
        assert secure.grpc_endpoint.startswith("https://")
        config = make_config(
            secure,
            protocol,
            headers={"Authorization": "Bearer s3cret", "X-Tenant": "flujo"},
            compression="gzip",
            tls={"ca_file": str(pki["ca"]), "cert_file": str(pki["client_cert"]), "key_file": str(pki["client_key"])},
        )
        reader = StateReader(tmp_path / "flujo.db", naive_timezone=UTC)
        tailer = SpanTailer(config, reader, tmp_path / "state.sqlite", clock=ManualClock(NOW))
        try:
            assert tailer.run_once().exported == len(stored)
        finally:
            tailer.close()
        assert secure.received() == len(stored)
        headers = secure.headers[-1]
        assert headers["authorization"] == "Bearer s3cret" and headers["x-tenant"] == "flujo"
        if protocol == "http/protobuf":
            assert headers["content-encoding"] == "gzip"
        else:
            assert headers["user-agent"].startswith("flujo-state-exporter/")


def test_unverifiable_server_is_retried_not_skipped(tmp_path: Path, pki: dict[str, Path]) -> None:
    """Without the CA the handshake fails: a retryable failure; nothing is committed."""
    write_runs(tmp_path / "flujo.db", 1)
    tls = TLSFiles(pki["server_cert"], pki["server_key"])
    with Receiver(tls=tls) as secure:
        config = make_config(secure, "http/protobuf")
        reader = StateReader(tmp_path / "flujo.db", naive_timezone=UTC)
        tailer = SpanTailer(config, reader, tmp_path / "state.sqlite", clock=ManualClock(NOW))
        halt = threading.Event()
        timer = threading.Timer(0.5, halt.set)
        timer.start()
        try:
            report = tailer.run_once(halt)
        finally:
            timer.cancel()
            tailer.close()
        assert report.interrupted and secure.received() == 0
        assert by_reason(tailer.stats, FAILURES).get("connection", 0) >= 1
        assert tailer.exported_run_ids(["run_000"]) == set()


def test_spans_keep_their_ids_when_re_sent(tmp_path: Path, make_tailer, receiver: Receiver) -> None:
    """Two independent exporters (fresh state) send the same ids: a re-send is idempotent at the backend."""
    stored = write_runs(tmp_path / "flujo.db", 3)
    first, _ = make_tailer(tmp_path / "flujo.db", NOW)
    first.run_once()
    second, _ = make_tailer(tmp_path / "flujo.db", NOW, protocol="http/protobuf")
    second.run_once()
    assert set(receiver.keys.values()) == {2} and len(receiver.keys) == len(stored)


def test_span_with_unknown_parent_keeps_the_link(tmp_path: Path, make_tailer, receiver: Receiver) -> None:
    w = FlujoWriter(tmp_path / "flujo.db")
    w.start_run("run_o", NOW - timedelta(minutes=2))
    t = (NOW - timedelta(minutes=2)).timestamp()
    orphan = Span(new_span_id(), "orphan", t, t + 1, "completed", "no-such-parent")
    w.save_spans("run_o", [orphan])
    w.finish_run("run_o", "completed", NOW - timedelta(minutes=1))
    tailer, _ = make_tailer(w.path, NOW)
    tailer.run_once()
    got = receiver.by_key()[key("run_o", orphan)]
    assert got.parent_span_id == span_hex("run_o", "no-such-parent")
