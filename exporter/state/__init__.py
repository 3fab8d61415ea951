"""Async state backend compatible with Flujo's ``SQLiteBackend`` API (flujo 0.4.35 / 0.6.11 shapes).

Use: ``from exporter.state import SQLiteBackend``.

Deviations from flujo, on purpose:

* Time windows (``recent_workflows_24h``, ``get_failed_workflows``, ``cleanup_old_workflows``,
  background-task windows) compare real instants, not strings; naive timestamps stored by flujo are
  read in ``naive_timezone``.  Unparsable timestamps are skipped with a warning.
* ``load_state`` returns ``created_at``/``updated_at`` as *aware* UTC datetimes.
* A corrupt/non-SQLite file or a foreign SQLite DB raises :class:`StateBackendError`; the file is never
  renamed, replaced or deleted (flujo renames it to ``*.corrupt.<epoch>`` and starts afresh).
* ``get_workflow_stats_sync`` raises :class:`StateBackendError` on failure (flujo returns zeros) and
  adds ``top_level_status_counts`` (as does ``get_workflow_stats``).
* Numeric arguments of the wrong type raise ``TypeError``, negative ones ``ValueError``.
* SQL errors (constraint failures, unknown run for steps/spans/traces/evaluations: foreign keys are
  always on) are raised as :class:`StateBackendError` naming the file.
* ``list_runs`` filters and reports ``runs.status`` (0.4.35 semantics) and adds ``workflow_status``.
* ``cleanup_old_workflows`` and ``cleanup_stale_background_tasks`` share the daemon's write jobs
  core (``exporter/engines/flujo/jobs/core.py``): they change at most 500 rows per short write
  transaction (the whole call is not one transaction), and a row the application re-saved after it was
  read is left alone.  Any non-zero ``is_background_task`` counts as a background task.
* A run's start (``list_runs`` order, ``start_time``/``created_at`` keys) is ``runs.start_time`` where
  non-empty, else ``runs.created_at``: in a 0.4.35 file upgraded by 0.6 ``created_at`` is ``''``.
"""

from exporter.state.backend import SQLiteBackend
from exporter.state.errors import StateBackendError
from exporter.state.serialization import register_custom_serializer, unregister_custom_serializer

__all__ = [
    "SQLiteBackend",
    "StateBackendError",
    "register_custom_serializer",
    "unregister_custom_serializer",
]
