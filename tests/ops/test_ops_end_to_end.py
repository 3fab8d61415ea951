"""End to end: a writer leaves a run stuck in a copy of a real Flujo fixture; the daemon serves it and sends its
own stuck-run alert to a real Alertmanager; a real Prometheus scrapes the daemon, evaluates
prometheus/flujo.rules.yml and prometheus/workflow.rules.yml and sends its alerts to the same Alertmanager; the
daemon's per-run alert, Flujo's per-pipeline alert and the engine-neutral per-reason alert all fire there.

Prometheus evaluates copies of the real rules files in which every ``for:`` is rewritten to ``0s`` (the real
FlujoRunsStuck and WorkflowRunsStuck wait 15 minutes); nothing else is changed.  The stuck thresholds are 4 s for
the writer's pipeline and ten years for every other one, so the fixture's own long-stuck runs stay out of the
picture.
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
import time
import urllib.parse
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from ops.conftest import daemon_config
from processes import Process, http_get, promql, running_daemon, running_prometheus
from support import SMALL, require_tool, wait_for

REPO = Path(__file__).resolve().parents[2]
RULE_FILES = (REPO / "prometheus" / "flujo.rules.yml", REPO / "prometheus" / "workflow.rules.yml")
STUCK_ALERTS = ["FlujoRunStuck", "FlujoRunsStuck", "WorkflowRunsStuck"]
PIPELINE = "e2e_stuck"
THRESHOLD = "4s"


def rules_without_for(tmp: Path) -> list[Path]:
    paths = []
    for rules in RULE_FILES:
        text, count = re.subn(r"^(\s+for:\s*)\S+$", r"\g<1>0s", rules.read_text(), flags=re.M)
        alerts = [rule for group in yaml.safe_load(rules.read_text())["groups"] for rule in group["rules"]]
        assert count == len([rule for rule in alerts if "for" in rule]) >= 5, f"{rules.name}: every for: rewritten"
        path = tmp / rules.name.replace(".rules.yml", ".rules.for-0s.yml")
        path.write_text(text)
        paths.append(path)
    return paths


def e2e_config(db: Path, alertmanager: str) -> str:
    metrics = f"""  stuck:
    running_after: 3650d
    per_pipeline: {{{PIPELINE}: {THRESHOLD}}}"""
    jobs = f"""jobs:
  stuck_alerts:
    enabled: true
    interval: 1s
    jitter: 0s
    labels: {{source: daemon}}
    alertmanager:
      url: {alertmanager}
"""
    return daemon_config(db, metrics=metrics, jobs=jobs)


class Writer:
    """A Flujo 0.4.35 app (naive UTC times, as db.writer_timezone says) with one run in progress."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.run_id = f"run_{uuid.uuid4().hex}"

    def _now(self) -> str:
        return datetime.now(UTC).replace(tzinfo=None).isoformat()

    def start_run(self) -> None:
        now = self._now()
        with contextlib.closing(sqlite3.connect(self.db)) as conn:
            conn.execute(
                "INSERT INTO workflow_state (run_id, pipeline_id, pipeline_name, pipeline_version, current_step_index,"
                " pipeline_context, status, created_at, updated_at, total_steps)"
                " VALUES (?, ?, ?, '1.0.0', 0, '{}', 'running', ?, ?, 3)",
                (self.run_id, PIPELINE, PIPELINE, now, now),
            )
            conn.execute(
                "INSERT INTO runs (run_id, pipeline_name, pipeline_version, status, start_time)"
                " VALUES (?, ?, '1.0.0', 'running', ?)",
                (self.run_id, PIPELINE, now),
            )
            conn.commit()

    def heartbeat(self) -> None:
        """The step loop saving the state after a step, as Flujo does."""
        with contextlib.closing(sqlite3.connect(self.db)) as conn:
            conn.execute(
                "UPDATE workflow_state SET updated_at = ?, current_step_index = current_step_index + 1"
                " WHERE run_id = ?",
                (self._now(), self.run_id),
            )
            conn.commit()


def am_alerts(am: Process) -> list[dict[str, Any]]:
    query = urllib.parse.urlencode({"active": "true", "silenced": "false", "inhibited": "false"})
    status, body = http_get(f"{am.url}/api/v2/alerts?{query}")
    assert status == 200, body
    alerts: list[dict[str, Any]] = json.loads(body)
    return [a for a in alerts if a["labels"]["alertname"] in STUCK_ALERTS]


