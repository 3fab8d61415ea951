"""Stored values as numbers and labels, and each app's identity and stuck-rule settings.

pynenc writes no naive local time: epoch seconds (UTC) as REAL, and SQLite's ``julianday('now')``
for the broker's ``created_at``.
"""

from __future__ import annotations

import json
import math
import sqlite3
from dataclasses import dataclass

from exporter.engines.pynenc.layout import APP_INFO, AppTables, table_prefix
from exporter.labels import label_text
from exporter.reader.badvalues import BadValue, shown

UNIX_EPOCH_JULIAN_DAY = 2440587.5
DEFAULT_MAX_PENDING_SECONDS = 5.0
DEFAULT_RUNNER_DEAD_AFTER_MINUTES = 10.0
UNKNOWN = "unknown"


def epoch(raw: object) -> float | None:
    """Epoch seconds from a REAL (or a number stored as text), or ``None``."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, str):
        try:
            raw = float(raw)
        except ValueError:
            return None
    if isinstance(raw, int | float) and math.isfinite(raw) and raw >= 0:
        return float(raw)
    return None


def julian_to_epoch(raw: object) -> float | None:
    days = epoch(raw)
    return None if days is None else (days - UNIX_EPOCH_JULIAN_DAY) * 86400.0


@dataclass(frozen=True)
class AppConfig:
    label: str  # the app id as the ``app`` label
    max_pending_seconds: float = DEFAULT_MAX_PENDING_SECONDS
    runner_dead_after_minutes: float = DEFAULT_RUNNER_DEAD_AFTER_MINUTES
    bad: tuple[BadValue, ...] = ()


def app_config(conn: sqlite3.Connection, app: AppTables) -> AppConfig:
    """The app's id and its overrides of the stuck rules from ``app_info_json.config_values``.

    A prefixed app's id must give back its prefix (a row written by something else is ignored);
    0.1.0 files have no prefix and may mix apps: one row is that app, several cannot be told apart."""
    if not app.has(APP_INFO):
        return AppConfig(app.fallback_app)
    table = app.name(APP_INFO)
    rows = conn.execute(f"SELECT app_id, app_info_json FROM {app.q(APP_INFO)} LIMIT 100").fetchall()
    bad: list[BadValue] = []
    mine = []
    for app_id, info in rows:
        label = label_text(app_id)
        if label is None:
            bad.append(BadValue(table, "app_id", "", shown(app_id)))
        elif not app.prefix or table_prefix(label) == app.prefix:
            mine.append((label, info))
    if len(mine) != 1:
        return AppConfig(app.fallback_app if app.prefix or not mine else "mixed", bad=tuple(bad))
    label, info = mine[0]
    values: dict[str, float] = {}
    try:
        parsed = json.loads(info)
        config = parsed.get("config_values") if isinstance(parsed, dict) else None
    except (TypeError, ValueError):
        config = None
        bad.append(BadValue(table, "app_info_json", label, shown(info)))
    if isinstance(config, dict):
        for key in ("max_pending_seconds", "runner_considered_dead_after_minutes"):
            if key not in config:
                continue
            number = epoch(config[key])
            if number is None:
                bad.append(BadValue(table, "app_info_json", label, f"{key}={shown(config[key])}"))
            else:
                values[key] = number
    return AppConfig(
        label,
        values.get("max_pending_seconds", DEFAULT_MAX_PENDING_SECONDS),
        values.get("runner_considered_dead_after_minutes", DEFAULT_RUNNER_DEAD_AFTER_MINUTES),
        tuple(bad),
    )
