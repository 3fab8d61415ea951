"""Flujo's write jobs: cleanup of old rows and the stale background-task timeout."""
