"""Multi-target mode in process: one refresh and registry per target, /probe's exposition from each
target's own snapshot, the exporter's own families on /metrics labelled by target, readiness naming the
failing target, reload adding and removing targets.  Real fixture copies, a manual clock."""

from __future__ import annotations

import asyncio
import shutil
import threading
from pathlib import Path

import pytest
from engines.cases import PYNENC_FIXTURES, SEEKNAL_FIXTURE
from prometheus_client import CollectorRegistry, generate_latest
from support import FIXTURES, SMALL06, computed_at, parse_exposition, sample

from exporter.clock import ManualClock
from exporter.config import Config
from exporter.targets.serve import Targets

PYNENC = next(iter(PYNENC_FIXTURES))


def copy(name: str, into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    target = into / Path(name).name
    shutil.copyfile(FIXTURES / name, target)
    return target


def targets_config(tmp_path: Path, **extra: dict[str, object]) -> Config:
    paths = {"orders": copy(SMALL06, tmp_path / "a"), "tasks": copy(PYNENC, tmp_path / "b")}
    targets = {name: {"db": {"path": str(path)}} for name, path in paths.items()}
    return Config.model_validate({"db": {"writer_timezone": "UTC"}, "targets": {**targets, **extra}})


def render(targets: Targets, name: str) -> str:
    found = targets.render(name, "text/plain")
    assert found is not None
    return found[0].decode()


def own_metrics(targets: Targets) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(targets.collector())
    return parse_exposition(generate_latest(registry).decode())


def test_each_target_serves_its_own_snapshot(tmp_path: Path) -> None:
    config = targets_config(tmp_path)
    clock = ManualClock(computed_at(SMALL06))
    targets = Targets(config.targets, clock, threading.Event())
    assert targets.names() == ["orders", "tasks"] and targets.render("nope", "text/plain") is None
    for target in targets.by_name.values():
        target.refresher.refresh()
    orders, tasks = render(targets, "orders"), render(targets, "tasks")
    assert "flujo_workflows{" in orders and "pynenc_" not in orders
    assert "pynenc_invocations{" in tasks and "flujo_" not in tasks
    assert 'workflow_runs{engine="flujo"' in orders and 'workflow_runs{engine="pynenc"' in tasks
    for text in (orders, tasks):
        assert "state_exporter_" not in text and "instance=" not in text and "target=" not in text

    own = own_metrics(targets)
    for name, engine in (("orders", "flujo"), ("tasks", "pynenc")):
        assert sample(own, "state_exporter_db_ready", target=name) == 1
        assert (
            sample(
                own,
                "state_exporter_engine_info",
                target=name,
                engine=engine,
                layout=str(
                    targets.by_name[name].refresher.state.schema.layout  # type: ignore[union-attr]
                ),
            )
            == 1
        )
        assert sample(own, "state_exporter_collector_success", target=name, collector="snapshot") == 1
    builds = [labels for (family, labels) in own if family == "state_exporter_build_info"]
    assert len(builds) == 1 and "target" not in dict(builds[0]), "the process's build, once"
    assert all(
        dict(labels).get("target") in ("orders", "tasks")
        for family, labels in own
        if family != "state_exporter_build_info"
    )
    assert targets.readiness().ready


def test_the_cached_exposition_follows_each_refresh(tmp_path: Path) -> None:
    config = targets_config(tmp_path)
    targets = Targets(config.targets, ManualClock(computed_at(SMALL06)), threading.Event())
    orders = targets.by_name["orders"]
    assert render(targets, "orders") == "", "no snapshot yet: nothing to serve"
    orders.refresher.refresh()
    assert "flujo_workflows{" in render(targets, "orders")
    assert render(targets, "tasks") == "", "another target's refresh serves nothing of its own"
    targets.by_name["tasks"].refresher.refresh()
    assert "pynenc_invocations{" in render(targets, "tasks")


def test_readiness_names_the_failing_target(tmp_path: Path) -> None:
    config = targets_config(tmp_path, gone={"db": {"path": str(tmp_path / "absent.db")}})
    clock = ManualClock(computed_at(SMALL06))
    targets = Targets(config.targets, clock, threading.Event())
    before = targets.readiness()  # before the first refresh: the missing file is named at once
    assert not before.ready and before.reason == "no_snapshot, missing"
    assert before.detail.endswith("target gone: " + f"{tmp_path / 'absent.db'}: database file does not exist")
    for target in targets.by_name.values():
        target.refresher.refresh()
    after = targets.readiness()
    assert not after.ready and after.reason == "missing"
    assert after.detail.startswith("target gone: ") and "orders" not in after.detail
    own = own_metrics(targets)
    assert sample(own, "state_exporter_db_ready", target="gone") == 0
    assert sample(own, "state_exporter_db_ready", target="orders") == 1
    clock.advance(3600)  # every snapshot is stale now
    stale = targets.readiness()
    assert stale.reason == "stale_snapshot, missing" and "target orders: snapshot is stale" in stale.detail


async def test_reload_adds_removes_and_keeps_targets(tmp_path: Path) -> None:
    config = targets_config(tmp_path)
    targets = Targets(config.targets, ManualClock(computed_at(SMALL06)), threading.Event())
    targets.start()
    kept = targets.by_name["orders"].refresher
    lake = copy(SEEKNAL_FIXTURE, tmp_path / "c")
    new = Config.model_validate(
        {
            "db": {"writer_timezone": "UTC"},
            "targets": {
                "orders": {"db": {"path": str(config.targets["orders"].db.path)}, "metrics": {"max_pipelines": 3}},
                "lake": {"db": {"path": str(lake)}},
            },
        }
    )
    stopping = targets.reload(new.targets)
    assert targets.names() == ["orders", "lake"] and len(stopping) == 1, "tasks removed"
    assert targets.by_name["orders"].refresher is kept, "a metrics change keeps the refresh state"
    assert targets.by_name["orders"].config.metrics.max_pipelines == 3
    await asyncio.gather(*stopping)
    await asyncio.wait_for(_until_served(targets, "lake", "seeknal_runs{"), 30)
    moved = copy(SMALL06, tmp_path / "d")
    again = Config.model_validate(
        {
            "db": {"writer_timezone": "UTC"},
            "targets": {"orders": {"db": {"path": str(moved)}}, "lake": {"db": {"path": str(lake)}}},
        }
    )
    stopping = targets.reload(again.targets)
    assert targets.by_name["orders"].refresher is not kept and len(stopping) == 1, "a new db starts over"
    await asyncio.gather(*stopping)
    await asyncio.wait_for(_until_served(targets, "orders", "flujo_workflows{"), 30)  # the new one, started
    await targets.stop(2.0)


async def _until_served(targets: Targets, name: str, text: str) -> None:
    while text not in render(targets, name):
        await asyncio.sleep(0.05)


def test_snapshot_command_shows_one_target(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from exporter.cli import main

    config = tmp_path / "config.yaml"
    tasks = copy(PYNENC, tmp_path / "b")
    config.write_text(f"db: {{writer_timezone: UTC}}\ntargets:\n  tasks:\n    db: {{path: {tasks}}}\n")
    assert main(["snapshot", "--config", str(config), "--target", "tasks"]) == 0
    assert "pynenc_invocations{" in capsys.readouterr().out
    assert main(["snapshot", "--config", str(config), "--target", "nope"]) == 2
    assert "--target: 'nope' is not a configured target (configured: tasks)" in capsys.readouterr().err
