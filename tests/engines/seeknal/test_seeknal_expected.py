"""Every value of the oracle's ``seeknal-2.13.0-sample.db.expected.json`` (database backend, checked
against seeknal's own API), through the real refresh and exposition, with the clock pinned at its
``computed_at_utc`` and the writer's zone Europe/Berlin; and a second zone proving that the naive
``last_run`` times are converted, not compared as text."""

from __future__ import annotations

import sqlite3
from collections import Counter
from datetime import datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from engines import scrape
from engines.cases import SEEKNAL_FIXTURE, pynenc_expected
from engines.scrape import Samples

from exporter.config import MetricsConfig, StuckConfig
from exporter.engines import engine
from exporter.engines.seeknal.snapshot import NODE_DURATION_BUCKETS
from exporter.model import Phase, StuckReason
from exporter.reader import StateReader

TRUTH: dict[str, Any] = pynenc_expected(SEEKNAL_FIXTURE)
DB: dict[str, Any] = TRUTH["database_backend"]
NOW = datetime.fromisoformat(TRUTH["computed_at_utc"])
BERLIN = ZoneInfo(TRUTH["writer_tz"])
NEW_YORK = ZoneInfo("America/New_York")  # UTC-5 in December: 6 h behind Berlin
FINAL = ("success", "failed")


def expose(db: Path, now: datetime = NOW, tz: tzinfo = BERLIN, settings: MetricsConfig | None = None) -> Samples:
    """Every tier refreshed once at ``now`` in the writer's zone ``tz``, rendered as /metrics renders it."""
    return scrape.expose(db, now, settings, tz=tz)


def family(samples: Samples, name: str, label: str | None = None) -> dict[Any, float]:
    """``name``'s samples keyed by ``label``'s value, or by the whole label dict as sorted tuples."""
    found: dict[Any, float] = {}
    for (sample, labels), value in samples.items():
        if sample == name:
            key = dict(labels)[label] if label else tuple(sorted(labels))
            found[key] = found.get(key, 0) + value
    return found


def epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def executions() -> list[dict[str, Any]]:
    """The oracle's executed rows (``node.last_run >= run.last_run``, not cached/skipped/pending)."""
    return [row for row in DB["node_rows"] if row["executed_in_run"]]


@pytest.fixture
def db(fixture_copy) -> Path:
    path: Path = fixture_copy(SEEKNAL_FIXTURE)
    return path


@pytest.fixture
def exposed(db: Path) -> Samples:
    return expose(db)


def test_detected_as_the_database_layout(exposed: Samples) -> None:
    assert family(exposed, "state_exporter_engine_info") == {(("engine", "seeknal"), ("layout", "database")): 1}
    assert family(exposed, "state_exporter_bad_values_total") == {}


def test_runs_by_derived_status(exposed: Samples) -> None:
    runs = family(exposed, "seeknal_runs", "status")
    assert runs == DB["runs_by_derived_status"]
    assert sum(runs.values()) == DB["runs_total"] == len(DB["runs"])
    assert Counter(run["derived_status"] for run in DB["runs"]) == runs
    assert TRUTH["engine_api_crosscheck"]["agrees"]
    overview = family(exposed, "workflow_runs", "phase")
    assert overview == {
        **{phase.value: 0 for phase in Phase},
        "failed": DB["runs_by_derived_status"]["failed"],
        "running": DB["runs_by_derived_status"]["running"],
        "succeeded": DB["runs_by_derived_status"]["success"],
    }
    # The running run's newest write: its running node (transform.customer_totals) at 07:02:18Z.
    running = next(run for run in DB["runs"] if run["derived_status"] == "running")
    newest = max(
        epoch(row["last_run_utc"])
        for row in DB["node_rows"]
        if row["run_id"] == running["run_id"] and row["last_run_utc"]
    )
    assert family(exposed, "workflow_oldest_active_update_timestamp_seconds") == {(("engine", "seeknal"),): newest}


def test_latest_run_nodes_by_kind_and_status(exposed: Samples) -> None:
    nodes = {key: n for key, n in family(exposed, "seeknal_nodes").items() if n}
    truth = Counter((node.split(".")[0], status) for node, status in DB["latest_run_node_status"].items())
    assert nodes == {(("kind", kind), ("status", status)): n for (kind, status), n in truth.items()}
    # Every status of seeknal present for each kind of the latest run (0 when none).
    assert len(family(exposed, "seeknal_nodes")) == 2 * 6
    # The latest run by last_run (10:01:38 Berlin), not by created_at (all rows written in one second).
    assert DB["latest_run_id_by_last_run"] == "20261205_100138_incr" != DB["list_runs_order_by_created_at"][-2]
    assert DB["alerts"]["latest_run_status"] == "success"


