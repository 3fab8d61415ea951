"""The ``targets:`` section: per-target db and metrics, inherited key by key, every error naming its key."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from exporter.config import Config, ConfigError, load_config
from exporter.config_checks import db_path_problems


def load(tmp_path: Path, text: str, **kwargs: object) -> Config:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return load_config(path, env=kwargs.pop("env", {}), checks=(db_path_problems,), **kwargs)  # type: ignore[arg-type]


def errors(tmp_path: Path, text: str, **kwargs: object) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text, **kwargs)
    return [error.replace(str(tmp_path / "config.yaml"), "config.yaml") for error in caught.value.errors]


TWO = """\
db:
  writer_timezone: UTC
  busy_timeout: 2s
metrics:
  refresh_interval: 10s
  max_pipelines: 20
  stuck:
    running_after: 30m
    paused_after: 1d
targets:
  orders:
    db:
      path: /data/orders.db
      engine: flujo
    metrics:
      max_pipelines: 5
      stuck:
        running_after: 2h
  lake:
    db:
      path: /data/lake.db
      writer_timezone: Europe/Berlin
"""


def test_targets_inherit_the_top_level_sections_key_by_key(tmp_path: Path) -> None:
    config = load(tmp_path, TWO)
    assert config.db.path is None and list(config.targets) == ["orders", "lake"]
    orders, lake = config.targets["orders"], config.targets["lake"]
    assert orders.db.path == Path("/data/orders.db") and orders.db.engine == "flujo"
    assert orders.db.writer_timezone == "UTC" and orders.db.busy_timeout == timedelta(seconds=2)
    assert lake.db.writer_timezone == "Europe/Berlin" and lake.db.engine == "auto"
    assert orders.metrics.max_pipelines == 5 and lake.metrics.max_pipelines == 20
    assert orders.metrics.refresh_interval == lake.metrics.refresh_interval == timedelta(seconds=10)
    assert orders.metrics.stuck.running_after == timedelta(hours=2)
    assert orders.metrics.stuck.paused_after == timedelta(days=1), "nested sections merge key by key too"
    assert lake.metrics.stuck.running_after == timedelta(minutes=30)


def test_no_targets_is_single_db_mode(tmp_path: Path) -> None:
    config = load(tmp_path, "db:\n  path: /data/one.db\n")
    assert config.targets == {} and config.db.path == Path("/data/one.db")
    assert errors(tmp_path, "targets: {}\n") == [
        "config.yaml: db.path: required (set it in the config file, STATE_EXPORTER_DB__PATH or --db)"
    ]


def test_environment_and_flags_reach_a_target(tmp_path: Path) -> None:
    env = {
        "STATE_EXPORTER_TARGETS__orders__DB__QUERY_TIMEOUT": "3s",
        "STATE_EXPORTER_TARGETS__lake__METRICS__MAX_STEPS": "7",
    }
    config = load(tmp_path, TWO, env=env)
    assert config.targets["orders"].db.query_timeout == timedelta(seconds=3)
    assert config.targets["lake"].metrics.max_steps == 7 and config.targets["orders"].metrics.max_steps == 100
    bad = {"STATE_EXPORTER_TARGETS__orders__DB__QUERY_TIMEOUT": "0s"}
    assert errors(tmp_path, TWO, env=bad) == [
        "environment STATE_EXPORTER_TARGETS__orders__DB__QUERY_TIMEOUT: targets.orders.db.query_timeout:"
        " must be greater than 0, got 0s"
    ]


def test_errors_name_the_target_and_key(tmp_path: Path) -> None:
    text = """\
targets:
  orders:
    db: {path: /data/a.db, engine: nope}
  "bad name":
    db: {path: /data/b.db}
  slow:
    db: {path: /data/c.db}
    metrics: {refresh_interval: 2m, max_pipelines: 0}
  typo:
    dbs: {path: /data/d.db}
"""
    assert errors(tmp_path, text) == [
        "config.yaml:3: targets.orders.db.engine: must be one of 'auto', 'flujo', 'pynenc', 'seeknal' or 'marianne',"
        " got 'nope'",
        "config.yaml:4: targets.bad name: invalid target name 'bad name': 1 to 64 letters, digits, '_', '.' or '-',"
        " starting with a letter or digit",
        "config.yaml:8: targets.slow.metrics.counts_interval: must be at least metrics.refresh_interval (2m), got 1m",
        "config.yaml:8: targets.slow.metrics.max_pipelines: must be at least 1, got 0",
        "config.yaml:9: targets.typo.db: required",
        "config.yaml:10: targets.typo.dbs: unknown key (did you mean 'db'?)",
    ]


def test_an_invalid_top_level_section_is_reported_once(tmp_path: Path) -> None:
    text = "metrics:\n  max_steps: 0\ntargets:\n  a:\n    db: {path: /data/a.db}\n  b:\n    db: {path: /data/b.db}\n"
    assert errors(tmp_path, text) == ["config.yaml:2: metrics.max_steps: must be at least 1, got 0"]


def test_what_multi_target_mode_refuses(tmp_path: Path) -> None:
    text = f"""\
db:
  path: /data/one.db
traces:
  enabled: true
  state_file: {tmp_path / "state.sqlite"}
  id_namespace: site
jobs:
  stuck_alerts:
    enabled: true
targets:
  a:
    db: {{engine: flujo}}
"""
    assert errors(tmp_path, text) == [
        "config.yaml:2: db.path: must not be set with targets (each target has its own db.path or db.url)",
        "config.yaml:5: traces.state_file: must not be set with targets (each has traces-target-NAME.sqlite)",
        "config.yaml:6: traces.id_namespace: must not be set with targets (each target's name is its namespace)",
        "config.yaml:9: jobs.stuck_alerts.enabled: jobs follow one DB and are not available with targets"
        " (one exporter per DB)",
        "config.yaml:12: targets.a.db.path: required (or db.url for a Postgres database)",
    ]
    traced = load(tmp_path, "traces:\n  enabled: true\ntargets:\n  a:\n    db: {path: /data/a.db}\n")
    assert traced.traces.enabled, "span export runs per target"
    flag = errors(tmp_path, "targets:\n  a:\n    db: {path: /data/a.db}\n", overrides={"db": {"path": "/x.db"}})
    assert flag == ["command line: db.path: must not be set with targets (each target has its own db.path or db.url)"]


def test_a_target_below_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    text = f"targets:\n  a:\n    db:\n      path: {tmp_path / 'file' / 'x.db'}\n"
    assert errors(tmp_path, text) == [f"config.yaml:4: targets.a.db.path: {tmp_path / 'file'} is not a directory"]
