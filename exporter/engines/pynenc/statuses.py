"""pynenc's invocation status vocabulary (``InvocationStatus``) and its canonical phases.

0.1.0 to 0.2.3 write all fourteen words; 0.2.4 dropped ``resumed`` (a paused invocation goes
straight back to ``running``).
"""

from __future__ import annotations

from exporter.model import Phase, PhaseMap

REGISTERED = "registered"
CONCURRENCY_CONTROLLED = "concurrency_controlled"
CONCURRENCY_CONTROLLED_FINAL = "concurrency_controlled_final"
REROUTED = "rerouted"
PENDING = "pending"
PENDING_RECOVERY = "pending_recovery"
RUNNING = "running"
RUNNING_RECOVERY = "running_recovery"
PAUSED = "paused"
RESUMED = "resumed"
KILLED = "killed"
SUCCESS = "success"
FAILED = "failed"
RETRY = "retry"

STATUSES_024 = (
    REGISTERED,
    CONCURRENCY_CONTROLLED,
    CONCURRENCY_CONTROLLED_FINAL,
    REROUTED,
    PENDING,
    PENDING_RECOVERY,
    RUNNING,
    RUNNING_RECOVERY,
    PAUSED,
    KILLED,
    SUCCESS,
    FAILED,
    RETRY,
)
STATUSES_01 = (*STATUSES_024, RESUMED)  # 0.1.0 to 0.2.3
FINAL_STATUSES = (SUCCESS, FAILED, CONCURRENCY_CONTROLLED_FINAL)
# What a finished-run cursor over the history counts: final transitions and retries.
FOLLOWED_STATUSES = (*FINAL_STATUSES, RETRY)

PHASES = PhaseMap(
    {
        REGISTERED: Phase.QUEUED,
        CONCURRENCY_CONTROLLED: Phase.QUEUED,  # held back by a concurrency limit, will run later
        CONCURRENCY_CONTROLLED_FINAL: Phase.SKIPPED,  # never ran: an equal invocation already existed
        REROUTED: Phase.QUEUED,
        PENDING: Phase.QUEUED,  # claimed by a runner, not started yet
        PENDING_RECOVERY: Phase.QUEUED,
        RUNNING: Phase.RUNNING,
        RUNNING_RECOVERY: Phase.QUEUED,  # its runner died; about to be routed again
        PAUSED: Phase.PAUSED,
        RESUMED: Phase.RUNNING,
        KILLED: Phase.QUEUED,  # not final: pynenc's only way out of killed is rerouted
        SUCCESS: Phase.SUCCEEDED,
        FAILED: Phase.FAILED,
        RETRY: Phase.QUEUED,  # failed an attempt, waits for the next one
    }
)
ACTIVE_STATUSES = tuple(s for s in STATUSES_01 if s not in FINAL_STATUSES)


def sql_list(statuses: tuple[str, ...]) -> str:
    """``('a', 'b')`` for an ``IN`` clause, from the fixed words above only (never from data)."""
    return "(" + ", ".join(f"'{status}'" for status in statuses) + ")"
