"""pynenc (0.1.0 to 0.4.x) with its SQLite components: orchestrator, state backend and broker
tables, one set per app (``<app>_<hash>__`` prefix since 0.1.1), several apps per file.

Everything the daemon knows about pynenc's files lives in this package: layouts, statuses,
pynenc's own stuck rules, the history cursor and the ``pynenc_*`` families.
"""
