"""Scheduled maintenance jobs: cleanup of old workflows, stale background-task timeout, stuck-run alerts.

Public API (imported lazily, so that ``exporter.config`` may import :mod:`exporter.jobs.config`
without pulling in aiohttp or the reader)::

    from exporter.jobs import JobRunner, JobsConfig, writes_enabled
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from exporter.jobs.config import JobsConfig, writes_enabled
    from exporter.jobs.runner import JobRunner

__all__ = ["JobRunner", "JobsConfig", "writes_enabled"]


def __getattr__(name: str) -> Any:
    if name in ("JobsConfig", "writes_enabled"):
        from exporter.jobs import config

        return getattr(config, name)
    if name == "JobRunner":
        from exporter.jobs.runner import JobRunner

        return JobRunner
    raise AttributeError(f"module 'exporter.jobs' has no attribute {name!r}")
