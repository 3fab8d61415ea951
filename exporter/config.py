"""Typed configuration: YAML file, then environment overrides, then command-line flags.

Every error names where the bad value came from: ``file:line: key.path: message`` for the file,
``environment STATE_EXPORTER_X__Y: key.path: message`` for the environment and
``command line: key.path: message`` for flags.  :func:`load_config` reports all errors at once.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from exporter import _yamlpos
from exporter.config_types import (  # re-exported: part of this module's API
    BcryptHash as BcryptHash,
)
from exporter.config_types import (
    Count as Count,
)
from exporter.config_types import (
    Duration as Duration,
)
from exporter.config_types import (
    PositiveDuration as PositiveDuration,
)
from exporter.config_types import (
    ReadableFile as ReadableFile,
)
from exporter.config_types import (
    describe_value as describe_value,
)
from exporter.config_types import (
    format_duration as format_duration,
)
from exporter.config_types import (
    parse_duration as parse_duration,
)
from exporter.engines import AUTO, ENGINE_NAMES
from exporter.listen_address import DEFAULT_PORT, parse_listen_address
from exporter.redact import redact_url
from exporter.timeparse import resolve_timezone

if TYPE_CHECKING:
    from exporter.config_checks import Check

DEFAULT_LISTEN = f"0.0.0.0:{DEFAULT_PORT}"
ENV_PREFIX = "STATE_EXPORTER_"
# The prefix before the daemon served more than Flujo: a variable left under it would be ignored
# silently, so it is an error that names the new spelling.
RETIRED_ENV_PREFIX = "FLUJO_EXPORTER_"


class ConfigError(Exception):
    """One or more configuration errors; ``str()`` gives one error per line."""

    def __init__(self, errors: str | Iterable[str]) -> None:
        self.errors = [errors] if isinstance(errors, str) else list(errors)
        super().__init__("\n".join(self.errors))

    def __str__(self) -> str:
        return "\n".join(self.errors)


class _Section(BaseModel):
    # hide_input_in_errors: a ValidationError printed anywhere must not show a secret.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


def engine_choices() -> str:
    """The values of ``db.engine`` as an error message lists them: ``'auto' or 'flujo'``."""
    quoted = [repr(name) for name in (AUTO, *ENGINE_NAMES)]
    return f"{', '.join(quoted[:-1])} or {quoted[-1]}"


class DatabaseConfig(_Section):
    path: Path | None = None  # None: must come from --db (or db.url)
    # Flujo's Postgres state backend instead of a file: postgresql://user@host:port/dbname.  The password
    # comes from password_file or libpq's PGPASSFILE/PGPASSWORD; one written in the URL is accepted but
    # never logged (see exporter.reader.postgres).
    url: str | None = None
    password_file: ReadableFile | None = None
    # "auto": the first engine of ENGINE_NAMES that recognises the file (again after the file or its schema changes).
    engine: str = AUTO
    writer_timezone: str = "local"  # zone of the naive local timestamps the engine writes
    busy_timeout: Duration = timedelta(seconds=1)
    query_timeout: PositiveDuration = timedelta(seconds=10)

    @field_validator("url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value is not None and not is_postgres_url(value):
            raise ValueError(f"must be a postgresql:// URL, got {redact_url(value)!r}")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> DatabaseConfig:
        if self.path is not None and self.url is not None:
            raise ValueError(
                "set db.path (a SQLite file) or db.url (a Postgres database), not both"
                " (--db sets the one its value names: remove the other from the config)"
            )
        if self.password_file is not None and self.url is None:
            raise ValueError("db.password_file is for db.url (a Postgres database)")
        return self

    @field_validator("writer_timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must be 'local' or an IANA time zone name such as Europe/Berlin")
        resolve_timezone(value)
        return value

    @field_validator("engine", mode="before")
    @classmethod
    def _engine(cls, value: Any) -> Any:
        # A plain string checked here rather than a Literal: the names come from the engine registry.
        if value != AUTO and value not in ENGINE_NAMES:
            raise ValueError(f"must be one of {engine_choices()}, got {describe_value(value)}")
        return value


class TLSServerConfig(_Section):
    """Key names of the Prometheus exporter-toolkit web configuration."""

    cert_file: ReadableFile
    key_file: ReadableFile
    client_ca_file: ReadableFile | None = None
    client_auth_type: Literal["NoClientCert", "RequireAndVerifyClientCert"] = "NoClientCert"
    min_version: Literal["TLS12", "TLS13"] = "TLS12"

    @field_validator("client_auth_type")
    @classmethod
    def _needs_ca(cls, value: str, info: ValidationInfo) -> str:
        if value == "RequireAndVerifyClientCert" and info.data.get("client_ca_file", "") is None:
            raise ValueError("RequireAndVerifyClientCert needs client_ca_file (the CA of client certificates)")
        return value


class WebConfig(_Section):
    listen_address: str = DEFAULT_LISTEN
    # Plain-HTTP listener serving only /healthz and /readyz (kubelet probes when mTLS is required).
    probe_listen_address: str | None = None
    tls_server_config: TLSServerConfig | None = None
    basic_auth_users: dict[str, BcryptHash] = Field(default_factory=dict)
    readyz_detail: Literal["reason", "full"] = "reason"
    header_timeout: PositiveDuration = timedelta(seconds=10)
    body_timeout: PositiveDuration = timedelta(seconds=10)
    idle_timeout: PositiveDuration = timedelta(minutes=2)
    max_connections: Count = Field(default=100, ge=1, le=10000)

    @field_validator("listen_address", "probe_listen_address", mode="before")
    @classmethod
    def _listen(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            raise ValueError(f"invalid listen address {value}: expected HOST:PORT, e.g. ':{value}'")
        if isinstance(value, str):
            parse_listen_address(value)
        return value

    @field_validator("probe_listen_address")
    @classmethod
    def _probe_not_main(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and value == info.data.get("listen_address"):
            raise ValueError(f"must differ from web.listen_address ({value}): both cannot listen on one port")
        return value


class StuckConfig(_Section):
    running_after: PositiveDuration = timedelta(hours=1)
    paused_after: PositiveDuration | None = None
    per_pipeline: dict[str, PositiveDuration] = Field(default_factory=dict)


class MarianneConfig(_Section):
    # Marianne's is_zombie asks os.kill(pid, 0): meaningful only on the writer's host, in its pid
    # namespace.  Off by default: a sidecar in another namespace would call every job a zombie.
    same_host_pid_check: bool = False
    # Pointed at the conductor's registry, the daemon also reads the workspaces its jobs name: at
    # most this many (the most recently active first); the rest are counted, not read.
    max_workspaces: Count = Field(default=50, ge=1, le=1000)


class MetricsConfig(_Section):
    refresh_interval: Duration = timedelta(seconds=15)
    counts_interval: Duration = Field(default=timedelta(minutes=1), validate_default=True)
    aggregate_interval: Duration = Field(default=timedelta(minutes=5), validate_default=True)
    refresh_timeout: PositiveDuration = timedelta(seconds=30)
    max_pipelines: Count = Field(default=50, ge=1, le=1000)
    max_steps: Count = Field(default=100, ge=1, le=1000)
    max_statuses: Count = Field(default=20, ge=1, le=1000)
    run_duration_window: PositiveDuration = timedelta(hours=24)
    stuck: StuckConfig = Field(default_factory=StuckConfig)
    flujo_compat: bool = False
    marianne: MarianneConfig = Field(default_factory=MarianneConfig)

    @field_validator("refresh_interval")
    @classmethod
    def _min_refresh(cls, value: timedelta) -> timedelta:
        if value < timedelta(seconds=1):
            raise ValueError(f"must be at least 1s, got {format_duration(value)}")
        return value

    @field_validator("counts_interval", "aggregate_interval")
    @classmethod
    def _slower_than_refresh(cls, value: timedelta, info: ValidationInfo) -> timedelta:
        refresh = info.data.get("refresh_interval")
        if refresh is not None and value < refresh:
            raise ValueError(
                f"must be at least metrics.refresh_interval ({format_duration(refresh)}), got {format_duration(value)}"
            )
        return value


class LoggingConfig(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["plain", "json"] = "plain"

    @field_validator("level", "format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class Config(_Section):
    db: DatabaseConfig = Field(default_factory=DatabaseConfig)
    web: WebConfig = Field(default_factory=WebConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    traces: TracesConfig = Field(default_factory=lambda: TracesConfig())
    jobs: JobsConfig = Field(default_factory=lambda: JobsConfig())
    # Multi-target mode (exporter.targets): several DBs, each at /probe?target=NAME; empty: one DB at /metrics.
    targets: dict[TargetName, TargetConfig] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _targets_inherit(cls, data: Any) -> Any:
        return inherit_sections(data)


def require_db_path(config: Config) -> Path:
    if config.db.path is None:
        raise ConfigError("db.path: required (set it in the config file, STATE_EXPORTER_DB__PATH or --db)")
    return config.db.path


def is_postgres_url(value: str) -> bool:
    return value.startswith(("postgresql://", "postgres://"))


# Loading ------------------------------------------------------------------------------------------------

_ENV, _CLI = 1, 2  # source ranks after _yamlpos.FILE
_Errors = list[tuple[tuple[int, int], str]]  # (sort key: source rank, line), message


def load_config(
    path: Path | None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    checks: Sequence[Check] = (),
) -> Config:
    """Defaults < YAML file ``path`` < ``STATE_EXPORTER_*`` variables of ``env`` (``None``: the process
    environment) < ``overrides`` (nested dict from flags; ``None`` leaves mean "flag not given").
    Mappings are merged key by key.  A valid configuration then goes through
    :func:`~exporter.config_checks.environment_problems` (with the ``OTEL_*`` variables of ``env``) and
    ``checks``.  Raises :class:`ConfigError` listing every problem found."""
    env = os.environ if env is None else env
    errors: _Errors = []
    doc, fatal = _read_file(path, errors) if path is not None else (_yamlpos.YamlDocument(None), False)
    sources = _yamlpos.Sources(path, doc)
    for name in sorted(env):
        if name.upper().startswith(RETIRED_ENV_PREFIX):
            renamed = ENV_PREFIX + name[len(RETIRED_ENV_PREFIX) :]
            errors.append(((_ENV, 0), f"environment {name}: the prefix is now {ENV_PREFIX} (rename it to {renamed})"))
        if name.upper().startswith(ENV_PREFIX):
            parts = name[len(ENV_PREFIX) :].split("__")
            keys, problem = _yamlpos.resolve_keys(Config, parts, fold_case=True)
            if problem:
                errors.append(((_ENV, 0), f"environment {name}: {'.'.join(keys)}: {problem}"))
            else:
                sources.merge(keys, _env_value(env[name]), _ENV, f"environment {name}")
    sources.merge((), overrides or {}, _CLI, "command line", skip_none=True)
    config = None
    if not fatal:  # an unusable file would only add misleading errors
        try:
            config = Config.model_validate(sources.data)
        except ValidationError as exc:
            for error in exc.errors():
                loc, message = _explain(error)
                where, sort_key = sources.where(loc)
                errors.append((sort_key, f"{where}: {'.'.join(loc)}: {message}"))
    if config is not None:
        errors.extend(_check(config, env, sources, checks))
    if errors or config is None:
        # File errors by line, then the environment's and the flags' by variable and key.
        errors.sort(key=lambda item: (item[0], item[1] if item[0][0] != _yamlpos.FILE else ""))
        raise ConfigError(text for _, text in errors)
    return config


def _check(config: Config, env: Mapping[str, str], sources: _yamlpos.Sources, checks: Sequence[Check]) -> _Errors:
    from exporter.config_checks import environment_problems

    errors: _Errors = []
    for problem in [*environment_problems(config, env), *(p for check in checks for p in check(config))]:
        key = ".".join(problem.loc)
        if problem.source is not None:
            errors.append(((_ENV, 0), f"{problem.source}: {key}: {problem.message}"))
        else:
            where, sort_key = sources.where(problem.loc)
            errors.append((sort_key, f"{where}: {key}: {problem.message}"))
    return errors


def _read_file(path: Path, errors: _Errors) -> tuple[_yamlpos.YamlDocument, bool]:
    """The parsed file and whether it is unusable."""
    try:
        doc = _yamlpos.parse(path.read_text(encoding="utf-8"))
    except OSError as exc:
        errors.append(((0, 0), f"{path}: cannot read: {exc.strerror or exc}"))
        return _yamlpos.YamlDocument(None), True
    except UnicodeDecodeError as exc:
        errors.append(((0, 0), f"{path}: cannot read: not UTF-8 text ({exc})"))
        return _yamlpos.YamlDocument(None), True
    except _yamlpos.YamlSyntaxError as exc:
        where = f"{path}:{exc.line}" if exc.line else str(path)
        errors.append(((0, exc.line or 0), f"{where}: YAML syntax error: {exc.message}"))
        return _yamlpos.YamlDocument(None), True
    for key, line, first in doc.duplicates:
        message = f"duplicate key (first set on line {first})"
        errors.append(((0, line), f"{path}:{line}: {'.'.join(key)}: {message}"))
    if doc.data is not None and not isinstance(doc.data, dict):
        line = doc.lines.get((), 1)
        sections = ", ".join(Config.model_fields)
        message = f"top level must be a mapping of sections ({sections}), got {describe_value(doc.data)}"
        errors.append(((0, line), f"{path}:{line}: {message}"))
        return doc, True
    return doc, False


def _env_value(raw: str) -> Any:
    """A YAML scalar or flow collection; text that is not valid YAML (``[::1]:80``) stays text."""
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


_EXPECTED = {  # pydantic error type -> what the value must be
    "model_type": "a mapping (a section)",
    "dict_type": "a mapping",
    "int_parsing": "an integer",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "string_type": "a string",
    "path_type": "a path (a string)",
}


# Values below these keys are credentials: an error names the key, never the value.
_SECRET_KEYS = frozenset({"headers", "password", "bearer_token", "basic_auth_users", "basic_auth"})


def _explain(error: ErrorDetails) -> tuple[tuple[str, ...], str]:
    """Dotted location and message of a pydantic error, in the vocabulary of the YAML file."""
    loc = [str(part) for part in error["loc"]]
    kind, ctx = error["type"], error.get("ctx") or {}
    got = "a value not shown (a secret)" if _SECRET_KEYS.intersection(loc) else describe_value(error["input"])
    if loc and loc[-1] == "[key]" and kind == "value_error":  # a key's own validator: a header name
        return tuple(loc[:-1]), str(ctx.get("error"))
    if (loc and loc[-1] == "[key]") or kind == "invalid_key":
        return tuple(part for part in loc if part != "[key]"), "key must be a string (quote it)"
    if kind == "extra_forbidden":
        return tuple(loc), _yamlpos.resolve_keys(Config, loc)[1] or "unknown key"
    if kind in _EXPECTED:
        return tuple(loc), f"must be {_EXPECTED[kind]}, got {got}"
    messages = {
        "missing": "required",
        "value_error": str(ctx.get("error")),
        "literal_error": f"must be one of {ctx.get('expected')}, got {got}",
        "greater_than_equal": f"must be at least {ctx.get('ge')}, got {got}",
        "less_than_equal": f"must be at most {ctx.get('le')}, got {got}",
    }
    return tuple(loc), messages.get(kind, error["msg"])


# The feature sections use the field types defined above, so they are imported last.
from exporter.jobs.config import JobsConfig  # noqa: E402
from exporter.targets.config import TargetConfig, TargetName, inherit_sections  # noqa: E402
from exporter.traces.config import TracesConfig  # noqa: E402

Config.model_rebuild()