def value(prometheus: Process, query: str) -> float | None:
    result = promql(prometheus, query)
    return float(result[0]["value"][1]) if result else None


def test_stuck_run_alerts_from_prometheus_and_from_the_daemon_fire_in_alertmanager(
    fixture_copy, tmp_path: Path, alertmanager_factory, prometheus_config_factory
) -> None:
    binary = require_tool("prometheus")
    db = fixture_copy(SMALL)
    writer = Writer(db)
    with (
        alertmanager_factory(tmp_path) as am,
        running_daemon(tmp_path, config=e2e_config(db, am.url), wait_path="/readyz") as daemon,
    ):
        config = prometheus_config_factory(
            [daemon.url.removeprefix("http://")], rules_without_for(tmp_path), am.url.removeprefix("http://")
        )
        with running_prometheus(binary, tmp_path, config) as prometheus:

            def logs() -> str:
                return "\n".join(p.output()[-3000:] for p in (daemon, prometheus, am))

            wait_for(
                lambda: value(prometheus, 'up{job="flujo-state-exporter"}') == 1,
                30,
                lambda: f"a successful scrape of the daemon:\n{logs()}",
                interval=0.25,
            )

            # The writer runs the pipeline, saving its state well within the threshold: active, not stuck,
            # no alert anywhere.
            writer.start_run()
            active = f'flujo_workflows_active{{pipeline="{PIPELINE}",status="running"}}'
            stuck = f'flujo_workflows_stuck{{pipeline="{PIPELINE}",status="running"}}'

            def seen_active_not_stuck() -> bool:
                writer.heartbeat()
                return value(prometheus, active) == 1 and value(prometheus, stuck) == 0

            wait_for(seen_active_not_stuck, 20, lambda: f"the writer's run to show as active:\n{logs()}", interval=0.25)
            assert am_alerts(am) == []
            assert promql(prometheus, 'ALERTS{alertname=~"FlujoRunsStuck|WorkflowRunsStuck"}') == []

            # The writer dies: the run stays 'running' and is never updated again.
            died = time.monotonic()

            def both() -> list[dict[str, Any]] | None:
                found = am_alerts(am)
                names = sorted(a["labels"]["alertname"] for a in found)
                return found if names == STUCK_ALERTS else None

            def arrived() -> str:
                names = sorted(a["labels"]["alertname"] for a in am_alerts(am))
                return f"only {names} of {STUCK_ALERTS} reached Alertmanager:\n{logs()}"

            alerts = wait_for(both, 30, arrived, interval=0.25)
            assert time.monotonic() - died >= 3.0, "alerted before the 4 s threshold could have passed"

    by_name = {a["labels"]["alertname"]: a for a in alerts}
    daemon_alert, prometheus_alert = by_name["FlujoRunStuck"], by_name["FlujoRunsStuck"]
    # The daemon's own alert: one per run, with its run id.
    assert daemon_alert["labels"]["pipeline"] == PIPELINE
    assert daemon_alert["labels"]["run_id"] == writer.run_id
    assert daemon_alert["labels"]["source"] == "daemon"
    assert daemon_alert["status"]["state"] == "active"
    # Prometheus' alert from prometheus/flujo.rules.yml: per pipeline, never a run id.
    assert prometheus_alert["labels"]["pipeline"] == PIPELINE
    assert prometheus_alert["labels"]["status"] == "running"
    assert prometheus_alert["labels"]["severity"] == "warning"
    assert prometheus_alert["labels"]["job"] == "flujo-state-exporter"
    assert "run_id" not in prometheus_alert["labels"]
    assert prometheus_alert["annotations"]["summary"] == f"Flujo pipeline {PIPELINE} has 1 stuck running run(s)"
    assert prometheus_alert["status"]["state"] == "active"
    # Prometheus' engine-neutral alert from prometheus/workflow.rules.yml: per engine and reason, no pipeline.
    neutral = by_name["WorkflowRunsStuck"]
    assert {k: v for k, v in neutral["labels"].items() if k != "instance"} == {
        "alertname": "WorkflowRunsStuck",
        "engine": "flujo",
        "reason": "idle",
        "job": "flujo-state-exporter",
        "severity": "warning",
    }
    assert neutral["annotations"]["summary"] == "1 flujo run(s) stuck (idle)"
