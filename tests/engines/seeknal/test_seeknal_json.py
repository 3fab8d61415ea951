"""The JSON file backend (``target/run_state.json`` + its ``.bak.<run_id>`` copies): every value of
the oracle's ``file_backend`` section through the real refresh and exposition, with the clock
pinned at its ``computed_at_utc`` and the writer's zone Europe/Berlin; the three forms of
``db.path``; a truncated or invalid file keeps the last good values and says why; nothing is
created or changed next to the user's files."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from engines.cases import SEEKNAL_FIXTURE, pynenc_expected
from prometheus_client import CollectorRegistry
from support import FIXTURES, checksums, parse_exposition

from exporter.clock import ManualClock
from exporter.collectors import View, build_registry
from exporter.config import MetricsConfig
from exporter.exposition import CachedExposition
from exporter.model import Phase
from exporter.reader import Problem, StateReader
from exporter.refresh import Refresher

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
TRUTH: dict[str, Any] = pynenc_expected(SEEKNAL_FIXTURE)
FILES: dict[str, Any] = TRUTH["file_backend"]
NOW = datetime.fromisoformat(TRUTH["computed_at_utc"])
BERLIN = ZoneInfo(TRUTH["writer_tz"])
TARGET = FIXTURES / "seeknal" / "seeknal-2.13.0-sample.target"
FINAL = ("success", "failed")


def refresher(path: Path, now: datetime = NOW, tz: tzinfo = BERLIN) -> tuple[Refresher, ManualClock, Any]:
    metrics = MetricsConfig()
    clock = ManualClock(now)
    refresh = Refresher(StateReader(path, naive_timezone=tz), lambda: metrics, clock)
    live = CollectorRegistry(auto_describe=False)
    registry = build_registry(View(lambda: refresh.state, lambda: metrics, clock), live=live)
    exposition = CachedExposition(registry, live, lambda: (refresh.state,))
    return refresh, clock, exposition


def render(exposition: Any) -> Samples:
    body, _ = exposition.render("text/plain")
    return parse_exposition(body.decode())


def expose(path: Path, now: datetime = NOW, tz: tzinfo = BERLIN) -> Samples:
    refresh, _, exposition = refresher(path, now, tz)
    state = refresh.refresh(force_all=True)
    assert state.problem is None, state.problem
    assert all(phase.success for phase in state.phases.values()), state.failing_phases()
    return render(exposition)


def family(samples: Samples, name: str, label: str | None = None) -> dict[Any, float]:
    found: dict[Any, float] = {}
    for (sample, labels), value in samples.items():
        if sample == name:
            key = dict(labels)[label] if label else tuple(sorted(labels))
            found[key] = found.get(key, 0) + value
    return found


def epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def engine_values(samples: Samples) -> Samples:
    """The seeknal families and the canonical ones, without the daemon's own (timings, sizes)."""
    return {key: value for key, value in samples.items() if not key[0].startswith("state_exporter_")}


def executions() -> list[dict[str, Any]]:
    return [row for row in FILES["node_rows"] if row["executed_in_run"] and row["status"] in FINAL]


@pytest.fixture
def target(tmp_path: Path) -> Path:
    copy = tmp_path / "target"
    shutil.copytree(TARGET, copy)
    return copy


@pytest.fixture
def exposed(target: Path) -> Samples:
    return expose(target)


def test_detected_as_the_file_layout(exposed: Samples) -> None:
    assert family(exposed, "state_exporter_engine_info") == {(("engine", "seeknal"), ("layout", "file")): 1}
    assert family(exposed, "state_exporter_bad_values_total") == {}


@pytest.mark.parametrize("form", ["directory", "run_state.json"])
def test_the_path_forms_read_the_same(target: Path, exposed: Samples, form: str) -> None:
    """``db.path`` the ``target/`` directory or its ``run_state.json``: the same backups, the same values."""
    path = target if form == "directory" else target / "run_state.json"
    assert engine_values(expose(path)) == engine_values(exposed)


def test_runs_by_derived_status(exposed: Samples) -> None:
    runs = family(exposed, "seeknal_runs", "status")
    assert runs == {"running": 0, **FILES["runs_by_derived_status"]} == {"running": 0, "failed": 2, "success": 1}
    assert sum(runs.values()) == FILES["runs_total"] == len(FILES["runs"]) == 3
    assert Counter(run["derived_status"] for run in FILES["runs"]) == {k: v for k, v in runs.items() if v}
    assert family(exposed, "workflow_runs", "phase") == {
        **{phase.value: 0 for phase in Phase},
        "failed": FILES["runs_by_derived_status"]["failed"],
        "succeeded": FILES["runs_by_derived_status"]["success"],
    }
    assert family(exposed, "workflow_oldest_active_update_timestamp_seconds") == {}  # nothing running


