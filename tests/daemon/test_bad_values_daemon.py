"""The daemon as a process over a DB full of bad label values: /metrics stays 200 and counts them."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from processes import http_get, running_daemon
from support import SMALL06, parse_exposition

FAST = "metrics:\n  refresh_interval: 1s\n  counts_interval: 1s\n  aggregate_interval: 1s\n"


def test_bad_values_in_every_label_column_keep_metrics_up(fixture_copy, tmp_path: Path) -> None:
    db = fixture_copy(SMALL06)
    conn = sqlite3.connect(db)

    def put(table: str, column: str, value: str, where: str, offset: int = 0) -> None:
        rowid = conn.execute(f"SELECT rowid FROM {table} WHERE {where} LIMIT 1 OFFSET ?", (offset,)).fetchone()[0]
        conn.execute(f"UPDATE {table} SET {column} = {value} WHERE rowid = ?", (rowid,))

    # one of each kind, in each label column the snapshot reads (the 0.6 schema allows them all but NULL)
    put("workflow_state", "status", "X'FF00'", "status = 'completed'")
    put("workflow_state", "status", "CAST(X'C328' AS TEXT)", "status = 'failed'")
    conn.execute("UPDATE workflow_state SET pipeline_name = X'FF00' WHERE status = 'running'")
    put("runs", "status", "CAST(X'C328' AS TEXT)", "1")
    put("runs", "pipeline_name", "X'00'", "1", offset=1)
    conn.execute("UPDATE spans SET status = CAST(X'FFFE' AS TEXT) WHERE rowid <= 7")
    put("workflow_state", "created_at", "'9999-12-31T23:59:59+00:00'", "status = 'completed'", offset=1)
    conn.commit()
    conn.close()
    with running_daemon(tmp_path, "--db", str(db), config=FAST) as daemon:
        deadline = time.monotonic() + 15
        while True:
            status, body = http_get(daemon.url + "/metrics")
            assert status == 200, body
            samples = parse_exposition(body)
            bad = {
                (dict(labels)["table"], dict(labels)["column"])
                for name, labels in samples
                if name == "state_exporter_bad_values_total"
            }
            if len(bad) >= 6 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert {
            ("workflow_state", "status"),
            ("workflow_state", "pipeline_name"),
            ("workflow_state", "created_at"),
            ("runs", "status"),
            ("runs", "pipeline_name"),
            ("spans", "status"),
        } <= bad
        assert http_get(daemon.url + "/readyz")[0] == 200
        first = samples[("state_exporter_snapshot_timestamp_seconds", frozenset())]
        time.sleep(1.5)
        later = parse_exposition(http_get(daemon.url + "/metrics")[1])
        assert later[("state_exporter_snapshot_timestamp_seconds", frozenset())] > first  # still refreshing
        assert later[("state_exporter_collector_success", frozenset({("collector", "aggregates")}))] == 1
