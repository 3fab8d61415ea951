"""The pynenc fixtures (real DBs written by pynenc 0.4.0, 0.1.1, 0.1.0), their oracle values and
the real refresh + exposition path (as tests/engines/test_contract.py ``expose``), with settings."""

from __future__ import annotations

import sqlite3
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from engines.cases import PYNENC_FIXTURES, pynenc_expected
from engines.scrape import Samples as Samples
from engines.scrape import ScrapedDaemon
from engines.scrape import by as by
from engines.scrape import expose as expose
from engines.scrape import family as family
from support import query as query

FIXTURES = tuple(PYNENC_FIXTURES)
# The oracle's names for the layouts -> ours (the oracle calls 0.2.4+ "0.2+").
ORACLE_LAYOUTS = {"0.2+-prefixed": "0.2.4+", "0.1.1-prefixed": "0.1.1-0.2.3", "0.1.0-unprefixed": "0.1.0"}


def expected(fixture: str) -> dict[str, Any]:
    return pynenc_expected(fixture)


def computed_at(fixture: str) -> datetime:
    return datetime.fromisoformat(expected(fixture)["computed_at_utc"])


Daemon = ScrapedDaemon


def execute(db: Path, *statements: str, params: tuple[object, ...] = ()) -> None:
    conn = sqlite3.connect(db)
    try:
        for statement in statements:
            conn.execute(statement, params if statement.count("?") else ())
        conn.commit()
    finally:
        conn.close()


# What a pynenc file holds, read with plain SQL (the truth the metrics are compared with).


def master(db: Path, prefix: str) -> list[tuple[str, str, str, str | None]]:
    """``sqlite_master`` in creation order with the app prefix replaced by ``<p>``."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY rowid").fetchall()
    finally:
        conn.close()
    return [tuple(None if v is None else v.replace(prefix, "<p>") for v in row) for row in rows]


def final_transitions(db: Path, prefix: str, *, top_level: bool = False) -> Counter[tuple[str, str]]:
    """History rows with a final status, by (task, status): what the finished counters count."""
    parent = " AND i.parent_invocation_id IS NULL" if top_level else ""
    rows = query(
        db,
        f'SELECT i.task_id_key, h.history_status, COUNT(*) FROM "{prefix}state_backend_history" h '
        f'JOIN "{prefix}state_backend_invocations" i USING (invocation_id) '
        f"WHERE h.history_status IN ('success', 'failed', 'concurrency_controlled_final'){parent} GROUP BY 1, 2",
    )
    return Counter({(task, status): n for task, status, n in rows})


def current_statuses(db: Path, prefix: str) -> Counter[tuple[str, str]]:
    rows = query(db, f'SELECT task_id_key, status, COUNT(*) FROM "{prefix}orchestrator_invocations" GROUP BY 1, 2')
    return Counter({(task, status): n for task, status, n in rows})


def nonzero(counts: Counter[Any] | dict[Any, float]) -> dict[Any, float]:
    return {k: float(v) for k, v in counts.items() if v}


def invariants(db: Path, prefix: str) -> list[str]:
    """What pynenc's writes always satisfy (SCHEMA.md; checked on the fixtures pynenc wrote too):
    the problems found, empty when none."""
    p = prefix
    problems = []
    checks = {
        "latest history row != orchestrator status": f"""
            SELECT COUNT(*) FROM "{p}orchestrator_invocations" o JOIN "{p}state_backend_history" h
            ON h.invocation_id = o.invocation_id AND h.rowid = (SELECT MAX(rowid) FROM "{p}state_backend_history"
            WHERE invocation_id = o.invocation_id) WHERE h.history_status != o.status""",
        "history_json timestamp != status_timestamp": f"""
            SELECT COUNT(*) FROM "{p}orchestrator_invocations" o JOIN "{p}state_backend_history" h
            ON h.invocation_id = o.invocation_id AND h.rowid = (SELECT MAX(rowid) FROM "{p}state_backend_history"
            WHERE invocation_id = o.invocation_id)
            WHERE ABS(unixepoch(json_extract(h.history_json, '$.status_record.timestamp'), 'subsec')
                      - o.status_timestamp) > 0.001
               OR h.history_timestamp < o.status_timestamp""",
        "owner set after retry/final": f"""SELECT COUNT(*) FROM "{p}orchestrator_invocations"
            WHERE status IN ('retry', 'success', 'failed') AND status_runner_id IS NOT NULL""",
        "owner missing while registered/pending/running": f"""SELECT COUNT(*) FROM "{p}orchestrator_invocations"
            WHERE status IN ('registered', 'pending', 'running') AND status_runner_id IS NULL""",
        "retry_count != retry rows": f"""SELECT COUNT(*) FROM "{p}orchestrator_invocations" o
            WHERE retry_count != (SELECT COUNT(*) FROM "{p}state_backend_history" h
            WHERE h.invocation_id = o.invocation_id AND h.history_status = 'retry')""",
        "attempts != retry_count + 1": f"""SELECT COUNT(*) FROM "{p}orchestrator_invocations" o
            WHERE status IN ('success', 'failed') AND retry_count + 1 != (SELECT COUNT(*)
            FROM "{p}state_backend_history" h
            WHERE h.invocation_id = o.invocation_id AND h.history_status = 'running')""",
        "failed without exactly one exception": f"""SELECT COUNT(*) FROM "{p}orchestrator_invocations" o
            WHERE (status = 'failed') != EXISTS (SELECT 1 FROM "{p}state_backend_exceptions" e
            WHERE e.invocation_id = o.invocation_id AND json_extract(e.exception_data, '$.error_name') IS NOT NULL)""",
        "broker message for an invocation not waiting": f"""SELECT COUNT(*) FROM "{p}broker_message_queue" b
            JOIN "{p}orchestrator_invocations" o USING (invocation_id) WHERE o.status NOT IN ('registered', 'retry')""",
        "invocation without its state backend row": f"""SELECT COUNT(*) FROM "{p}orchestrator_invocations" o
            WHERE NOT EXISTS (SELECT 1 FROM "{p}state_backend_invocations" i
            WHERE i.invocation_id = o.invocation_id)""",
        "first history row not registered": f"""SELECT COUNT(*) FROM "{p}orchestrator_invocations" o
            WHERE (SELECT history_status FROM "{p}state_backend_history" h WHERE h.invocation_id = o.invocation_id
            ORDER BY rowid LIMIT 1) != 'registered'""",
    }
    for what, sql in checks.items():
        [(n,)] = query(db, sql)
        if n:
            problems.append(f"{what}: {n}")
    return problems
