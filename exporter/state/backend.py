"""``SQLiteBackend``: Flujo's SQLite state backend API on aiosqlite, with correct time windows.

The class is assembled from mixins:

* :class:`~exporter.state.workflows.WorkflowStateMixin` - workflow_state, stats, windows, background tasks
* :class:`~exporter.state.runs.RunsMixin` - runs, steps, system_state, evaluations
* :class:`~exporter.state.traces.TracesMixin` - traces and spans
* :class:`~exporter.state.core.BackendCore` - connection, lock, clock, schema initialisation

Deviations from flujo are listed in the package docstring (:mod:`exporter.state`).
"""

from __future__ import annotations

from exporter.state.runs import RunsMixin
from exporter.state.traces import TracesMixin
from exporter.state.workflows import WorkflowStateMixin


class SQLiteBackend(WorkflowStateMixin, RunsMixin, TracesMixin):
    """Async backend for a Flujo SQLite state DB.

    ``SQLiteBackend(db_path, *, clock=system_clock, naive_timezone=None, busy_timeout_ms=5000)``

    * ``clock``: the time source (aware datetimes); tests pin it with ``ManualClock``.
    * ``naive_timezone``: the zone in which naive timestamps already stored by flujo in
      ``workflow_state`` were written (flujo 0.4 writes local time); default: this system's zone.
      Naive datetimes passed *to* the backend are taken as UTC.

    The file is opened (created, validated, migrated) lazily on first use; :meth:`shutdown` closes the
    connection and the next call reopens it.
    """
