"""What every engine promises, checked the same way over every engine's fixture DBs (cases.py).

Detection, read-only opening, a phase for every raw status, the overview agreeing with the
engine's own metrics, stable span ids, and bad rows skipped and counted.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections import Counter
from datetime import UTC
from pathlib import Path

import pytest
from engines import scrape
from engines.cases import CASES, Case
from engines.scrape import Samples
from support import content_checksums
from traces.conftest import make_config
from traces.receiver import Receiver

from exporter import engines
from exporter.config import MetricsConfig
from exporter.model import Phase
from exporter.reader import DatabaseUnavailable, Problem, StateReader
from exporter.reader.connection import read_catalogue
from exporter.traces import replay

every_case = pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
cases_with_spans = pytest.mark.parametrize("case", [c for c in CASES if c.has_spans], ids=lambda case: case.id)


def expose(db: Path, case: Case, *, engine: str = engines.AUTO) -> Samples:
    """Every tier refreshed once at the case's clock, rendered as /metrics renders it."""
    return scrape.expose(db, case.now, engine=engine)


def by_label(samples: Samples, family: str, label: str) -> Counter[str]:
    found: Counter[str] = Counter()
    for (name, labels), value in samples.items():
        if name == family:
            found[dict(labels)[label]] += value
    return found


@every_case
def test_detected_as_its_engine_and_layout(case: Case, fixture_copy) -> None:
    db = fixture_copy(case.fixture)
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        catalogue = read_catalogue(conn, db)
    finally:
        conn.close()
    for wanted in (engines.AUTO, case.engine):
        schema = engines.detect(catalogue, db, wanted)
        assert (schema.engine, str(schema.layout)) == (case.engine, case.layout)
    for other in set(engines.ENGINE_NAMES) - {case.engine}:
        with pytest.raises(DatabaseUnavailable) as caught:
            engines.detect(catalogue, db, other)
        assert caught.value.problem is Problem.UNKNOWN_LAYOUT and str(db) in caught.value.message
    samples = expose(db, case)
    assert samples[("state_exporter_engine_info", frozenset({("engine", case.engine), ("layout", case.layout)}))] == 1


@every_case
def test_opened_read_only(case: Case, fixture_copy) -> None:
    """Every tier and the finished-run cursor leave the file's content and its directory as they were."""
    db = fixture_copy(case.fixture)
    before, listing = content_checksums(db), sorted(os.listdir(db.parent))
    expose(db, case)
    assert content_checksums(db) == before
    created = set(os.listdir(db.parent)) - set(listing)
    assert created <= {f"{db.name}-wal", f"{db.name}-shm"}, created  # what any SQLite reader of a WAL file makes


@every_case
def test_every_raw_status_has_a_phase(case: Case, fixture_copy) -> None:
    samples = expose(fixture_copy(case.fixture), case)
    statuses = by_label(samples, case.runs_family, case.status_label)
    assert sum(statuses.values()) > 0, f"{case.runs_family} is empty: the case proves nothing"
    phases = engines.engine(case.engine).phases
    unmapped = {status for status, count in statuses.items() if count and phases.phase_of(status) is None}
    assert unmapped == set()
    assert set(phases.statuses) >= {status for status, count in statuses.items() if count}


@every_case
def test_overview_agrees_with_the_engine_metrics(case: Case, fixture_copy) -> None:
    samples = expose(fixture_copy(case.fixture), case)
    engine = engines.engine(case.engine)
    runs = by_label(samples, "workflow_runs", "phase")
    assert set(runs) == {phase.value for phase in Phase}
    assert runs == {
        phase.value: n
        for phase, n in engine.phases.fold(by_label(samples, case.runs_family, case.status_label).items()).items()
    }
    stuck = by_label(samples, "workflow_runs_stuck", "reason")
    assert set(stuck) == {reason.value for reason in engine.stuck_reasons}
    assert sum(stuck.values()) == sum(v for (name, _), v in samples.items() if name == case.stuck_family)
    finished = by_label(samples, "workflow_runs_finished_total", "phase")
    if case.finished_family is None:  # nothing can be seen finishing: absent, not a zero claiming so
        assert (
            finished == {}
            and ("workflow_run_duration_seconds_count", frozenset({("engine", case.engine)})) not in samples
        )
    else:
        native = engine.phases.fold(by_label(samples, case.finished_family, case.status_label).items())
        assert finished == {phase.value: n for phase, n in native.items() if phase.is_final}
        assert sum(finished.values()) > 0
    if case.duration_family is not None:
        count = samples[("workflow_run_duration_seconds_count", frozenset({("engine", case.engine)}))]
        native_count = sum(v for (name, _), v in samples.items() if name == f"{case.duration_family}_count")
        assert count == native_count


@every_case
def test_bad_row_is_skipped_and_counted(case: Case, fixture_copy) -> None:
    db = fixture_copy(case.fixture)
    clean = expose(db, case)
    table, column = case.corrupt(db)
    dirty = expose(db, case)  # a refresh that reads the bad row still succeeds (asserted in expose)
    key = ("state_exporter_bad_values_total", frozenset({("table", table), ("column", column)}))
    assert dirty.get(key, 0) >= 1 > clean.get(key, 0)
    clean_runs, dirty_runs = by_label(clean, "workflow_runs", "phase"), by_label(dirty, "workflow_runs", "phase")
    assert sum(clean_runs.values()) - sum(dirty_runs.values()) == 1  # that row, and only it, is left out


@cases_with_spans
def test_span_ids_are_stable(case: Case, fixture_copy, tmp_path: Path) -> None:
    """Ids derive from the stored data, not from the file, its rowids or the export: two exports,
    from two copies, give the same ids, each id once (so a re-send deduplicates)."""
    first = fixture_copy(case.fixture)
    second = tmp_path / "elsewhere" / case.fixture
    second.parent.mkdir(parents=True)
    shutil.copyfile(first, second)
    keys = []
    for n, db in enumerate((first, second)):
        with Receiver() as receiver:
            result = replay(make_config(receiver), StateReader(db, naive_timezone=UTC), tmp_path / f"state{n}.sqlite")
            assert result.complete and result.spans_exported > 0
            assert set(receiver.keys.values()) == {1} and len(receiver.keys) == result.spans_exported
            keys.append(set(receiver.keys))
    assert keys[0] == keys[1]


@every_case
def test_stuck_alerts_judge_what_the_metrics_judge(case: Case, fixture_copy) -> None:
    """The stuck-run alert job's list and the stuck gauge come from one rule with one setting."""
    db = fixture_copy(case.fixture)
    samples = expose(db, case)
    engine = engines.engine(case.engine)
    with StateReader(db, naive_timezone=UTC).session() as session:
        runs = engine.stuck_runs(session, case.now, MetricsConfig())
    listed = Counter(run.reason.value for run in runs)
    gauge = by_label(samples, "workflow_runs_stuck", "reason")
    assert {reason: listed[reason] for reason in gauge} == gauge
    assert all(run.updated_at + run.threshold < case.now for run in runs)
    assert all(engine.phases.phase_of(run.status) is run.phase for run in runs)
