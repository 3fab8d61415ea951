"""Recognise pynenc's SQLite tables, per app, from the catalogue alone.

| layout        | how to recognise it                                                          |
|---------------|------------------------------------------------------------------------------|
| 0.1.0         | no prefix: ``state_backend_history``, ``orchestrator_invocations``…           |
| 0.1.1-0.2.3   | ``<S>_<H>__`` prefix per app; ``orchestrator_runner_heartbeats.last_service_start`` |
| 0.2.4+        | prefix; ``orchestrator_atomic_service_executions`` or ``parent_event_id``     |

``S`` is the app id with every character outside ``[A-Za-z0-9_]`` replaced by ``_`` (``_`` in
front of a leading digit, ``_default`` when empty) and ``H`` the first 8 hex digits of the app
id's SHA-256.  pynenc never migrates its tables, so each prefix has one layout, but two prefixes
in one file may differ.  Table names are only ever taken from the catalogue (never from data) and
always quoted.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from exporter.engines.pynenc.statuses import STATUSES_01, STATUSES_024
from exporter.reader.errors import DatabaseUnavailable, Problem

ENGINE_NAME = "pynenc"

# Components (the table name after the app prefix).
HISTORY = "state_backend_history"
SB_INVOCATIONS = "state_backend_invocations"
EXCEPTIONS = "state_backend_exceptions"
RUNNER_CONTEXTS = "state_backend_runner_contexts"
APP_INFO = "state_backend_app_info"
INVOCATIONS = "orchestrator_invocations"
HEARTBEATS = "orchestrator_runner_heartbeats"
ATOMIC_SERVICE = "orchestrator_atomic_service_executions"
BROKER = "broker_message_queue"

REQUIRED = {
    HISTORY: ("invocation_id", "history_timestamp", "history_status"),
    INVOCATIONS: ("invocation_id", "task_id_key", "status", "status_runner_id", "status_timestamp"),
}
# Optional tables are used only with these columns; without them the table is ignored.
OPTIONAL = {
    SB_INVOCATIONS: ("invocation_id", "task_id_key", "parent_invocation_id"),
    EXCEPTIONS: ("invocation_id", "exception_data"),
    RUNNER_CONTEXTS: ("runner_id", "runner_cls"),
    APP_INFO: ("app_id", "app_info_json"),
    HEARTBEATS: ("runner_id", "last_heartbeat"),
    BROKER: ("invocation_id", "created_at"),
}
PREFIX = re.compile(r"[A-Za-z0-9_]+_[0-9a-f]{8}__")


class Layout(StrEnum):
    V010 = "0.1.0"
    V011 = "0.1.1-0.2.3"
    V024 = "0.2.4+"

    @property
    def statuses(self) -> tuple[str, ...]:
        return STATUSES_024 if self is Layout.V024 else STATUSES_01


def table_prefix(app_id: str) -> str:
    """The prefix pynenc 0.1.1+ gives an app's tables."""
    sanitised = re.sub(r"[^A-Za-z0-9_]", "_", app_id)
    if sanitised[:1].isdigit():
        sanitised = "_" + sanitised
    digest = hashlib.sha256(app_id.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"{sanitised or '_default'}_{digest}__"


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class AppTables:
    """One app's tables: ``prefix`` + component, for the components present with the columns we read."""

    prefix: str
    layout: Layout
    columns: Mapping[str, frozenset[str]]  # component -> its columns

    def has(self, component: str, column: str | None = None) -> bool:
        cols = self.columns.get(component)
        return cols is not None and (column is None or column in cols)

    def name(self, component: str) -> str:
        """The table's name as stored (for bad-value labels and messages)."""
        return self.prefix + component

    def q(self, component: str) -> str:
        """The table's name quoted for SQL; only for components present (see :meth:`has`)."""
        if component not in self.columns:
            raise KeyError(f"{self.prefix}{component} is not in this file")
        return quote(self.prefix + component)

    @property
    def fallback_app(self) -> str:
        """The app's name as far as the table names tell (its id may be unreadable)."""
        return self.prefix[:-11] if self.prefix else "default"


@dataclass(frozen=True)
class Schema:
    apps: tuple[AppTables, ...]
    engine: str = ENGINE_NAME

    @property
    def layout(self) -> str:
        """One layout, or several joined by ``+`` when the file's apps differ."""
        return "+".join(sorted({app.layout.value for app in self.apps}))


def recognise(catalogue: Mapping[str, frozenset[str]]) -> Schema | str:
    """Every pynenc app in the file (each with its own layout), or what the file lacks to be one."""
    prefixes: set[str] = set()
    for table in catalogue:
        for component in REQUIRED:
            if table.endswith(component):
                prefix = table[: -len(component)]
                if prefix == "" or PREFIX.fullmatch(prefix):
                    prefixes.add(prefix)
    if not prefixes:
        return f"no {HISTORY} or {INVOCATIONS} table (with or without an app prefix)"
    apps, why = [], []
    for prefix in sorted(prefixes):
        found = _app(catalogue, prefix)
        if isinstance(found, str):
            why.append(found)
        else:
            apps.append(found)
    if not apps:
        return "; ".join(why)
    return Schema(tuple(apps))


def _app(catalogue: Mapping[str, frozenset[str]], prefix: str) -> AppTables | str:
    columns: dict[str, frozenset[str]] = {}
    missing = []
    for component, needed in (*REQUIRED.items(), *OPTIONAL.items()):
        cols = catalogue.get(prefix + component)
        if cols is None:
            continue
        lacking = [c for c in needed if c not in cols]
        if lacking:
            missing.append(f"table {prefix}{component} lacks column(s) {', '.join(lacking)}")
            continue
        columns[component] = cols
    if not any(component in columns for component in REQUIRED):
        return "; ".join(missing)
    return AppTables(prefix, _layout(catalogue, prefix, columns), columns)


def _layout(catalogue: Mapping[str, frozenset[str]], prefix: str, columns: Mapping[str, frozenset[str]]) -> Layout:
    if not prefix:
        return Layout.V010
    if prefix + ATOMIC_SERVICE in catalogue or "parent_event_id" in columns.get(SB_INVOCATIONS, frozenset()):
        return Layout.V024
    return Layout.V011


def pynenc_schema(schema: object) -> Schema:
    if isinstance(schema, Schema):
        return schema
    engine = getattr(schema, "engine", "another engine")
    raise DatabaseUnavailable(Problem.UNKNOWN_LAYOUT, f"this is a {engine} state DB, not a pynenc one")
