"""`make run`'s command: the demo DB moves within seconds, for each engine's simulated app (Flujo,
pynenc, a Marianne conductor, a seeknal project)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from processes import Process, daemon_env, free_port, http_get, start, wait_until_up
from support import parse_exposition, wait_for

from exporter.cli import _parser
from exporter.demo import DEMO_ENGINES, DEMO_FILES

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def total(samples: Samples, name: str, **labels: str) -> float:
    return sum(v for (n, pairs), v in samples.items() if n == name and labels.items() <= dict(pairs).items())


def start_demo(tmp_path: Path, *engine: str) -> Process:
    port = free_port()
    argv = [sys.executable, "-m", "exporter", "demo", "--dir", str(tmp_path / "demo"), "--listen", f"127.0.0.1:{port}"]
    return start([*argv, *engine], tmp_path / "demo.log", f"http://127.0.0.1:{port}", env=daemon_env())


def scrape(demo: Process) -> Samples:
    return parse_exposition(http_get(demo.url + "/metrics")[1])


def test_demo_metrics_move(tmp_path: Path) -> None:
    demo = start_demo(tmp_path)  # flujo unless told otherwise
    try:
        wait_until_up(demo, "/readyz")
        first = scrape(demo)

        def moved() -> Samples | None:
            later = scrape(demo)
            runs = total(later, "flujo_runs") > total(first, "flujo_runs") + 3
            return later if runs and total(later, "flujo_background_tasks") else None

        later = wait_for(moved, 20, lambda: f"the demo's metrics to move:\n{demo.output()[-2000:]}", interval=1.0)
        assert total(later, "flujo_steps_finished_total") > 0
        assert "metrics at http://127.0.0.1" in demo.output()
        assert (tmp_path / "demo" / "flujo_ops.db").exists()
    finally:
        assert demo.stop() == 0, demo.output()


def test_pynenc_demo_metrics_move(tmp_path: Path) -> None:
    demo = start_demo(tmp_path, "--engine", "pynenc")
    try:
        wait_until_up(demo, "/readyz")
        first = scrape(demo)
        assert total(first, "state_exporter_engine_info", engine="pynenc", layout="0.2.4+") == 1

        def moved() -> Samples | None:
            later = scrape(demo)
            finished = total(later, "pynenc_invocations_finished_total")
            return later if finished > total(first, "pynenc_invocations_finished_total") + 5 else None

        later = wait_for(moved, 20, lambda: f"the demo's metrics to move:\n{demo.output()[-2000:]}", interval=1.0)
        assert total(later, "workflow_runs_finished_total", engine="pynenc") > 0
        assert total(later, "pynenc_runners", app="demo_app", state="alive") >= 2
        assert total(later, "pynenc_invocations", app="demo_app") > 0
        assert "simulated pynenc app 'demo_app'" in demo.output()
        assert (tmp_path / "demo" / "pynenc_demo.db").exists()
    finally:
        assert demo.stop() == 0, demo.output()


def test_marianne_demo_metrics_move(tmp_path: Path) -> None:
    demo = start_demo(tmp_path, "--engine", "marianne")
    try:
        wait_until_up(demo, "/readyz")
        first = scrape(demo)
        assert total(first, "state_exporter_engine_info", engine="marianne", layout="workspace-v4") == 1

        def moved() -> Samples | None:
            later = scrape(demo)
            jobs = total(later, "marianne_jobs") > total(first, "marianne_jobs") + 3
            done = total(later, "marianne_jobs", status="completed") > total(first, "marianne_jobs", status="completed")
            return later if jobs and done else None

        later = wait_for(moved, 20, lambda: f"the demo's metrics to move:\n{demo.output()[-2000:]}", interval=1.0)
        assert total(later, "marianne_sheets", status="completed") > 0
        assert total(later, "marianne_execution_attempts_total") > 0
        assert total(later, "workflow_runs", engine="marianne") == total(later, "marianne_jobs")
        assert "simulated Marianne conductor" in demo.output()
        assert (tmp_path / "demo" / "marianne-workspace" / ".marianne-state.db").exists()
        assert (tmp_path / "demo" / "marianne-conductor" / "daemon-state.db").exists()
    finally:
        assert demo.stop() == 0, demo.output()


def test_seeknal_demo_metrics_move(tmp_path: Path) -> None:
    demo = start_demo(tmp_path, "--engine", "seeknal")
    try:
        wait_until_up(demo, "/readyz")
        first = scrape(demo)
        assert total(first, "state_exporter_engine_info", engine="seeknal", layout="database") == 1

        def moved() -> Samples | None:
            later = scrape(demo)
            runs = total(later, "seeknal_runs") > total(first, "seeknal_runs") + 3
            executed = total(later, "seeknal_node_executions_total") > total(first, "seeknal_node_executions_total")
            return later if runs and executed else None

        later = wait_for(moved, 30, lambda: f"the demo's metrics to move:\n{demo.output()[-2000:]}", interval=1.0)
        assert total(later, "seeknal_node_executions_total", status="success") > 0
        assert total(later, "seeknal_nodes") > 0 and total(later, "seeknal_node_last_success_timestamp_seconds") > 0
        assert total(later, "workflow_runs", engine="seeknal") == total(later, "seeknal_runs")
        assert "simulated seeknal project" in demo.output()
        assert (tmp_path / "demo" / "seeknal-project" / "state.db").exists()
    finally:
        assert demo.stop() == 0, demo.output()


def test_the_demo_flag_offers_every_demo_engine() -> None:
    args = _parser().parse_args(["demo"])
    assert args.engine == "flujo"
    assert set(DEMO_FILES) == set(DEMO_ENGINES)
    for engine in DEMO_ENGINES:
        assert _parser().parse_args(["demo", "--engine", engine]).engine == engine
    with pytest.raises(SystemExit):
        _parser().parse_args(["demo", "--engine", "airflow"])
