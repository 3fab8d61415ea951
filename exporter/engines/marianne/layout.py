"""Recognise Marianne's two files from the catalogue alone.

| target    | layout         | how to recognise it                                                    |
|-----------|----------------|------------------------------------------------------------------------|
| workspace | `workspace-v1` | `jobs(id, status, pid, updated_at…)`, `sheets`, `execution_history`     |
| workspace | `workspace-v2` | v1 + `jobs.config_path`                                                 |
| workspace | `workspace-v3` | v2 + `sheets.execution_duration_seconds`, `exit_signal`, `exit_reason`  |
| workspace | `workspace-v4` | v3 + `sheets.success_without_retry` (was `first_attempt_success`)      |
| registry  | `registry`     | `jobs(job_id, workspace, status, pid, submitted_at…)`                   |

The versions are those of ``SQLiteStateBackend``'s migrations; ``schema_version`` is data, not
catalogue, so it is not what decides.  Every column a version lacks is simply not read (its
families are left out rather than reported as zero).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from exporter.engines.base import missing_from
from exporter.reader.errors import DatabaseUnavailable, Problem

ENGINE_NAME = "marianne"

JOBS, SHEETS, HISTORY = "jobs", "sheets", "execution_history"
WORKSPACE_REQUIRED = {
    JOBS: ("id", "name", "status", "pid", "total_retry_count", "updated_at", "started_at", "completed_at"),
    SHEETS: ("job_id", "sheet_num", "status", "attempt_count", "error_category"),
    HISTORY: ("id", "job_id", "sheet_num", "attempt_num"),
}
REGISTRY_REQUIRED = ("job_id", "workspace", "status", "pid", "submitted_at", "started_at", "last_event_at")
V3_SHEET_COLUMNS = ("execution_duration_seconds", "exit_signal", "exit_reason")


@dataclass(frozen=True)
class WorkspaceSchema:
    version: int  # 1 to 4, from the columns present
    engine: str = ENGINE_NAME

    @property
    def layout(self) -> str:
        return f"workspace-v{self.version}"

    @property
    def has_exit_reason(self) -> bool:
        return self.version >= 3

    @property
    def has_sheet_durations(self) -> bool:
        return self.version >= 3


@dataclass(frozen=True)
class RegistrySchema:
    engine: str = ENGINE_NAME

    @property
    def layout(self) -> str:
        return "registry"


Schema = WorkspaceSchema | RegistrySchema


def recognise(catalogue: Mapping[str, frozenset[str]]) -> Schema | str:
    jobs = catalogue.get(JOBS)
    if jobs is None:
        return "no jobs table"
    if "job_id" in jobs and "workspace" in jobs:
        lacking = [c for c in REGISTRY_REQUIRED if c not in jobs]
        if lacking:
            return f"conductor registry table jobs lacks column(s) {', '.join(lacking)}"
        return RegistrySchema()
    missing = missing_from(catalogue, WORKSPACE_REQUIRED)
    if missing is not None:
        return missing
    return WorkspaceSchema(_version(jobs, catalogue[SHEETS]))


def _version(jobs: frozenset[str], sheets: frozenset[str]) -> int:
    if all(c in sheets for c in V3_SHEET_COLUMNS):
        return 4 if "success_without_retry" in sheets else 3
    return 2 if "config_path" in jobs else 1


def marianne_schema(schema: object) -> Schema:
    if isinstance(schema, WorkspaceSchema | RegistrySchema):
        return schema
    engine = getattr(schema, "engine", "another engine")
    raise DatabaseUnavailable(Problem.UNKNOWN_LAYOUT, f"this is a {engine} state DB, not a Marianne one")
