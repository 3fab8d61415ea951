"""The jobs: config section, and its documentation in config.example.yaml (key coverage: tests/test_config.py)."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from exporter.jobs import JobsConfig, writes_enabled

EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.yaml"


def key_paths(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = []
    for name, info in model.model_fields.items():
        path = (*prefix, name)
        paths.append(path)
        for candidate in (*getattr(info.annotation, "__args__", ()), info.annotation):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                paths += key_paths(candidate, path)
    return paths


def fields(model: type[BaseModel]) -> list[tuple[str, Any]]:
    found = []
    for name, info in model.model_fields.items():
        found.append((f"{model.__name__}.{name}", info))
        for candidate in (*getattr(info.annotation, "__args__", ()), info.annotation):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                found += fields(candidate)
    return found


def test_example_validates_and_shows_the_defaults() -> None:
    document = yaml.safe_load(EXAMPLE.read_text())
    assert JobsConfig.model_validate(document["jobs"]) == JobsConfig()


def test_every_key_has_a_description() -> None:
    undocumented = [name for name, info in fields(JobsConfig) if not info.description]
    assert not undocumented


def test_example_says_what_each_job_writes() -> None:
    text = EXAMPLE.read_text()
    assert re.search(r"Writes: DELETE FROM workflow_state", text)
    assert "UPDATE workflow_state SET status='failed'" in text
    assert "Writes nothing to the DB" in text


def test_defaults_disabled_and_durations() -> None:
    config = JobsConfig()
    assert not (config.cleanup.enabled or config.stale_background_tasks.enabled or config.stuck_alerts.enabled)
    assert not writes_enabled(config)
    parsed = JobsConfig.model_validate(
        {"cleanup": {"enabled": True, "interval": "30m", "days_old": 0.5, "pause_between_batches": "50ms"}}
    )
    assert parsed.cleanup.interval == timedelta(minutes=30)
    assert parsed.cleanup.pause_between_batches == timedelta(milliseconds=50)
    assert parsed.cleanup.days_old == 0.5
    assert writes_enabled(parsed)
    assert not writes_enabled(JobsConfig.model_validate({"cleanup": {"enabled": True, "dry_run": True}}))
    assert writes_enabled(JobsConfig.model_validate({"stale_background_tasks": {"enabled": True}}))
    assert not writes_enabled(JobsConfig.model_validate({"stuck_alerts": {"enabled": True}}))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"cleanup": {"days": 3}}, "Extra inputs are not permitted"),
        ({"cleanup": {"days_old": 0}}, "greater than 0"),
        ({"cleanup": {"days_old": "inf"}}, "finite"),
        ({"cleanup": {"interval": "0s"}}, "greater than 0"),
        ({"cleanup": {"batch_size": 0}}, "greater than or equal to 1"),
        ({"stale_background_tasks": {"stale_hours": -1}}, "greater than 0"),
        ({"stuck_alerts": {"alertmanager": {"url": "alertmanager:9093"}}}, "http:// or https://"),
        (
            {
                "stuck_alerts": {
                    "alertmanager": {
                        "url": "http://am",
                        "bearer_token": "t",
                        "basic_auth": {"username": "u", "password": "p"},
                    }
                }
            },
            "at most one",
        ),
        ({"stuck_alerts": {"resend_interval": "soon"}}, "invalid duration"),
    ],
)
def test_bad_values_rejected(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        JobsConfig.model_validate(raw)
    assert message in str(info.value)


def test_config_module_is_light() -> None:
    """exporter.config may import exporter.jobs.config: no cycle back, no aiohttp, no reader."""
    code = (
        "import sys, exporter.jobs.config; "
        "heavy = [m for m in ('aiohttp', 'exporter.jobs.runner', 'exporter.reader', 'exporter.config')"
        " if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
