"""seeknal's node statuses and the run status the exporter derives from them.

seeknal stores no run status: a run is ``failed`` when any of its nodes failed, else ``running``
when any is running or pending, else ``success`` (``cached`` and ``skipped`` nodes count as
success).  A NULL node status reads back as ``pending`` through seeknal's API, and so here.
"""

from __future__ import annotations

from exporter.model import Phase, PhaseMap

PENDING = "pending"
RUNNING = "running"
SUCCESS = "success"
FAILED = "failed"
CACHED = "cached"
SKIPPED = "skipped"

NODE_STATUSES = (PENDING, RUNNING, SUCCESS, FAILED, CACHED, SKIPPED)
# What an execution ends as; a running row is overwritten (with a new last_run) when it finishes.
FINISHED_NODE_STATUSES = (SUCCESS, FAILED)
RUN_STATUSES = (FAILED, RUNNING, SUCCESS)

# The derived run statuses (what ``seeknal_runs`` and ``workflow_runs`` count).
PHASES = PhaseMap({FAILED: Phase.FAILED, RUNNING: Phase.RUNNING, SUCCESS: Phase.SUCCEEDED})


def node_status(raw: str | None) -> str:
    return PENDING if raw is None else raw
