"""``traces.id_namespace``: two DBs holding the same run ids give different traces, each source's ids
stay the same across replays, the resource names the source, and without a namespace nothing changes.

Expected ids are computed here from the documented formula, independently of the exporter's code."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import pytest
from engines.cases import CASES, PYNENC_FIXTURES, Case
from pydantic import ValidationError
from support import FIXTURES, SMALL
from traces.conftest import make_config
from traces.flujo_db import span_hex, stored_spans, trace_hex
from traces.receiver import ReceivedSpan, Receiver

from exporter.reader import StateReader
from exporter.timeparse import UTC
from exporter.traces import ids, replay
from exporter.traces.__main__ import main
from exporter.traces.config import TracesConfig
from exporter.traces.tailer import SOURCE_ATTRIBUTE

ROOT = Path(__file__).resolve().parents[2]


def salted(namespace: str, data: bytes, size: int) -> str:
    return hashlib.sha256(b"\x00ns:" + namespace.encode() + b"\x00" + data).digest()[:size].hex()


def copy_of(name: str, into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    target = into / Path(name).name
    shutil.copyfile(FIXTURES / name, target)
    return target


def replayed(receiver: Receiver, db: Path, state: Path, namespace: str | None) -> list[ReceivedSpan]:
    receiver.clear()
    config = make_config(receiver, id_namespace=namespace)
    result = replay(config, StateReader(db, naive_timezone=UTC), state)
    assert result.complete and result.spans_exported > 0
    return list(receiver.spans)


def test_default_scheme_is_the_module_formula() -> None:
    default = ids.IdScheme()
    for run_id, span in (("run_1", "a"), ("ab", "c"), ("", ""), ("ü\udcff", "x")):
        assert default.trace_id(run_id) == ids.trace_id(run_id)
        assert default.span_id(run_id, span) == ids.span_id(run_id, span) == default.span_ids(run_id)(span)
        assert default.derived_trace_id(b"x-trace:", run_id, span) == ids.derived_trace_id(b"x-trace:", run_id, span)
        assert default.derived_span_id(b"x-span:", run_id, span) == ids.derived_span_id(b"x-span:", run_id, span)
        assert default.pynenc_trace_id(run_id) == ids.pynenc_trace_id(run_id)
        assert default.pynenc_span_id(run_id) == ids.pynenc_span_id(run_id)
    assert ids.trace_id("run_1").hex() == trace_hex("run_1")


def test_namespaced_scheme_salts_every_formula() -> None:
    scheme = ids.IdScheme("site-a")
    assert scheme.trace_id("r").hex() == salted("site-a", b"flujo-trace:r", 16)
    assert scheme.span_id("r", "s").hex() == salted("site-a", b"flujo-span:r\x00s", 8)
    assert scheme.span_ids("r")("s") == scheme.span_id("r", "s")
    assert scheme.derived_trace_id(b"seeknal-trace:", "a", "b").hex() == salted("site-a", b"seeknal-trace:a\x00b", 16)
    assert scheme.derived_span_id(b"seeknal-span:", "a").hex() == salted("site-a", b"seeknal-span:a", 8)
    assert scheme.pynenc_span_id("i").hex() == salted("site-a", b"pynenc-span:i", 8)
    assert ids.IdScheme("site-b").trace_id("r") != scheme.trace_id("r") != ids.trace_id("r")
    assert ids.IdScheme("site-a") == scheme


@pytest.mark.parametrize("bad", ["", "a\nb", "nul\x00", "x" * 129])
def test_namespace_is_validated(bad: str) -> None:
    with pytest.raises(ValidationError, match="id_namespace"):
        TracesConfig.model_validate({"id_namespace": bad})
    with pytest.raises(ValueError, match="printable"):
        ids.IdScheme(bad)


def test_two_flujo_dbs_with_the_same_runs_give_different_traces(tmp_path: Path, receiver: Receiver) -> None:
    a, b = copy_of(SMALL, tmp_path / "a"), copy_of(SMALL, tmp_path / "b")
    rows = stored_spans(a)
    plain = replayed(receiver, a, tmp_path / "plain.sqlite", None)
    assert {(s.trace_id, s.span_id) for s in plain} == {
        (trace_hex(r["run_id"]), span_hex(r["run_id"], r["span_id"])) for r in rows
    }, "default: ids unchanged"
    assert all(SOURCE_ATTRIBUTE not in s.resource for s in plain)

    first = replayed(receiver, a, tmp_path / "a1.sqlite", "site-a")
    other = replayed(receiver, b, tmp_path / "b.sqlite", "site-b")
    again = replayed(receiver, a, tmp_path / "a2.sqlite", "site-a")  # a fresh state file: a full re-send
    assert {s.trace_id for s in first}.isdisjoint({s.trace_id for s in other})
    assert {s.trace_id for s in first}.isdisjoint({s.trace_id for s in plain})
    keys = {(s.trace_id, s.span_id, s.parent_span_id) for s in first}
    assert keys == {(s.trace_id, s.span_id, s.parent_span_id) for s in again}, "same namespace: same ids"
    assert {(s.trace_id, s.span_id) for s in first} == {
        (
            salted("site-a", b"flujo-trace:" + r["run_id"].encode(), 16),
            salted("site-a", b"flujo-span:" + r["run_id"].encode() + b"\x00" + r["span_id"].encode(), 8),
        )
        for r in rows
    }
    span_ids = {s.span_id for s in first}
    assert all(s.parent_span_id in span_ids for s in first if s.parent_span_id), "every parent present"
    assert {s.resource[SOURCE_ATTRIBUTE] for s in first} == {"site-a"}
    assert {s.resource[SOURCE_ATTRIBUTE] for s in other} == {"site-b"}
    assert {s.resource["service.name"] for s in first} == {"flujo"}


def test_pynenc_ids_take_the_namespace(tmp_path: Path, receiver: Receiver) -> None:
    fixture = next(iter(PYNENC_FIXTURES))
    db = copy_of(fixture, tmp_path / "p")
    plain = replayed(receiver, db, tmp_path / "plain.sqlite", None)
    named = replayed(receiver, db, tmp_path / "named.sqlite", "site-p")
    assert len(plain) == len(named)
    expected = set()
    for span in plain:
        invocation = span.attributes["pynenc.invocation_id"]
        assert span.span_id == hashlib.sha256(b"pynenc-span:" + invocation.encode()).digest()[:8].hex()
        expected.add(salted("site-p", b"pynenc-span:" + invocation.encode(), 8))
    assert {s.span_id for s in named} == expected
    assert {s.trace_id for s in plain}.isdisjoint({s.trace_id for s in named})
    assert {s.resource[SOURCE_ATTRIBUTE] for s in named} == {"site-p"}


SPAN_CASES = [case for case in CASES if case.has_spans]


@pytest.mark.parametrize("case", SPAN_CASES, ids=[case.id for case in SPAN_CASES])
def test_every_engine_with_spans_takes_the_namespace(case: Case, tmp_path: Path, receiver: Receiver) -> None:
    """Whatever engine rebuilds or stores spans: a namespace moves every trace and span id, keeps the
    tree whole, and names the source."""
    db = copy_of(case.fixture, tmp_path / "db")
    plain = replayed(receiver, db, tmp_path / "plain.sqlite", None)
    named = replayed(receiver, db, tmp_path / "named.sqlite", "site-x")
    assert len(plain) == len(named) > 0
    assert {s.trace_id for s in plain}.isdisjoint({s.trace_id for s in named})
    assert {s.span_id for s in plain}.isdisjoint({s.span_id for s in named})
    span_ids = {s.span_id for s in named}
    assert all(s.parent_span_id in span_ids for s in named if s.parent_span_id), "every parent present"
    assert {s.resource[SOURCE_ATTRIBUTE] for s in named} == {"site-x"}


# A span source that calls the module-level formulas would ignore the namespace: each one takes its ids
# from the scheme it is built with (Limits.ids), the one place traces.id_namespace reaches.
_MODULE_FORMULA = re.compile(r"(?<![.\w])ids\.(trace_id|span_id|SpanIds|derived_trace_id|derived_span_id|pynenc_\w+)\(")


def test_span_sources_take_their_ids_from_the_scheme() -> None:
    sources = sorted((ROOT / "exporter" / "engines").glob("*/traces/*.py"))
    assert len(sources) >= 4
    offenders = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in sources
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if _MODULE_FORMULA.search(line)
    ]
    assert offenders == [], "use the source's IdScheme (limits.ids) instead:\n" + "\n".join(offenders)


def test_replay_command_takes_the_namespace(tmp_path: Path, receiver: Receiver) -> None:
    db = copy_of(SMALL, tmp_path / "a")
    argv = ["replay", "--db", str(db), "--state", str(tmp_path / "s.sqlite"), "--endpoint", receiver.grpc_endpoint]
    assert main([*argv, "--insecure", "--no-progress", "--timezone", "UTC", "--id-namespace", "site-a"]) == 0
    rows = stored_spans(db)
    assert {s.trace_id for s in receiver.spans} == {
        salted("site-a", b"flujo-trace:" + r["run_id"].encode(), 16) for r in rows
    }
    assert {s.resource[SOURCE_ATTRIBUTE] for s in receiver.spans} == {"site-a"}
    assert main([*argv, "--id-namespace", "bad\nname"]) == 2
