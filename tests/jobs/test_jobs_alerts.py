"""Stuck-run alerts against a REAL Alertmanager (Debian's prometheus-alertmanager) and a webhook: Flujo's runs,
pynenc's invocations, seeknal's nodes and Marianne's jobs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import urllib.parse
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import marianne_writes
import pytest
from aiohttp import web
from engines.cases import MARIANNE_REGISTRY, MARIANNE_WORKSPACE, PYNENC_FIXTURES, SEEKNAL_FIXTURE, pynenc_expected
from processes import Process, free_port, http_get, running_alertmanager
from prometheus_client import CollectorRegistry, generate_latest
from support import ALL_FIXTURES, FIXTURES, SMALL, parse_exposition, require_tool, sample, wait_for

from exporter.clock import ManualClock
from exporter.collectors import View, build_registry
from exporter.config import MetricsConfig
from exporter.engines.seeknal.simulator import NodeState, SeeknalWriter
from exporter.jobs import JobRunner, JobsConfig
from exporter.jobs.alerts import rfc3339
from exporter.reader import StateReader
from exporter.refresh import Refresher


async def no_sleep(_: float) -> None:
    await asyncio.sleep(0)


def alertmanager(tmp: Path, port: int | None = None) -> contextlib.AbstractContextManager[Process]:
    return running_alertmanager(require_tool("prometheus-alertmanager", "alertmanager"), tmp, port=port)


def am_alerts(am: Process, test: str) -> list[dict[str, Any]]:
    query = urllib.parse.urlencode({"active": "true", "filter": f'test="{test}"'})
    status, body = http_get(f"{am.url}/api/v2/alerts?{query}")
    assert status == 200, body
    alerts: list[dict[str, Any]] = json.loads(body)
    return sorted(alerts, key=lambda a: a["labels"]["run_id"])


@contextlib.asynccontextmanager
async def webhook(statuses: list[int] | None = None) -> AsyncIterator[tuple[str, list[tuple[Any, dict[str, str]]]]]:
    received: list[tuple[Any, dict[str, str]]] = []

    async def handle(request: web.Request) -> web.Response:
        received.append((await request.json(), dict(request.headers)))
        return web.Response(status=statuses.pop(0) if statuses else 200)

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/hook", received
    finally:
        await runner.cleanup()


def naive_utc(instant: datetime) -> str:
    return instant.astimezone(UTC).replace(tzinfo=None).isoformat()


def prepare(db: Path, now: datetime) -> dict[str, str]:
    """Only four active runs, with update times relative to ``now``; returns role -> run_id."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("UPDATE workflow_state SET status = 'completed' WHERE status IN ('running', 'paused')")
        run_ids = [r[0] for r in conn.execute("SELECT run_id FROM workflow_state ORDER BY run_id LIMIT 4")]
        roles = dict(zip(("stuck", "slow_ok", "paused_stuck", "fresh"), run_ids, strict=True))
        setup = {
            "stuck": ("running", "etl", now - timedelta(hours=3)),
            "slow_ok": ("running", "slow", now - timedelta(hours=3)),  # per-pipeline threshold 4h
            "paused_stuck": ("paused", "etl", now - timedelta(hours=3)),  # paused_after 2h
            "fresh": ("running", "etl", now - timedelta(minutes=10)),
        }
        for role, (status, pipeline, updated) in setup.items():
            conn.execute(
                "UPDATE workflow_state SET status = ?, pipeline_name = ?, updated_at = ? WHERE run_id = ?",
                (status, pipeline, naive_utc(updated), roles[role]),
            )
        conn.commit()
    return roles


STUCK = {"running_after": "1h", "per_pipeline": {"slow": "4h"}, "paused_after": "2h"}


def make_runner(
    db: Path,
    clock: ManualClock,
    test: str,
    stuck: dict[str, Any] | None = None,
    writer_tz: tzinfo = UTC,
    **alerts: Any,
) -> JobRunner:
    """The alert job with ``metrics.stuck`` = :data:`STUCK` updated with ``stuck``."""
    settings = {
        "enabled": True,
        "jitter": 0,
        "interval": "30s",
        "severity": "critical",
        "labels": {"test": test},
        "resend_interval": "1m",
        "attempts": 2,
        "retry_backoff": 0,
        **alerts,
    }
    config = JobsConfig.model_validate({"stuck_alerts": settings})
    metrics = MetricsConfig.model_validate({"stuck": {**STUCK, **(stuck or {})}})
    reader = StateReader(db, naive_timezone=writer_tz)
    return JobRunner(config, db, writer_tz, reader, clock, settings=lambda: metrics, sleep=no_sleep)


