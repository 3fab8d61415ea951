"""Names stay in sync: every metric the daemon emits is documented in the README, and so is every engine
(with config.example.yaml)."""

from __future__ import annotations

import functools
import re
import shutil
import tempfile
from pathlib import Path

from engines.cases import CASES
from support import FIXTURES, SMALL, computed_at

from exporter.clock import ManualClock
from exporter.collectors import View, build_registry
from exporter.components import ComponentsCollector
from exporter.config import MetricsConfig
from exporter.engines import ENGINE_NAMES, engines
from exporter.engines.marianne.pids import injected
from exporter.reader import StateReader
from exporter.refresh import Refresher
from exporter.timeparse import UTC

ROOT = Path(__file__).parent.parent


# The engines' own families, the engine-neutral overview and the daemon's own health.
METRIC_NAME = rf"`((?:{'|'.join(ENGINE_NAMES)}|workflow|state_exporter)_[a-z0-9_]+)`"


@functools.cache
def emitted_families() -> set[str]:
    """Family names the collectors yield on every fixture layout (read from copies: a reader may create
    -wal/-shm files), compatibility names and the components' health included."""
    # Every optional family on: Flujo's compatibility names, Marianne's zombie check (its pid probe
    # answered here, never by this machine's processes).
    settings = MetricsConfig.model_validate({"flujo_compat": True, "marianne": {"same_host_pid_check": True}})
    clock = ManualClock(computed_at(SMALL))
    families = list(ComponentsCollector(dict).collect())
    with tempfile.TemporaryDirectory() as tmp:
        for n, case in enumerate(CASES):  # every engine's fixtures, at each one's own clock
            copy = Path(tmp) / str(n) / Path(case.fixture).name
            copy.parent.mkdir()
            shutil.copyfile(FIXTURES / case.fixture, copy)
            at = ManualClock(case.now)
            refresher = Refresher(StateReader(copy, naive_timezone=UTC), lambda: settings, at)
            with injected(lambda pid: False):
                refresher.refresh()
            families += build_registry(View(lambda r=refresher: r.state, lambda: settings, clock)).collect()
    return {family.name + "_total" if family.type == "counter" else family.name for family in families}


def test_every_emitted_metric_is_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(METRIC_NAME, readme))
    missing = sorted(emitted_families() - documented)
    assert missing == [], f"metrics emitted but not documented in README.md: {missing}"
    assert len(emitted_families()) > 25


def test_readme_documents_no_phantom_metric() -> None:
    readme = (ROOT / "README.md").read_text()
    table_names = set(re.findall(rf"^\| {METRIC_NAME} \|", readme, re.M))
    assert table_names - emitted_families() == set()


def test_readme_lists_every_engine_with_its_summary() -> None:
    section = (ROOT / "README.md").read_text().split("## Running it on your DB")[1].split("\n## ")[0]
    rows = re.findall(r"^\| `([a-z0-9_]+)` \| (.+) \|$", section, re.M)
    assert rows == [(engine.name, engine.summary) for engine in engines()]
    for documented in ("`db.engine`", "`--engine`", "`STATE_EXPORTER_DB__ENGINE`", "`auto`", "unknown_layout"):
        assert documented in section, documented


def test_example_config_names_every_engine() -> None:
    text = (ROOT / "config.example.yaml").read_text()
    comment = text.split("\n  engine: auto\n")[0].rsplit("\n\n", 1)[1]
    listed = re.search(
        r"Engines: ([a-z0-9_]+(?:, [a-z0-9_]+)*)", " ".join(line.strip(" #") for line in comment.splitlines())
    )
    assert listed is not None and tuple(listed[1].split(", ")) == ENGINE_NAMES
