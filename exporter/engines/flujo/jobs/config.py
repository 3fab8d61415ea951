"""Settings of Flujo's write jobs: cleanup of old rows and the stale background-task timeout."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field

from exporter.config_types import Duration, PositiveDuration
from exporter.jobs.settings import Days, JobSettings, interval_field, jitter_field, timeout_field

STALE_TASK_ERROR = "Task timeout: process likely crashed"  # flujo 0.6.11's text
# What the write jobs' Postgres role needs (jobs.postgres.url), for the messages that name it.
WRITE_GRANTS = "SELECT, UPDATE on workflow_state and DELETE on the cleaned tables"
# Every table the cleanup deletes from: the label values of its deleted-rows counter.
CLEANUP_TABLES = ("workflow_state", "runs", "steps", "spans", "traces", "evaluations")


class CleanupConfig(JobSettings):
    """Deletes old workflows like flujo's ``cleanup_old_workflows(days_old)``, comparing real instants."""

    interval: PositiveDuration = interval_field(timedelta(hours=1))
    jitter: Duration = jitter_field(timedelta(minutes=5))
    timeout: PositiveDuration = timeout_field(timedelta(minutes=30))
    days_old: Days = Field(
        default=30.0,
        description="Delete workflow_state rows whose created_at is more than this many days (a float) before now. "
        "Like flujo, created_at is the time of the last save for runs that were never resumed.",
    )
    delete_runs: bool = Field(
        default=False,
        description="Also delete runs and their steps, spans (and on 0.6 traces and evaluations), like flujo's "
        "delete_run, once the run has no workflow_state row left and started more than runs_retention_days ago.",
    )
    runs_retention_days: Days | None = Field(
        default=None,
        description="Age in days (float) after which a run without workflow_state row is deleted when "
        "delete_runs is on; default: days_old.",
    )
    batch_size: int = Field(
        default=500,
        ge=1,
        le=5000,
        description="At most this many workflows (or runs, with their child rows) per delete transaction.",
    )
    max_transaction: PositiveDuration = Field(
        default=timedelta(milliseconds=20),
        description="Target for how long one delete transaction may hold the write lock: a slower transaction "
        "halves the next batch, fast ones grow it back up to batch_size.",
    )
    pause_between_batches: Duration = Field(
        default=timedelta(milliseconds=20),
        description="Pause after every transaction, so that the application writing the DB gets the write lock.",
    )
    dry_run: bool = Field(
        default=False,
        description="Delete nothing: log the run ids that would be deleted (one line per batch) and export "
        "state_exporter_cleanup_would_delete_rows. The DB is then only opened read-only.",
    )


class StaleTasksConfig(JobSettings):
    """Like flujo 0.6.11's ``cleanup_stale_background_tasks(stale_hours)``, comparing real instants."""

    interval: PositiveDuration = interval_field(timedelta(minutes=15))
    jitter: Duration = jitter_field(timedelta(minutes=1))
    timeout: PositiveDuration = timeout_field(timedelta(minutes=5))
    stale_hours: float = Field(
        default=24.0,
        gt=0,
        le=876000,
        description="Running background tasks whose updated_at is more than this many hours (a float) before now "
        "are set to status 'failed'.",
    )
    error_message: str = Field(
        default=STALE_TASK_ERROR,
        min_length=1,
        max_length=1000,
        description="Text written to background_error of a timed-out task (flujo's own text by default).",
    )