def exposition(runner: JobRunner) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(runner.collector())
    return generate_latest(registry).decode()


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def test_firing_resent_and_resolved_in_real_alertmanager(fixture_copy, tmp_path: Path) -> None:
    db = fixture_copy(SMALL)
    now = datetime.now(UTC)
    roles = prepare(db, now)
    clock = ManualClock(now)
    with alertmanager(tmp_path) as am:
        async with webhook() as (hook_url, received):
            runner = make_runner(
                db,
                clock,
                "firing",
                alertmanager={"url": am.url},
                webhook={"url": hook_url, "headers": {"X-Token": "t0ken"}},
            )
            stats = await runner.run_job("stuck_alerts")
            assert stats.success, stats.last_error

            firing = wait_for(lambda: am_alerts(am, "firing"), 10, "firing alerts in Alertmanager")
            expected_ids = sorted([roles["stuck"], roles["paused_stuck"]])
            assert [a["labels"]["run_id"] for a in firing] == expected_ids
            for alert in firing:
                run_id = alert["labels"]["run_id"]
                status = "running" if run_id == roles["stuck"] else "paused"
                threshold = timedelta(hours=1 if status == "running" else 2)
                assert alert["labels"] == {
                    "alertname": "FlujoRunStuck",
                    "engine": "flujo",
                    "pipeline": "etl",
                    "severity": "critical",
                    "status": status,
                    "reason": "idle" if status == "running" else "paused_too_long",
                    "run_id": run_id,
                    "test": "firing",
                }
                updated = now - timedelta(hours=3)
                assert alert["annotations"]["run_id"] == run_id
                assert alert["annotations"]["since"] == rfc3339(updated)
                assert run_id in alert["annotations"]["summary"] and "etl" in alert["annotations"]["summary"]
                assert abs(parse_time(alert["startsAt"]) - (updated + threshold)) < timedelta(milliseconds=2)
                assert parse_time(alert["endsAt"]) > now + timedelta(minutes=3)
                assert alert["status"]["state"] == "active"
            first_ends = parse_time(firing[0]["endsAt"])

            assert len(received) == 1
            payload, headers = received[0]
            assert headers["X-Token"] == "t0ken"
            assert payload["status"] == "firing" and payload["version"] == "4"
            assert sorted(a["labels"]["run_id"] for a in payload["alerts"]) == expected_ids
            assert payload["commonLabels"]["alertname"] == "FlujoRunStuck"
            assert payload["commonLabels"]["engine"] == "flujo"
            assert payload["groupLabels"] == {"alertname": "FlujoRunStuck"}
            reasons = {a["labels"]["run_id"]: a["labels"]["reason"] for a in payload["alerts"]}
            assert reasons == {roles["stuck"]: "idle", roles["paused_stuck"]: "paused_too_long"}
            summaries = {a["labels"]["run_id"]: a["annotations"]["summary"] for a in payload["alerts"]}
            assert summaries[roles["stuck"]].startswith(f"Flujo run {roles['stuck']} of pipeline etl is running")
            assert summaries[roles["stuck"]].endswith("(threshold 1h, reason idle)")

            text = exposition(runner)
            assert "run_id" not in text  # never a metric label
            m = parse_exposition(text)
            assert sample(m, "state_exporter_stuck_alerts_firing", pipeline="etl") == 2
            assert sample(m, "state_exporter_alert_deliveries_total", receiver="alertmanager", outcome="success") == 1
            assert sample(m, "state_exporter_alert_deliveries_total", receiver="webhook", outcome="success") == 1

            # 30 s later nothing is due; after the resend interval Alertmanager gets them again.
            clock.advance(30)
            assert (await runner.run_job("stuck_alerts")).success
            m = parse_exposition(exposition(runner))
            assert sample(m, "state_exporter_alert_deliveries_total", receiver="alertmanager", outcome="success") == 1
            clock.advance(31)
            assert (await runner.run_job("stuck_alerts")).success
            m = parse_exposition(exposition(runner))
            assert sample(m, "state_exporter_alert_deliveries_total", receiver="alertmanager", outcome="success") == 2
            resent = wait_for(
                lambda: [a for a in am_alerts(am, "firing") if parse_time(a["endsAt"]) > first_ends],
                10,
                "the resent alerts with a later endsAt",
            )
            assert len(resent) == 2
            assert len(received) == 1  # the webhook hears of a start once

            # The running one finishes, the paused one disappears: both resolve.
            with contextlib.closing(sqlite3.connect(db)) as conn:
                conn.execute("UPDATE workflow_state SET status = 'completed' WHERE run_id = ?", (roles["stuck"],))
                conn.execute("DELETE FROM workflow_state WHERE run_id = ?", (roles["paused_stuck"],))
                conn.commit()
            clock.set(datetime.now(UTC))
            assert (await runner.run_job("stuck_alerts")).success
            wait_for(lambda: not am_alerts(am, "firing"), 10, "no firing alert left in Alertmanager")
            assert len(received) == 2
            resolved, _ = received[1]
            assert resolved["status"] == "resolved"
            assert sorted(a["labels"]["run_id"] for a in resolved["alerts"]) == expected_ids
            assert all(a["status"] == "resolved" and parse_time(a["endsAt"]) == clock() for a in resolved["alerts"])
            m = parse_exposition(exposition(runner))
            assert sample(m, "state_exporter_stuck_alerts_firing", pipeline="etl") == 0
            assert sample(m, "state_exporter_alert_deliveries_total", receiver="alertmanager", outcome="success") == 3
            assert runner.alerts is not None and not runner.alerts.firing and not runner.alerts.resolved

            # Nothing more to send.
            assert (await runner.run_job("stuck_alerts")).success
            m = parse_exposition(exposition(runner))
            assert sample(m, "state_exporter_alert_deliveries_total", receiver="alertmanager", outcome="success") == 3
            assert sample(m, "state_exporter_job_errors_total", job_name="stuck_alerts") == 0


