"""The ``targets:`` section: several DBs served by one exporter, each at ``/probe?target=NAME``.

A target is a name (what Prometheus asks for, and the ``target`` label of the exporter's own metrics)
and its own ``db`` and ``metrics`` sections.  Both inherit the top-level sections key by key (nested
mappings too), so settings shared by every DB are written once; ``db.path`` (and a Postgres ``db.url``)
is never inherited: with targets the top-level ``db.path`` must stay unset.  Inheritance happens before
validation, so a value a target inherits is checked with the target's own values
(``targets.a.metrics.counts_interval`` against the target's ``refresh_interval``); a top-level section
that is itself invalid is reported there once and not inherited.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

if TYPE_CHECKING:
    from exporter.config import Config
    from exporter.config_checks import Problem

# Names travel in URLs and label values: a short, plain token.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_INHERITED = ("db", "metrics")
# Where a DB is: each target's own, never a default (url: the Postgres reader's, once it exists).
_LOCATION_KEYS = frozenset({"path", "url"})


def _target_name(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(
            f"invalid target name {name!r}: 1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit"
        )
    return name


TargetName = Annotated[str, AfterValidator(_target_name)]


class TargetConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    db: DatabaseConfig = Field(description="This target's DB; keys not set here come from the top-level db section.")
    metrics: MetricsConfig = Field(
        default_factory=lambda: MetricsConfig(),
        description="This target's metrics settings; keys not set here come from the top-level metrics section.",
    )


def inherit_sections(data: Any) -> Any:
    """The raw configuration with the top-level ``db`` (but its ``path``) and ``metrics`` merged under
    every target's own (which win key by key); ``data`` itself is left alone."""
    if not isinstance(data, Mapping) or not isinstance(data.get("targets"), Mapping) or not data["targets"]:
        return data
    shared: dict[str, dict[str, Any]] = {}
    for section, model in (("db", DatabaseConfig), ("metrics", MetricsConfig)):
        raw = data.get(section)
        if not isinstance(raw, Mapping):
            continue
        try:
            model.model_validate(raw)
        except ValidationError:
            continue  # reported at the section itself, once
        shared[section] = {k: v for k, v in raw.items() if not (section == "db" and k in _LOCATION_KEYS)}
    targets: dict[Any, Any] = {}
    for name, target in data["targets"].items():
        if isinstance(target, Mapping):
            target = dict(target)
            for section in _INHERITED:
                own = target.get(section, {})
                if section in shared and isinstance(own, Mapping):
                    target[section] = _merged(shared[section], own)
        targets[name] = target
    return {**data, "targets": targets}


def _merged(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        below = merged.get(key)
        merged[key] = _merged(below, value) if isinstance(below, Mapping) and isinstance(value, Mapping) else value
    return merged


def target_problems(config: Config) -> Iterator[Problem]:
    """What multi-target mode needs: a path or URL per target, no top-level one, no setting of one DB."""
    from exporter.config_checks import Problem

    if not config.targets:
        return
    for key in ("path", "url"):
        if getattr(config.db, key) is not None:
            yield Problem(("db", key), "must not be set with targets (each target has its own db.path or db.url)")
    for name, target in config.targets.items():
        if target.db.path is None and target.db.url is None:
            yield Problem(("targets", name, "db", "path"), "required (or db.url for a Postgres database)")
    # Each target's span export has its own state file and its name as id namespace (targets.serve).
    if config.traces.state_file is not None:
        yield Problem(("traces", "state_file"), "must not be set with targets (each has traces-target-NAME.sqlite)")
    if config.traces.id_namespace is not None:
        yield Problem(("traces", "id_namespace"), "must not be set with targets (each target's name is its namespace)")
    jobs = config.jobs
    for job, enabled in (
        ("cleanup", jobs.cleanup.enabled),
        ("stale_background_tasks", jobs.stale_background_tasks.enabled),
        ("stuck_alerts", jobs.stuck_alerts.enabled),
    ):
        if enabled:
            yield Problem(
                ("jobs", job, "enabled"), "jobs follow one DB and are not available with targets (one exporter per DB)"
            )


from exporter.config import DatabaseConfig, MetricsConfig  # noqa: E402

TargetConfig.model_rebuild()
