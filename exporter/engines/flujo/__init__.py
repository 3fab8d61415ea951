"""Flujo (0.4.32 to 0.6.x): its ``workflow_state``, ``runs``, ``steps`` and ``spans`` tables.

Everything the daemon knows about Flujo's files lives in this package: layouts, statuses, queries,
the stuck rule, the finished-run tracker, span reading, and the write jobs Flujo's own backend
defines (cleanup of old rows, the stale background-task timeout).
"""