async def test_alertmanager_down_is_counted_and_retried(fixture_copy, tmp_path: Path) -> None:
    db = fixture_copy(SMALL)
    now = datetime.now(UTC)
    roles = prepare(db, now)
    port = free_port()
    clock = ManualClock(now)
    runner = make_runner(db, clock, "down", alertmanager={"url": f"http://127.0.0.1:{port}", "timeout": "2s"})
    stats = await runner.run_job("stuck_alerts")
    assert not stats.success
    assert stats.last_error is not None and f"127.0.0.1:{port}" in stats.last_error
    assert "alertmanager" in stats.last_error
    m = parse_exposition(exposition(runner))
    assert sample(m, "state_exporter_alert_deliveries_total", receiver="alertmanager", outcome="retry") == 1
    assert sample(m, "state_exporter_alert_deliveries_total", receiver="alertmanager", outcome="failure") == 1
    assert sample(m, "state_exporter_job_errors_total", job_name="stuck_alerts") == 1
    assert sample(m, "state_exporter_stuck_alerts_firing", pipeline="etl") == 2  # metrics still say so

    with alertmanager(tmp_path, port) as am:
        clock.advance(5)  # well within the resend interval: still due, it was never delivered
        stats = await runner.run_job("stuck_alerts")
        assert stats.success, stats.last_error
        got = wait_for(lambda: am_alerts(am, "down"), 10, "the alerts held back while Alertmanager was down")
        assert sorted(a["labels"]["run_id"] for a in got) == sorted([roles["stuck"], roles["paused_stuck"]])
    m = parse_exposition(exposition(runner))
    assert sample(m, "state_exporter_alert_deliveries_total", receiver="alertmanager", outcome="success") == 1
    assert sample(m, "state_exporter_job_errors_total", job_name="stuck_alerts") == 1


async def test_webhook_retries_within_a_run(fixture_copy) -> None:
    db = fixture_copy(SMALL)
    now = datetime.now(UTC)
    prepare(db, now)
    async with webhook(statuses=[503]) as (hook_url, received):
        runner = make_runner(db, ManualClock(now), "hook", webhook={"url": hook_url})
        stats = await runner.run_job("stuck_alerts")
        assert stats.success, stats.last_error
        assert len(received) == 2 and received[0][0] == received[1][0]
    m = parse_exposition(exposition(runner))
    assert sample(m, "state_exporter_alert_deliveries_total", receiver="webhook", outcome="retry") == 1
    assert sample(m, "state_exporter_alert_deliveries_total", receiver="webhook", outcome="success") == 1


async def test_metrics_only_and_unreadable_db(fixture_copy, tmp_path: Path) -> None:
    db = fixture_copy(SMALL)
    now = datetime.now(UTC)
    prepare(db, now)
    runner = make_runner(db, ManualClock(now), "metrics")
    assert (await runner.run_job("stuck_alerts")).success
    m = parse_exposition(exposition(runner))
    assert sample(m, "state_exporter_stuck_alerts_firing", pipeline="etl") == 2
    assert not [k for k in m if k[0] == "state_exporter_alert_deliveries_total"]
    missing = tmp_path / "gone.db"
    gone = make_runner(missing, ManualClock(now), "metrics")
    stats = await gone.run_job("stuck_alerts")
    assert not stats.success and stats.last_error is not None and str(missing) in stats.last_error


