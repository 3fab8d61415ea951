"""Marianne (``marianne-ai-compose``): a workspace's job DB (``<workspace>/.marianne-state.db``,
schema versions 1 to 4) and the conductor's registry (``~/.marianne/daemon-state.db``).  Pointed at
the registry, the daemon also reads the workspaces it lists (:mod:`.conductor`).

Read with SQL only: Marianne's own read paths (``load()``, ``list_jobs()``) rewrite zombie jobs to
``paused`` in the user's DB.
"""
