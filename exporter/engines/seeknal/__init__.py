"""seeknal's ``DatabaseStateBackend`` SQLite state (``run_state``, ``node_state``, ``backend_locks``).

The registry loads :mod:`exporter.engines.seeknal.engine`; nothing here imports it.
"""