def test_stuck_node_and_its_alert(db: Path, exposed: Samples) -> None:
    [stuck] = DB["stuck_running_nodes"]
    assert family(exposed, "seeknal_nodes_stuck") == {(): DB["alerts"]["stuck_running_nodes"]} == {(): 1}
    assert family(exposed, "workflow_runs_stuck", "reason") == {StuckReason.IDLE.value: 1}
    since = family(exposed, "seeknal_node_running_since_timestamp_seconds", "node")
    assert since == {stuck["node_id"]: epoch(stuck["running_since_utc"])}
    assert len(since) == DB["running_nodes_total"]
    assert NOW.timestamp() - since[stuck["node_id"]] == pytest.approx(stuck["age_seconds"], abs=1e-3)
    seeknal = engine("seeknal")
    with StateReader(db, naive_timezone=BERLIN).session() as session:
        [alert] = seeknal.stuck_runs(session, NOW, MetricsConfig())
    assert (alert.run_id, alert.group, alert.status, alert.phase) == (
        stuck["run_id"],
        stuck["node_id"],
        "running",
        Phase.RUNNING,
    )
    assert alert.threshold == timedelta(minutes=TRUTH["stuck_minutes"])
    assert alert.updated_at.timestamp() == epoch(stuck["running_since_utc"])
    assert seeknal.stuck_alert_name == "SeeknalNodeStuck"


def test_stuck_threshold_default_and_settings(db: Path) -> None:
    """30 min by default; metrics.stuck.running_after when set; per_pipeline by node id first."""
    [stuck] = DB["stuck_running_nodes"]
    written = datetime.fromisoformat(stuck["running_since_utc"])  # duration_ms is 0: start = last write
    at = [
        (written + timedelta(minutes=29), None, 0),
        (written + timedelta(minutes=31), None, 1),
        (NOW, StuckConfig(running_after=timedelta(hours=3)), 0),
        (NOW, StuckConfig(running_after=timedelta(minutes=5)), 1),
        (NOW, StuckConfig(per_pipeline={stuck["node_id"]: timedelta(hours=3)}), 0),
        (NOW, StuckConfig(running_after=timedelta(hours=3), per_pipeline={stuck["node_id"]: timedelta(hours=1)}), 1),
    ]
    for now, stuck_settings, want in at:
        settings = MetricsConfig() if stuck_settings is None else MetricsConfig(stuck=stuck_settings)
        assert family(expose(db, now, settings=settings), "seeknal_nodes_stuck") == {(): want}, (now, stuck_settings)


def test_executions_counted_once_per_node_and_last_run(exposed: Samples) -> None:
    counted: Counter[tuple[str, str]] = Counter()
    for labels, value in family(exposed, "seeknal_node_executions_total").items():
        counted[(dict(labels)["node"], dict(labels)["status"])] += value
    truth = Counter((row["node_id"], row["status"]) for row in executions() if row["status"] in FINAL)
    assert {key: n for key, n in counted.items() if n} == truth
    running = sum(1 for row in executions() if row["status"] == "running")
    assert sum(counted.values()) + running == DB["executed_node_rows"]
    assert sum(n for (_, status), n in counted.items() if status == "failed") == DB["failed_executions_total"]
    # The carried-over rows (same node and last_run as an earlier run's) are not executions again.
    carried = [row for row in DB["node_rows"] if not row["executed_in_run"] and row["status"] in FINAL]
    assert carried and sum(counted.values()) == len(
        {(row["node_id"], row["last_run_utc"]) for row in DB["node_rows"] if row["status"] in FINAL}
    )


def test_node_durations(exposed: Samples) -> None:
    counts = family(exposed, "seeknal_node_duration_seconds_count", "node")
    sums = family(exposed, "seeknal_node_duration_seconds_sum", "node")
    finished = [row for row in executions() if row["status"] in FINAL]
    assert counts == Counter(row["node_id"] for row in finished)
    for node, total in sums.items():
        assert total == pytest.approx(sum(r["duration_ms"] for r in finished if r["node_id"] == node) / 1000)
    buckets = family(exposed, "seeknal_node_duration_seconds_bucket")
    daily = {dict(k)["le"]: v for k, v in buckets.items() if dict(k)["node"] == "transform.daily_orders"}
    assert daily["2.5"] == 0 and daily["5.0"] == 1  # 2750 ms
    assert len(daily) == len(NODE_DURATION_BUCKETS) + 1


def test_last_success_and_freshness(exposed: Samples) -> None:
    last = family(exposed, "seeknal_node_last_success_timestamp_seconds", "node")
    assert last == {node: epoch(at) for node, at in DB["last_success_utc_by_node"].items()}
    for node, age in DB["freshness_age_seconds_by_node"].items():
        assert NOW.timestamp() - last[node] == pytest.approx(age, abs=1e-3)
    assert [n for n, at in last.items() if NOW.timestamp() - at > 86400] == DB["alerts"]["nodes_without_success_in_24h"]


