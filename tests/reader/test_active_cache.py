"""The active-row cache of 0.4.x DBs sees every save flujo makes, and never serves a stale row."""

from __future__ import annotations

import sqlite3
from datetime import UTC
from pathlib import Path

from support import SMALL, SMALL06, FlujoTiers, computed_at

from exporter.reader import StateReader

STUCK_RUN = "run_6c12ace8ae340454cac5b68c28f49481"  # long_job, running, last update 2026-10-17


def stuck(tiers: FlujoTiers, now) -> dict[tuple[str, str], int]:  # type: ignore[no-untyped-def]
    summary = tiers.fast(now).active
    return {(p, s): g.stuck for (p, s, bg), g in summary.items() if not bg and g.stuck}


def flujo_save(db: Path, run_id: str, status: str, updated_at: str) -> None:
    """What flujo 0.4.35's save_state does: INSERT OR REPLACE, i.e. delete + insert under a new rowid."""
    conn = sqlite3.connect(db)
    row = conn.execute("SELECT * FROM workflow_state WHERE run_id = ?", (run_id,)).fetchone()
    names = [d[0] for d in conn.execute("SELECT * FROM workflow_state LIMIT 0").description]
    values = dict(zip(names, row, strict=True)) | {"status": status, "updated_at": updated_at}
    conn.execute(
        f"INSERT OR REPLACE INTO workflow_state ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
        [values[n] for n in names],
    )
    conn.commit()
    conn.close()


def test_flujo_saves_are_seen(fixture_copy) -> None:
    db = fixture_copy(SMALL)
    now = computed_at(SMALL)
    tiers = FlujoTiers(StateReader(db, naive_timezone=UTC))
    assert stuck(tiers, now) == {("long_job", "running"): 3}
    running_before = tiers.fast(now).active[("long_job", "running", False)].count
    flujo_save(db, STUCK_RUN, "running", now.replace(tzinfo=None).isoformat())  # it moved again
    assert stuck(tiers, now) == {("long_job", "running"): 2}
    flujo_save(db, STUCK_RUN, "failed", now.replace(tzinfo=None).isoformat())
    summary = tiers.fast(now).active
    assert summary[("long_job", "running", False)].count == running_before - 1


def test_reused_top_rowid_is_reread(fixture_copy) -> None:
    db = fixture_copy(SMALL)
    now = computed_at(SMALL)
    tiers = FlujoTiers(StateReader(db, naive_timezone=UTC))
    conn = sqlite3.connect(db)
    top = conn.execute("SELECT MAX(rowid) FROM workflow_state").fetchone()[0]
    conn.execute(
        "UPDATE workflow_state SET status = 'running', updated_at = '2026-01-01T00:00:00' WHERE rowid = ?", (top,)
    )
    conn.commit()
    before = stuck(tiers, now)
    # the top row is deleted and SQLite hands its rowid to the next insert: a different, fresh row
    (pipeline,) = conn.execute("SELECT pipeline_name FROM workflow_state WHERE rowid = ?", (top,)).fetchone()
    conn.execute("DELETE FROM workflow_state WHERE rowid = ?", (top,))
    conn.execute(
        "INSERT INTO workflow_state (run_id, pipeline_id, pipeline_name, pipeline_version, pipeline_context, status,"
        " created_at, updated_at) VALUES ('run_new', ?, ?, '1', '{}', 'running', ?, ?)",
        (pipeline, pipeline, now.replace(tzinfo=None).isoformat(), now.replace(tzinfo=None).isoformat()),
    )
    assert conn.execute("SELECT rowid FROM workflow_state WHERE run_id = 'run_new'").fetchone()[0] == top
    conn.commit()
    conn.close()
    after = stuck(tiers, now)
    assert sum(after.values()) == sum(before.values()) - 1


def test_in_place_updates_of_06_are_seen(fixture_copy) -> None:
    db = fixture_copy(SMALL06)
    now = computed_at(SMALL06)
    tiers = FlujoTiers(StateReader(db, naive_timezone=UTC))
    before = sum(stuck(tiers, now).values())
    conn = sqlite3.connect(db)
    conn.execute(
        "UPDATE workflow_state SET updated_at = ? WHERE run_id = 'run_e0c53cb83da9c2a90ed42f1a3d4cbf37'",
        (now.isoformat(),),
    )
    conn.commit()
    conn.close()
    assert sum(stuck(tiers, now).values()) == before - 1
