"""Marianne's status words: ``JobStatus`` and ``SheetStatus`` (workspace DB), ``DaemonJobStatus``
(conductor registry), and the canonical phase of every job status of either."""

from __future__ import annotations

from exporter.model import Phase, PhaseMap

PENDING = "pending"
QUEUED = "queued"  # the registry's word for a job the workspace calls pending
RUNNING = "running"
COMPLETED = "completed"
FAILED = "failed"
PAUSED = "paused"
PAUSED_AT_CHAIN = "paused_at_chain"
CANCELLED = "cancelled"

JOB_STATUSES = (PENDING, RUNNING, COMPLETED, FAILED, PAUSED, PAUSED_AT_CHAIN, CANCELLED)
REGISTRY_STATUSES = (QUEUED, RUNNING, COMPLETED, PAUSED, PAUSED_AT_CHAIN, FAILED, CANCELLED, PENDING)
# The eleven scheduling states of a sheet (the baton's); persistence writes all of them.
SHEET_STATUSES = (
    "pending",
    "ready",
    "dispatched",
    "in_progress",
    "waiting",
    "retry_scheduled",
    "fermata",
    "completed",
    "failed",
    "skipped",
    "cancelled",
)
SHEET_COMPLETED, SHEET_FAILED = "completed", "failed"
# What JobRegistry.get_orphaned_jobs() returns, and what mark_orphans_failed() fails on a conductor start.
ORPHAN_STATUSES = (QUEUED, RUNNING)

PHASES = PhaseMap(
    {
        PENDING: Phase.QUEUED,
        QUEUED: Phase.QUEUED,
        RUNNING: Phase.RUNNING,
        PAUSED: Phase.PAUSED,
        PAUSED_AT_CHAIN: Phase.PAUSED,  # waits for a chained job before it goes on
        COMPLETED: Phase.SUCCEEDED,
        FAILED: Phase.FAILED,
        CANCELLED: Phase.CANCELLED,
    }
)


def sql_list(statuses: tuple[str, ...]) -> str:
    """``('a', 'b')`` for an ``IN`` clause, from the fixed words above only (never from data)."""
    return "(" + ", ".join(f"'{status}'" for status in statuses) + ")"
