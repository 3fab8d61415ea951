"""Flujo's status vocabulary, in one place, and what each status means in canonical phases.

Flujo writes the same five words into ``workflow_state.status`` and ``runs.status``; steps are only
ever ``completed`` or ``failed``.  ``paused`` is a human-in-the-loop wait.
"""

from __future__ import annotations

from exporter.model import Phase, PhaseMap

RUNNING = "running"
PAUSED = "paused"
COMPLETED = "completed"
FAILED = "failed"
CANCELLED = "cancelled"

ACTIVE_STATUSES = (RUNNING, PAUSED)
FINISHED_STATUSES = (COMPLETED, FAILED, CANCELLED)
WORKFLOW_STATUSES = (*ACTIVE_STATUSES, *FINISHED_STATUSES)
STEP_STATUSES = (COMPLETED, FAILED)

PHASES = PhaseMap(
    {
        RUNNING: Phase.RUNNING,
        PAUSED: Phase.PAUSED,
        COMPLETED: Phase.SUCCEEDED,
        FAILED: Phase.FAILED,
        CANCELLED: Phase.CANCELLED,
    }
)


def sql_list(statuses: tuple[str, ...]) -> str:
    """``('a', 'b')`` for an ``IN`` clause, from the fixed words above only (never from data)."""
    return "(" + ", ".join(f"'{status}'" for status in statuses) + ")"


ACTIVE_SQL = sql_list(ACTIVE_STATUSES)
FINISHED_SQL = sql_list(FINISHED_STATUSES)