def test_latest_run_nodes_by_kind_and_status(exposed: Samples) -> None:
    nodes = {key: n for key, n in family(exposed, "seeknal_nodes").items() if n}
    truth = Counter((node.split(".")[0], status) for node, status in FILES["latest_run_node_status"].items())
    assert nodes == {(("kind", kind), ("status", status)): n for (kind, status), n in truth.items()}
    assert FILES["alerts"]["latest_run_status"] == "success"


def test_nothing_running_or_stuck(exposed: Samples) -> None:
    assert FILES["stuck_running_nodes"] == [] and FILES["running_nodes_total"] == 0
    assert family(exposed, "seeknal_nodes_stuck") == {(): FILES["alerts"]["stuck_running_nodes"]} == {(): 0}
    assert family(exposed, "seeknal_node_running_since_timestamp_seconds") == {}


def test_executions_counted_once_per_node_and_last_run(exposed: Samples) -> None:
    counted: Counter[tuple[str, str]] = Counter()
    for labels, value in family(exposed, "seeknal_node_executions_total").items():
        counted[(dict(labels)["node"], dict(labels)["status"])] += value
    truth = Counter((row["node_id"], row["status"]) for row in executions())
    assert {key: n for key, n in counted.items() if n} == truth
    assert sum(counted.values()) == FILES["executed_node_rows"] == 8
    assert sum(n for (_, status), n in counted.items() if status == "failed") == FILES["failed_executions_total"]
    # The row carried into the second run (customer_totals' first execution) is not counted again.
    assert FILES["node_rows_total"] == len(FILES["node_rows"]) == 9


def test_node_durations(exposed: Samples) -> None:
    counts = family(exposed, "seeknal_node_duration_seconds_count", "node")
    sums = family(exposed, "seeknal_node_duration_seconds_sum", "node")
    assert counts == Counter(row["node_id"] for row in executions())
    for node, total in sums.items():
        assert total == pytest.approx(sum(r["duration_ms"] for r in executions() if r["node_id"] == node) / 1000)


def test_last_success_and_freshness(exposed: Samples) -> None:
    last = family(exposed, "seeknal_node_last_success_timestamp_seconds", "node")
    assert last == {node: epoch(at) for node, at in FILES["last_success_utc_by_node"].items()}
    for node, age in FILES["freshness_age_seconds_by_node"].items():
        assert NOW.timestamp() - last[node] == pytest.approx(age, abs=1e-3)
    stale = [n for n, at in last.items() if NOW.timestamp() - at > 86400]
    assert stale == FILES["alerts"]["nodes_without_success_in_24h"]


def test_rows_processed_of_the_latest_execution(exposed: Samples) -> None:
    latest: dict[str, dict[str, Any]] = {}
    for row in executions():
        if row["node_id"] not in latest or row["last_run_utc"] > latest[row["node_id"]]["last_run_utc"]:
            latest[row["node_id"]] = row
    assert family(exposed, "seeknal_node_rows_processed", "node") == {n: r["row_count"] for n, r in latest.items()}


def test_intervals(exposed: Samples) -> None:
    """The sample's nodes are not incremental: every list in the JSON is empty."""
    nodes = set(FILES["last_success_utc_by_node"])
    assert family(exposed, "seeknal_node_completed_intervals", "node") == dict.fromkeys(nodes, 0)
    assert family(exposed, "seeknal_node_restatement_intervals_pending", "node") == dict.fromkeys(nodes, 0)


def test_no_locks_in_the_file_backend(exposed: Samples) -> None:
    assert family(exposed, "seeknal_locks_held") == {(): 0}
    assert family(exposed, "seeknal_lock_oldest_timestamp_seconds") == {}


def test_a_run_in_two_files_is_one_run(target: Path, exposed: Samples) -> None:
    """While ``seeknal run`` replaces the file, the backup it just wrote holds the same run as
    ``run_state.json``: deduplicated by the run_id inside, not by the file name."""
    shutil.copyfile(target / "run_state.json", target / "run_state.json.bak.20261205_110000")
    assert engine_values(expose(target)) == engine_values(exposed)