@pytest.mark.parametrize(
    "bad",
    [{"labels": {name: "x"}} for name in ("run_id", "engine", "reason", "bad-name")],
)
def test_reserved_or_invalid_alert_labels_rejected(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        JobsConfig.model_validate({"stuck_alerts": bad})


@pytest.mark.parametrize("name", ALL_FIXTURES)
async def test_every_layout_alerts_on_its_running_runs(fixture_copy, name: str) -> None:
    """Far in the future every running top-level run is stuck; paused ones only with paused_after."""
    db = fixture_copy(name)
    with contextlib.closing(sqlite3.connect(db)) as conn:
        cols = {row[1] for row in conn.execute("PRAGMA table_info(workflow_state)")}
        top = "COALESCE(is_background_task, 0) = 0" if "is_background_task" in cols else "1"
        running, paused = (
            conn.execute(f"SELECT COUNT(*) FROM workflow_state WHERE status = ? AND {top}", (s,)).fetchone()[0]
            for s in ("running", "paused")
        )
    clock = ManualClock(datetime(2027, 6, 1, tzinfo=UTC))
    runner = make_runner(db, clock, name, {"per_pipeline": {}, "paused_after": None})
    assert (await runner.run_job("stuck_alerts")).success
    assert runner.alerts is not None and len(runner.alerts.firing) == running
    with_paused = make_runner(db, clock, name, {"per_pipeline": {}})
    assert (await with_paused.run_job("stuck_alerts")).success
    assert with_paused.alerts is not None and len(with_paused.alerts.firing) == running + paused
    m = parse_exposition(exposition(with_paused))
    firing = sum(v for (metric, _), v in m.items() if metric == "state_exporter_stuck_alerts_firing")
    assert firing == running + paused


async def test_a_mass_stall_is_sent_in_bounded_requests(tmp_path: Path) -> None:
    """1 200 stuck runs: Alertmanager and the webhook get them all, in requests of at most 500 alerts
    (before: one request with every alert, 9 MB for 20 000 runs)."""
    from traces.flujo_db import FlujoWriter

    now = datetime.now(UTC)
    writer = FlujoWriter(tmp_path / "flujo.db")
    for n in range(1200):
        writer.start_run(f"run_{n:05d}", now - timedelta(hours=3), pipeline=f"p{n % 3}")
    writer.close()
    db = tmp_path / "flujo.db"
    sizes: list[int] = []
    with alertmanager(tmp_path) as am:
        async with webhook() as (hook_url, received):
            runner = make_runner(db, ManualClock(now), "mass", alertmanager={"url": am.url}, webhook={"url": hook_url})
            stats = await runner.run_job("stuck_alerts")
            assert stats.success, stats.last_error
            sizes = [len(payload["alerts"]) for payload, _ in received]
            got = wait_for(lambda: len(am_alerts(am, "mass")) == 1200 and am_alerts(am, "mass"), 10, "1200 alerts")
            assert got and len({a["labels"]["run_id"] for a in got}) == 1200
    assert sizes == [500, 500, 200]
    m = parse_exposition(exposition(runner))
    assert sample(m, "state_exporter_alert_deliveries_total", receiver="alertmanager", outcome="success") == 3
    assert sample(m, "state_exporter_alert_deliveries_total", receiver="webhook", outcome="success") == 3


# (status, pipeline, hours since the last update): judged against running_after 1h, per_pipeline
# slow: 4h and paused_after 2h, then against a reloaded metrics.stuck.
AGREEMENT_RUNS = {
    "etl_idle": ("running", "etl", 3),
    "etl_fresh": ("running", "etl", 0.5),
    "slow_under_override": ("running", "slow", 3),  # stuck by running_after alone, not by the override
    "slow_over_override": ("running", "slow", 5),
    "etl_paused_long": ("paused", "etl", 3),
    "slow_paused_short": ("paused", "slow", 1.5),
}


def stuck_metrics(refresher: Refresher, settings: MetricsConfig, clock: ManualClock) -> dict[str, Counter[str]]:
    """What the metrics say after a refresh: flujo_workflows_stuck by pipeline/status and
    workflow_runs_stuck by reason."""
    refresher.refresh(force_all=True)
    registry = build_registry(View(lambda: refresher.state, lambda: settings, clock))
    m = parse_exposition(generate_latest(registry).decode())
    found: dict[str, Counter[str]] = {"by_status": Counter(), "by_reason": Counter()}
    for (name, labels), value in m.items():
        labels_ = dict(labels)
        if name == "flujo_workflows_stuck":
            found["by_status"][f"{labels_['pipeline']}/{labels_['status']}"] += int(value)
        elif name == "workflow_runs_stuck":
            assert labels_["engine"] == "flujo"
            found["by_reason"][labels_["reason"]] += int(value)
    return {kind: +counts for kind, counts in found.items()}  # +: drops the zeros


def alerted(runner: JobRunner) -> dict[str, Counter[str]]:
    assert runner.alerts is not None
    labels = [runner.alerts._labels(alert) for alert in runner.alerts.firing.values()]
    assert all(label["engine"] == "flujo" and label["alertname"] == "FlujoRunStuck" for label in labels)
    return {
        "by_status": Counter(f"{label['pipeline']}/{label['status']}" for label in labels),
        "by_reason": Counter(label["reason"] for label in labels),
    }


async def test_the_stuck_metric_and_the_stuck_alert_judge_alike(fixture_copy) -> None:
    """One setting, metrics.stuck, for both: the same runs are stuck in flujo_workflows_stuck,
    workflow_runs_stuck and the alerts, with a per-pipeline override and paused_after, and after a
    reload that changes them (the alert job reads the current settings at every run)."""
    db = fixture_copy(SMALL)
    now = datetime.now(UTC)
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("UPDATE workflow_state SET status = 'completed' WHERE status IN ('running', 'paused')")
        run_ids = [r[0] for r in conn.execute("SELECT run_id FROM workflow_state ORDER BY run_id")]
        roles = dict(zip(AGREEMENT_RUNS, run_ids, strict=False))
        for role, (status, pipeline, hours) in AGREEMENT_RUNS.items():
            conn.execute(
                "UPDATE workflow_state SET status = ?, pipeline_name = ?, updated_at = ? WHERE run_id = ?",
                (status, pipeline, naive_utc(now - timedelta(hours=hours)), roles[role]),
            )
        conn.commit()
    clock = ManualClock(now)
    current = [MetricsConfig.model_validate({"stuck": STUCK})]
    refresher = Refresher(StateReader(db, naive_timezone=UTC), lambda: current[0], clock)
    alerts = JobsConfig.model_validate({"stuck_alerts": {"enabled": True, "jitter": 0}})
    reader = StateReader(db, naive_timezone=UTC)
    runner = JobRunner(alerts, db, UTC, reader, clock, settings=lambda: current[0], sleep=no_sleep)

    assert (await runner.run_job("stuck_alerts")).success
    expected = {
        "by_status": Counter({"etl/running": 1, "slow/running": 1, "etl/paused": 1}),
        "by_reason": Counter({"idle": 2, "paused_too_long": 1}),
    }
    assert stuck_metrics(refresher, current[0], clock) == alerted(runner) == expected
    assert runner.alerts is not None
    assert {alert.run.run_id for alert in runner.alerts.firing.values()} == {
        roles["etl_idle"],
        roles["slow_over_override"],
        roles["etl_paused_long"],
    }

    # A reload: slow runs get 2h, paused ones 1h; running_after 4h spares the idle etl run.
    current[0] = MetricsConfig.model_validate(
        {"stuck": {"running_after": "4h", "per_pipeline": {"slow": "2h"}, "paused_after": "1h"}}
    )
    assert (await runner.run_job("stuck_alerts")).success
    expected = {
        "by_status": Counter({"slow/running": 2, "etl/paused": 1, "slow/paused": 1}),
        "by_reason": Counter({"idle": 2, "paused_too_long": 2}),
    }
    assert stuck_metrics(refresher, current[0], clock) == alerted(runner) == expected
    assert {alert.run.run_id for alert in runner.alerts.firing.values()} == {
        roles["slow_under_override"],
        roles["slow_over_override"],
        roles["etl_paused_long"],
        roles["slow_paused_short"],
    }
    assert {alert.run.run_id for alert in runner.alerts.resolved.values()} <= {roles["etl_idle"]}


def test_the_alert_job_knows_no_engine() -> None:
    """Importing the stuck-run alert job loads no engine: it reaches the one that wrote the file
    through the registry (``exporter.engines.engine(schema.engine)``) only.  The ``jobs:`` section
    does name Flujo's write-job settings, and nothing else of Flujo."""
    code = (
        "import sys, exporter.jobs.alerts, exporter.jobs.config\n"
        "print(sorted(m for m in sys.modules if m.startswith('exporter.engines.')))"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    flujo_settings = ["exporter.engines.flujo", "exporter.engines.flujo.jobs", "exporter.engines.flujo.jobs.config"]
    assert out.stdout.strip() == str(["exporter.engines.base", *flujo_settings])


# ---- pynenc: one PynencInvocationStuck per invocation id ----


def pynenc_write(db: Path, prefix: str, invocation_id: str, transitions: list[tuple[str, float]]) -> None:
    """What pynenc writes on each transition: a history row (the append-only log) and the orchestrator's current
    status (its owner is the runner while pending or running, NULL once final)."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        for status, at in transitions:
            owner = "ThreadRunner@ops-1" if status in ("pending", "running") else None
            record = {"invocation_id": invocation_id, "status_record": {"status": status, "runner_id": owner}}
            conn.execute(
                f'INSERT INTO "{prefix}state_backend_history" (invocation_id, history_timestamp, history_status,'
                " history_json) VALUES (?, ?, ?, ?)",
                (invocation_id, at, status, json.dumps(record)),
            )
            conn.execute(
                f'UPDATE "{prefix}orchestrator_invocations" SET status = ?, status_runner_id = ?, status_timestamp = ?'
                " WHERE invocation_id = ?",
                (status, owner, at, invocation_id),
            )
        conn.commit()


@pytest.mark.parametrize("fixture", list(PYNENC_FIXTURES), ids=lambda name: Path(name).stem)
async def test_pynenc_invocations_fire_and_resolve_in_real_alertmanager(fixture: str, tmp_path: Path) -> None:
    """Each fixture holds one running invocation on a dead runner (heartbeats from the day it was written); one of
    its registered invocations is made pending for a minute, past max_pending_seconds (5 s).  Both fire, one alert
    per invocation id with its reason; both resolve when the invocations finish the way pynenc records it."""
    db = tmp_path / Path(fixture).name
    shutil.copyfile(FIXTURES / fixture, db)
    prefix = PYNENC_FIXTURES[fixture][1]
    [app] = pynenc_expected(fixture)["apps"]
    [dead] = [row["invocation_id"] for row in app["stuck"]["running_owned_by_dead_runner"]]
    now = datetime.now(UTC)
    with contextlib.closing(sqlite3.connect(db)) as conn:
        [(pending,)] = conn.execute(
            f'SELECT invocation_id FROM "{prefix}orchestrator_invocations"'
            " WHERE status = 'registered' AND task_id_key = 'seed_tasks.divide'"
        )
    since = (now - timedelta(minutes=1)).timestamp()
    pynenc_write(db, prefix, pending, [("pending", since)])
    clock = ManualClock(now)
    with alertmanager(tmp_path) as am:
        async with webhook() as (hook_url, received):
            runner = make_runner(db, clock, "pynenc", alertmanager={"url": am.url}, webhook={"url": hook_url})
            stats = await runner.run_job("stuck_alerts")
            assert stats.success, stats.last_error
            firing = wait_for(lambda: am_alerts(am, "pynenc"), 10, "pynenc alerts in Alertmanager")
            expected = {dead: ("running", "runner_dead"), pending: ("pending", "pending_timeout")}
            assert {a["labels"]["run_id"]: a["labels"] for a in firing} == {
                run_id: {
                    "alertname": "PynencInvocationStuck",
                    "engine": "pynenc",
                    "pipeline": "seed_app",
                    "severity": "critical",
                    "status": status,
                    "reason": reason,
                    "run_id": run_id,
                    "test": "pynenc",
                }
                for run_id, (status, reason) in expected.items()
            }
            [pending_alert] = [a for a in firing if a["labels"]["run_id"] == pending]
            assert pending_alert["annotations"]["since"] == rfc3339(datetime.fromtimestamp(since, UTC))
            starts = parse_time(pending_alert["startsAt"]) - datetime.fromtimestamp(since, UTC)
            assert abs(starts - timedelta(seconds=5)) < timedelta(milliseconds=2), "since + max_pending_seconds"
            [(payload, _)] = received
            assert payload["status"] == "firing" and payload["commonLabels"]["engine"] == "pynenc"
            m = parse_exposition(exposition(runner))
            assert sample(m, "state_exporter_stuck_alerts_firing", pipeline="seed_app") == 2
            assert "run_id" not in exposition(runner)

            # The dead runner's invocation is finished by the recovery (success); the pending one runs and fails.
            done = datetime.now(UTC).timestamp()
            pynenc_write(db, prefix, dead, [("success", done)])
            pynenc_write(db, prefix, pending, [("running", done - 1), ("failed", done)])
            clock.set(datetime.now(UTC))
            assert (await runner.run_job("stuck_alerts")).success
            wait_for(lambda: not am_alerts(am, "pynenc"), 10, "no pynenc alert left in Alertmanager")
            assert len(received) == 2
            resolved, _ = received[1]
            assert resolved["status"] == "resolved"
            assert sorted(a["labels"]["run_id"] for a in resolved["alerts"]) == sorted(expected)
            assert {a["labels"]["reason"] for a in resolved["alerts"]} == {"runner_dead", "pending_timeout"}
            m = parse_exposition(exposition(runner))
            assert sample(m, "state_exporter_stuck_alerts_firing", pipeline="seed_app") == 0
            assert runner.alerts is not None and not runner.alerts.firing


# ---- seeknal: one SeeknalNodeStuck per running node ----

SEEKNAL_TZ = ZoneInfo("Europe/Berlin")  # the fixture's writer zone (its expected JSON's writer_tz)


async def test_seeknal_stuck_node_fires_and_resolves_in_real_alertmanager(tmp_path: Path) -> None:
    """The fixture's crashed run left transform.customer_totals running since 2026-12-05 08:02:18 (Berlin): past
    the 1 h threshold today, it fires with its run and node; seeknal's DatabaseStateBackend.set_node_state then
    upserts the node's row as finished (same (run_id, node_id), new status, last_run stamped after it ran, in the
    writer's local time), and the alert resolves."""
    db = tmp_path / Path(SEEKNAL_FIXTURE).name
    shutil.copyfile(FIXTURES / SEEKNAL_FIXTURE, db)
    run_id, node = "20261205_080138", "transform.customer_totals"
    written = datetime(2026, 12, 5, 8, 2, 18, 713044, tzinfo=SEEKNAL_TZ)
    clock = ManualClock(datetime.now(UTC))
    with alertmanager(tmp_path) as am:
        async with webhook() as (hook_url, received):
            runner = make_runner(
                db, clock, "seeknal", writer_tz=SEEKNAL_TZ, alertmanager={"url": am.url}, webhook={"url": hook_url}
            )
            stats = await runner.run_job("stuck_alerts")
            assert stats.success, stats.last_error
            [alert] = wait_for(lambda: am_alerts(am, "seeknal"), 10, "seeknal alert in Alertmanager")
            assert alert["labels"] == {
                "alertname": "SeeknalNodeStuck",
                "engine": "seeknal",
                "pipeline": node,
                "severity": "critical",
                "status": "running",
                "reason": "idle",
                "run_id": run_id,
                "test": "seeknal",
            }
            assert alert["annotations"]["since"] == rfc3339(written.astimezone(UTC))
            starts = parse_time(alert["startsAt"]) - written
            assert abs(starts - timedelta(hours=1)) < timedelta(milliseconds=2), "last_run + running_after"
            [(payload, _)] = received
            assert payload["status"] == "firing" and payload["commonLabels"]["engine"] == "seeknal"
            m = parse_exposition(exposition(runner))
            assert sample(m, "state_exporter_stuck_alerts_firing", pipeline=node) == 1
            assert "run_id" not in exposition(runner)

            finished = datetime.now(SEEKNAL_TZ).replace(tzinfo=None)
            writer = SeeknalWriter(db)
            writer.set_node_state(run_id, node, NodeState("h1", finished.isoformat(), "success", 5000, 3))
            writer.close()
            with contextlib.closing(sqlite3.connect(db)) as conn:
                assert conn.execute("SELECT COUNT(*) FROM node_state WHERE node_id = ?", (node,)).fetchone()[0] == 4
            clock.set(datetime.now(UTC))
            assert (await runner.run_job("stuck_alerts")).success
            wait_for(lambda: not am_alerts(am, "seeknal"), 10, "no seeknal alert left in Alertmanager")
            assert len(received) == 2
            resolved, _ = received[1]
            assert resolved["status"] == "resolved"
            assert [a["labels"]["run_id"] for a in resolved["alerts"]] == [run_id]
            m = parse_exposition(exposition(runner))
            assert sample(m, "state_exporter_stuck_alerts_firing", pipeline=node) == 0
            assert runner.alerts is not None and not runner.alerts.firing


# ---- Marianne: one MarianneJobStuck per job id, on the workspace and on the conductor registry ----


def marianne_runner(db: Path, clock: ManualClock, target: str, *, pid_check: bool, **alerts: Any) -> JobRunner:
    """The alert job over one Marianne file, default ``metrics.stuck`` (running_after 1 h)."""
    settings = {
        "enabled": True,
        "jitter": 0,
        "interval": "30s",
        "severity": "critical",
        "labels": {"test": "marianne", "target": target},
        "resend_interval": "1m",
        "attempts": 2,
        "retry_backoff": 0,
        **alerts,
    }
    config = JobsConfig.model_validate({"stuck_alerts": settings})
    metrics = MetricsConfig.model_validate({"marianne": {"same_host_pid_check": pid_check}})
    reader = StateReader(db, naive_timezone=UTC)
    return JobRunner(config, db, UTC, reader, clock, settings=lambda: metrics, sleep=no_sleep)


async def test_marianne_jobs_fire_and_resolve_in_real_alertmanager(tmp_path: Path) -> None:
    """Workspace (same-host pid check on): zombie-run records the pid of a child that exited (a zombie: pid_dead,
    stuck from its last update); paused-run is resumed by a live child and then not saved for 2 hours (idle, stuck
    from its last update + running_after); queued-run runs, saved 5 minutes ago (not stuck).  Registry (check
    off): zombie-run is running with no event since the fixture was written, a job the conductor lost (idle).
    Each fires once, by job id; they resolve when Marianne saves the workspace jobs' end and a restarted
    conductor fails its orphans."""
    workspace, registry = tmp_path / "workspace.db", tmp_path / "registry.db"
    shutil.copyfile(FIXTURES / MARIANNE_WORKSPACE, workspace)
    shutil.copyfile(FIXTURES / MARIANNE_REGISTRY, registry)
    now = datetime.now(UTC)
    zombie = marianne_writes.dead_pid()
    alive = marianne_writes.live_child()
    try:
        with contextlib.closing(sqlite3.connect(workspace)) as conn:
            [(zombie_updated,)] = conn.execute("SELECT updated_at FROM jobs WHERE id = 'zombie-run'")
            conn.execute("UPDATE jobs SET pid = ? WHERE id = 'zombie-run'", (zombie,))
            conn.commit()
        stale_since = now - timedelta(hours=2)
        marianne_writes.set_running(workspace, "paused-run", alive.pid, stale_since)
        marianne_writes.set_running(workspace, "queued-run", alive.pid, now - timedelta(minutes=5))
        with contextlib.closing(sqlite3.connect(registry)) as conn:
            [(last_event,)] = conn.execute("SELECT last_event_at FROM jobs WHERE job_id = 'zombie-run'")
        clock = ManualClock(now)
        with alertmanager(tmp_path) as am:
            async with webhook() as (hook_url, received):
                receivers = {"alertmanager": {"url": am.url}, "webhook": {"url": hook_url}}
                runners = {
                    "workspace": marianne_runner(workspace, clock, "workspace", pid_check=True, **receivers),
                    "registry": marianne_runner(registry, clock, "registry", pid_check=False, **receivers),
                }
                for runner in runners.values():
                    stats = await runner.run_job("stuck_alerts")
                    assert stats.success, stats.last_error
                firing = wait_for(
                    lambda: len(am_alerts(am, "marianne")) == 3 and am_alerts(am, "marianne"), 10, "alerts"
                )
                found = {(a["labels"]["target"], a["labels"]["run_id"], a["labels"]["reason"]): a for a in firing}
                assert set(found) == {
                    ("workspace", "zombie-run", "pid_dead"),
                    ("workspace", "paused-run", "idle"),
                    ("registry", "zombie-run", "idle"),
                }
                for (target, run_id, reason), alert in found.items():
                    assert alert["labels"] == {
                        "alertname": "MarianneJobStuck",
                        "engine": "marianne",
                        "pipeline": run_id,
                        "severity": "critical",
                        "status": "running",
                        "reason": reason,
                        "run_id": run_id,
                        "test": "marianne",
                        "target": target,
                    }
                # A dead pid is stuck from the job's last save; an idle job from its threshold on (Alertmanager
                # keeps milliseconds).
                starts = {key: parse_time(alert["startsAt"]) for key, alert in found.items()}
                expected_starts = {
                    ("workspace", "zombie-run", "pid_dead"): datetime.fromisoformat(zombie_updated),
                    ("workspace", "paused-run", "idle"): stale_since + timedelta(hours=1),
                    ("registry", "zombie-run", "idle"): datetime.fromtimestamp(last_event, UTC) + timedelta(hours=1),
                }
                for key, instant in expected_starts.items():
                    assert abs(starts[key] - instant) < timedelta(milliseconds=1), key
                assert [payload["status"] for payload, _ in received] == ["firing", "firing"]
                m = parse_exposition(exposition(runners["workspace"]))
                assert sample(m, "state_exporter_stuck_alerts_firing", pipeline="zombie-run") == 1
                assert sample(m, "state_exporter_stuck_alerts_firing", pipeline="paused-run") == 1

                # Marianne saves the end of both workspace jobs (the zombie resumed elsewhere and failed, the
                # other completed); the conductor restarts and fails the jobs it lost.
                done = datetime.now(UTC)
                marianne_writes.finish_job(workspace, "zombie-run", "failed", done)
                marianne_writes.finish_job(workspace, "paused-run", "completed", done)
                assert marianne_writes.registry_mark_orphans_failed(registry, done.timestamp()) == 2
                clock.set(done)
                for runner in runners.values():
                    assert (await runner.run_job("stuck_alerts")).success
                wait_for(lambda: not am_alerts(am, "marianne"), 10, "no Marianne alert left in Alertmanager")
                resolved = [payload for payload, _ in received[2:]]
                assert [payload["status"] for payload in resolved] == ["resolved", "resolved"]
                assert sorted(
                    (a["labels"]["target"], a["labels"]["run_id"], a["labels"]["reason"])
                    for payload in resolved
                    for a in payload["alerts"]
                ) == sorted(found)
                for runner in runners.values():
                    assert runner.alerts is not None and not runner.alerts.firing
                m = parse_exposition(exposition(runners["workspace"]))
                assert sample(m, "state_exporter_stuck_alerts_firing", pipeline="zombie-run") == 0
    finally:
        alive.kill()
        alive.wait()