def test_rows_processed_of_the_latest_execution(exposed: Samples) -> None:
    latest: dict[str, dict[str, Any]] = {}
    for row in executions():
        if row["status"] in FINAL and (
            row["node_id"] not in latest or row["last_run_utc"] > latest[row["node_id"]]["last_run_utc"]
        ):
            latest[row["node_id"]] = row
    assert family(exposed, "seeknal_node_rows_processed", "node") == {n: r["row_count"] for n, r in latest.items()}


def test_locks(exposed: Samples) -> None:
    assert family(exposed, "seeknal_locks_held") == {(): DB["locks_held"]} == {(): DB["alerts"]["locks_held"]}
    [lock] = DB["locks"]
    oldest = family(exposed, "seeknal_lock_oldest_timestamp_seconds")
    assert oldest == {(): epoch(lock["locked_at_utc"])}
    assert NOW.timestamp() - oldest[()] == lock["age_seconds"] == DB["alerts"]["oldest_lock_age_seconds"]


def test_intervals(exposed: Samples) -> None:
    completed = family(exposed, "seeknal_node_completed_intervals", "node")
    pending = family(exposed, "seeknal_node_restatement_intervals_pending", "node")
    for incremental in DB["incremental"]:
        assert completed[incremental["node_id"]] == incremental["completed_intervals"]
        assert pending[incremental["node_id"]] == incremental["restatement_intervals_pending"]
    others = set(completed) - {i["node_id"] for i in DB["incremental"]}
    assert others and all(completed[n] == pending[n] == 0 for n in others)


def test_node_labels_capped(db: Path) -> None:
    """max_steps node ids keep their label, in order of first execution; the rest are ``other``."""
    capped = expose(db, settings=MetricsConfig(max_steps=2))
    counted = family(capped, "seeknal_node_executions_total", "node")
    assert set(counted) == {"source.orders", "transform.customer_totals", "other"}
    assert sum(counted.values()) == sum(family(expose(db), "seeknal_node_executions_total", "node").values())
    assert set(family(capped, "seeknal_node_last_success_timestamp_seconds", "node")) == set(counted)


def test_naive_times_are_converted_in_the_writer_zone(db: Path, exposed: Samples) -> None:
    """The same rows read as New York times (UTC-5) are 6 h later than as Berlin times (UTC+1): every
    naive time moves, the UTC ``locked_at`` does not, and the crashed node is not running yet at NOW."""
    shift = 6 * 3600.0
    other = expose(db, tz=NEW_YORK)
    berlin_success = family(exposed, "seeknal_node_last_success_timestamp_seconds", "node")
    assert family(other, "seeknal_node_last_success_timestamp_seconds", "node") == {
        node: at + shift for node, at in berlin_success.items()
    }
    assert family(other, "seeknal_lock_oldest_timestamp_seconds") == family(
        exposed, "seeknal_lock_oldest_timestamp_seconds"
    )
    assert family(other, "seeknal_nodes_stuck") == {(): 0}  # its last write is in the future at NOW
    later = expose(db, NOW + timedelta(hours=6), tz=NEW_YORK)
    assert family(later, "seeknal_nodes_stuck") == {(): 1}
    [stuck] = DB["stuck_running_nodes"]
    assert family(later, "seeknal_node_running_since_timestamp_seconds", "node") == {
        stuck["node_id"]: epoch(stuck["running_since_utc"]) + shift
    }


def test_unreadable_values_lose_only_themselves(db: Path, exposed: Samples) -> None:
    """A node time that is no time, an interval list that is no JSON list: that value is skipped and
    counted, the node's other values and every run stay."""
    conn = sqlite3.connect(db)
    try:
        conn.execute(
            "UPDATE node_state SET restatement_intervals_json = '{oops' WHERE node_id = 'transform.daily_orders'"
        )
        conn.execute(
            "UPDATE node_state SET last_run = 'yesterday' "
            "WHERE run_id = '20261204_080123' AND node_id = 'source.orders'"
        )
        conn.commit()
    finally:
        conn.close()
    dirty = expose(db)
    bad = family(dirty, "state_exporter_bad_values_total")
    assert bad == {
        (("column", "last_run"), ("table", "node_state")): 1,
        (("column", "restatement_intervals_json"), ("table", "node_state")): 1,
    }
    assert family(dirty, "seeknal_runs", "status") == family(exposed, "seeknal_runs", "status")
    pending = family(dirty, "seeknal_node_restatement_intervals_pending", "node")
    assert pending["transform.daily_orders"] == 0
    assert family(dirty, "seeknal_node_completed_intervals", "node")["transform.daily_orders"] == 2
    executions = family(dirty, "seeknal_node_executions_total", "node")
    assert executions["source.orders"] == family(exposed, "seeknal_node_executions_total", "node")["source.orders"] - 1
