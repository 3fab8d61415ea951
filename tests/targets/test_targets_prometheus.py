"""A real Prometheus scrapes four targets of one real daemon through the README's relabel config, the
daemon running the README's example config (only the paths, the Postgres URL and the address replaced): a
Flujo file, a pynenc file, a seeknal file and Flujo on a real Postgres 15 (the shared flujo 0.6.11 dump),
each value checked against its fixture's independent expectations."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

from engines.cases import PYNENC_FIXTURES, SEEKNAL_FIXTURE
from postgres import EXPECTED as PG_EXPECTED
from postgres import EXPORTER_PASSWORD, PostgresServer
from processes import http_get, promql, running_daemon, running_prometheus, wait_for_series
from support import FIXTURES, SMALL06, expected, require_tool, wait_for

ROOT = Path(__file__).resolve().parents[2]
PYNENC = next(iter(PYNENC_FIXTURES))
README_ADDRESS = "state-exporter:10078"
# The README's target names and paths -> the fixture each test copy comes from.
README_PATHS = {
    "/var/lib/flujo/flujo_ops.db": SMALL06,
    "/var/lib/pynenc/pynenc.db": PYNENC,
    "/srv/seeknal/target/seeknal.db": SEEKNAL_FIXTURE,
}


# The README's Postgres target: its URL and password file -> the suite's Postgres and a file holding the password.
README_PG_URL = "postgresql://exporter@pg.internal:5432/flujo"
README_PG_PASSWORD_FILE = "/run/secrets/exporter-password"
NAMES = {"orders", "tasks", "lake", "billing"}


def readme_blocks() -> tuple[str, str]:
    """The exporter's and Prometheus' config of README "Many databases from one exporter"."""
    section = (ROOT / "README.md").read_text().split("## Many databases from one exporter")[1].split("\n## ")[0]
    exporter_config, prometheus_config = re.findall(r"```yaml\n(.*?)```", section, re.S)
    return exporter_config, prometheus_config


def daemon_config(tmp_path: Path, pg_server: PostgresServer, pg_database: str) -> str:
    text, _ = readme_blocks()
    for n, (path, fixture) in enumerate(README_PATHS.items()):
        assert path in text, f"README example no longer has {path}"
        copy = tmp_path / str(n) / Path(fixture).name
        copy.parent.mkdir()
        shutil.copyfile(FIXTURES / fixture, copy)
        text = text.replace(path, str(copy))
    password = tmp_path / "exporter-password"
    password.write_text(EXPORTER_PASSWORD + "\n")
    assert README_PG_URL in text and README_PG_PASSWORD_FILE in text, "README example no longer has its Postgres target"
    url = pg_server.exporter_url(pg_database, password=None)
    return text.replace(README_PG_URL, url).replace(README_PG_PASSWORD_FILE, str(password))


def prometheus_config(address: str) -> str:
    _, text = readme_blocks()
    assert text.count(README_ADDRESS) == 2
    return "global:\n  scrape_interval: 1s\n" + text.replace(README_ADDRESS, address)


def values(result: list[dict[str, Any]], label: str) -> dict[str, float]:
    return {r["metric"][label]: float(r["value"][1]) for r in result}


def test_prometheus_scrapes_four_targets_through_relabelling(
    tmp_path: Path, pg_server: PostgresServer, pg_database: str
) -> None:
    binary = require_tool("prometheus")
    promtool = require_tool("promtool")
    names = NAMES
    config = daemon_config(tmp_path, pg_server, pg_database)
    with running_daemon(tmp_path, config=config, wait_path="/readyz") as daemon:
        config = prometheus_config(daemon.url.removeprefix("http://"))
        (tmp_path / "prometheus-check.yml").write_text(config)
        checked = subprocess.run(
            [promtool, "check", "config", str(tmp_path / "prometheus-check.yml")], capture_output=True, text=True
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
        with running_prometheus(binary, tmp_path, config) as prometheus:
            wait_for_series(prometheus, f'count(up{{job="workflow-dbs"}} == 1) == {len(names)}')
            wait_for_series(prometheus, 'count(up{job="state-exporter"} == 1) == 1')
            up = promql(prometheus, 'up{job="workflow-dbs"}')
            assert {r["metric"]["instance"] for r in up} == names, "instance is the target name"

            flujo = values(promql(prometheus, 'flujo_workflows{instance="orders"}'), "status")
            assert flujo == {
                k: float(v) for k, v in expected(SMALL06)["list_workflows"]["by_status_non_background"].items()
            }
            pynenc = promql(prometheus, 'sum by (status) (pynenc_invocations{instance="tasks"}) > 0')
            app = expected(PYNENC)["apps"][0]
            assert values(pynenc, "status") == {k: float(v) for k, v in app["status_counts_all"].items()}
            seeknal = values(promql(prometheus, 'seeknal_runs{instance="lake"}'), "status")
            runs = expected(SEEKNAL_FIXTURE)["database_backend"]["runs_by_derived_status"]
            assert seeknal == {k: float(v) for k, v in runs.items()}
            engines = promql(prometheus, 'count by (instance, engine) (workflow_runs{job="workflow-dbs"})')
            assert {(r["metric"]["instance"], r["metric"]["engine"]) for r in engines} >= {
                ("orders", "flujo"),
                ("tasks", "pynenc"),
                ("lake", "seeknal"),
            }
            for family, only in (("flujo_", {"orders", "billing"}), ("pynenc_", {"tasks"}), ("seeknal_", {"lake"})):
                found = promql(prometheus, f'count by (instance) ({{job="workflow-dbs", __name__=~"{family}.*"}})')
                assert {r["metric"]["instance"] for r in found} == only, family
            billing = values(promql(prometheus, 'flujo_workflows{instance="billing"}'), "status")
            assert billing == {
                k: float(v) for k, v in PG_EXPECTED["oracle"]["workflow_state"]["top_level_status_counts"].items()
            }
            assert ("billing", "flujo") in {(r["metric"]["instance"], r["metric"]["engine"]) for r in engines}

            # The exporter's own metrics only on /metrics, by target; it adds no instance label.
            assert promql(prometheus, '{job="workflow-dbs", __name__=~"state_exporter_.*"}') == []
            assert promql(prometheus, '{exported_instance!=""}') == []
            ready = promql(prometheus, 'state_exporter_db_ready{job="state-exporter"}')
            assert values(ready, "target") == dict.fromkeys(names, 1.0)
            assert promql(prometheus, '{job="state-exporter", __name__=~"(flujo|pynenc|seeknal|workflow)_.*"}') == []

        listed = "orders, tasks, lake, billing"
        for query in ("?target=nope", "", "?target=orders&target=tasks", "?target=" + str(FIXTURES / SMALL06)):
            status, body = http_get(f"{daemon.url}/probe{query}")
            assert status == 400 and body.endswith(f"NAME one of: {listed}\n"), (query, body)
            assert "nope" not in body and str(FIXTURES) not in body, "the value asked for is never echoed"
        status, body = http_get(f"{daemon.url}/probe?target=lake")
        assert status == 200 and "seeknal_runs{" in body and "state_exporter_" not in body


def test_single_db_mode_has_no_probe_and_reload_changes_targets(tmp_path: Path) -> None:
    first = tmp_path / "a" / Path(SMALL06).name
    first.parent.mkdir()
    shutil.copyfile(FIXTURES / SMALL06, first)
    with running_daemon(tmp_path, "--db", str(first), wait_path="/readyz") as single:
        assert http_get(f"{single.url}/probe?target=orders")[0] == 404
        assert "flujo_workflows{" in http_get(f"{single.url}/metrics")[1]
    second = tmp_path / "b" / Path(PYNENC).name
    second.parent.mkdir()
    shutil.copyfile(FIXTURES / PYNENC, second)
    config = f"targets:\n  orders:\n    db: {{path: {first}, writer_timezone: UTC}}\n"
    with running_daemon(tmp_path, config=config, wait_path="/readyz") as daemon:
        assert http_get(f"{daemon.url}/probe?target=tasks")[0] == 400
        config_file = next(tmp_path.glob("daemon-*.yaml"))
        config_file.write_text(f"targets:\n  tasks:\n    db: {{path: {second}}}\n")
        os.kill(daemon.pid, signal.SIGHUP)
        wait_for(lambda: "pynenc_invocations{" in http_get(f"{daemon.url}/probe?target=tasks")[1], 15, "the new target")
        status, body = http_get(f"{daemon.url}/probe?target=orders")
        assert status == 400 and body.endswith("NAME one of: tasks\n"), "the removed target is gone"
        config_file.write_text(f"db:\n  path: {first}\n")
        os.kill(daemon.pid, signal.SIGHUP)
        wait_for(lambda: "config reload rejected" in daemon.output(), 15, "the refused switch to one DB")
        assert "switching between one DB and targets takes a restart" in daemon.output()
        assert http_get(f"{daemon.url}/probe?target=tasks")[0] == 200