def test_a_backup_being_copied_is_not_an_error(target: Path, exposed: Samples) -> None:
    """``seeknal run`` copies run_state.json to its new backup (``shutil.copy2``, not atomic): a
    refresh in the middle of that copy sees a prefix of the main file, whose run it already has."""
    main = (target / "run_state.json").read_bytes()
    (target / "run_state.json.bak.20261205_110000").write_bytes(main[: len(main) // 2])
    assert engine_values(expose(target)) == engine_values(exposed)


def test_naive_times_use_the_writer_zone(target: Path, exposed: Samples) -> None:
    other = expose(target, tz=ZoneInfo("America/New_York"))
    berlin = family(exposed, "seeknal_node_last_success_timestamp_seconds", "node")
    assert family(other, "seeknal_node_last_success_timestamp_seconds", "node") == {
        node: at + 6 * 3600 for node, at in berlin.items()
    }


@pytest.mark.parametrize(
    ("damage", "problem", "reason"),
    [
        ("truncated", Problem.CORRUPT, "not valid JSON"),
        ("invalid", Problem.CORRUPT, "not valid JSON"),
        ("not-seeknal", Problem.UNKNOWN_LAYOUT, "not a seeknal run state"),
        ("empty", Problem.EMPTY, "empty"),
        ("missing", Problem.MISSING, "does not exist"),
    ],
)
def test_a_bad_file_keeps_the_last_good_values(target: Path, damage: str, problem: Problem, reason: str) -> None:
    refresh, clock, exposition = refresher(target)
    assert refresh.refresh(force_all=True).problem is None
    good = {k: v for k, v in render(exposition).items() if k[0].startswith("seeknal_")}
    main = target / "run_state.json"
    text = main.read_bytes()
    if damage == "truncated":
        main.write_bytes(text[: len(text) // 2])
    elif damage == "invalid":
        main.write_bytes(b"{not json")
    elif damage == "not-seeknal":
        main.write_text(json.dumps({"hello": "world"}))
    elif damage == "empty":
        main.write_bytes(b"")
    else:
        main.unlink()
    state = refresh.refresh(force_all=True)
    assert state.problem is not None and state.problem.problem is problem
    assert reason in state.problem.message and str(main) in state.problem.message
    ready = refresh.ready(clock())
    assert not ready.ready and ready.reason == problem.value and reason in ready.detail
    served = render(exposition)
    assert {k: v for k, v in served.items() if k[0].startswith("seeknal_")} == good
    assert family(served, "state_exporter_query_errors_total", "reason")[problem.value] >= 1
    main.write_bytes(text)  # seeknal writes a good file again
    assert refresh.refresh(force_all=True).problem is None
    assert refresh.ready(clock()).ready


def test_a_directory_without_run_state_says_so(tmp_path: Path) -> None:
    refresh, _, _ = refresher(tmp_path)
    state = refresh.refresh(force_all=True)
    assert state.problem is not None and state.problem.problem is Problem.MISSING
    assert state.problem.message.startswith(f"{tmp_path / 'run_state.json'}: file does not exist")
    assert "is a directory" in state.problem.message
    assert list(tmp_path.iterdir()) == []


def test_a_bad_backup_names_itself(target: Path) -> None:
    backup = target / "run_state.json.bak.20261205_100136"
    backup.write_bytes(backup.read_bytes()[:100])
    refresh, _, _ = refresher(target)
    state = refresh.refresh(force_all=True)
    assert state.problem is not None and state.problem.problem is Problem.CORRUPT
    assert str(backup) in state.problem.message


def test_reads_create_and_change_nothing(target: Path) -> None:
    before = {path.name: checksums(path) for path in target.iterdir()}
    expose(target)
    expose(target / "run_state.json")
    assert {path.name: checksums(path) for path in target.iterdir()} == before


def test_files_are_parsed_again_only_when_changed(target: Path) -> None:
    reader = StateReader(target, naive_timezone=BERLIN)
    with reader.session() as first:
        assert first.schema.layout == "file"
    files = reader._files
    assert files is not None
    image = files._image
    with reader.session():
        pass
    assert files._image is image  # nothing changed: the same DB
    (target / "run_state.json.bak.20261205_110000").write_bytes((target / "run_state.json").read_bytes())
    with reader.session():
        pass
    assert files._image is not image
    assert reader.file_sizes()[0] == sum(path.stat().st_size for path in target.iterdir())
