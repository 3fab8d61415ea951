"""The ``jobs:`` section of the YAML config: every key is documented in its ``Field(description=...)``.

Every job is disabled by default.  ``cleanup`` and ``stale_background_tasks`` are Flujo's write jobs
(their settings live with them in :mod:`exporter.engines.flujo.jobs.config`) and write to the user's
DB (see :func:`writes_enabled`); ``stuck_alerts`` only reads it, for any engine.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, field_validator, model_validator

from exporter.config_types import Duration, HeaderName, HeaderValue, PositiveDuration, ReadableFile
from exporter.engines.flujo.jobs.config import CleanupConfig, StaleTasksConfig
from exporter.jobs.settings import JobSettings, SettingsModel, interval_field, jitter_field, timeout_field
from exporter.redact import redact_url

_LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RESERVED_LABELS = frozenset({"alertname", "engine", "pipeline", "severity", "status", "reason", "run_id"})
# An API path where the base URL belongs (the exporter appends /api/v2/alerts itself).
_AM_API_PATH = re.compile(r"/api(/v[12](/alerts)?)?/?$")


def _http_url(value: str) -> str:
    shown = redact_url(value)  # a webhook URL often carries a token: errors show it redacted
    if any(char.isspace() or not char.isprintable() for char in value):
        raise ValueError(f"must not contain spaces or control characters, got {shown!r}")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise ValueError(f"invalid host or port (1-65535) in {shown!r}") from None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"must be an http:// or https:// URL, got {shown!r}")
    if not parts.hostname or port == 0 or parts.netloc.endswith(":"):
        raise ValueError(f"invalid host or port (1-65535) in {shown!r}")
    if parts.fragment:
        raise ValueError(f"must not have a #fragment, got {shown!r}")
    return value.rstrip("/")


def has_userinfo(url: str) -> bool:
    return "@" in urlsplit(url).netloc


HttpUrl = Annotated[str, AfterValidator(_http_url)]


class BasicAuth(SettingsModel):
    username: str = Field(min_length=1, description="User name for HTTP basic authentication.")
    password: str = Field(description="Password for HTTP basic authentication.")


class AlertmanagerConfig(SettingsModel):
    url: HttpUrl = Field(
        description="Base URL of Alertmanager, e.g. http://alertmanager:9093; alerts go to <url>/api/v2/alerts."
    )
    timeout: PositiveDuration = Field(default=timedelta(seconds=10), description="Timeout of one HTTP request.")
    basic_auth: BasicAuth | None = Field(default=None, description="Optional basic auth: username, password.")
    bearer_token: str | None = Field(
        default=None, min_length=1, description="Optional bearer token (Authorization: Bearer ...)."
    )

    @field_validator("url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if api := _AM_API_PATH.search(parts.path):
            base = redact_url(f"{parts.scheme}://{parts.netloc}{parts.path[: api.start()]}")
            raise ValueError(
                f"give the base URL of Alertmanager ({base!r}): alerts go to <url>/api/v2/alerts,"
                f" got {redact_url(value)!r}"
            )
        if parts.query:
            raise ValueError(
                f"must not have a query string (alerts go to <url>/api/v2/alerts), got {redact_url(value)!r}"
            )
        return value

    @model_validator(mode="after")
    def _one_auth(self) -> AlertmanagerConfig:
        given = [
            name for name, value in (("basic_auth", self.basic_auth), ("bearer_token", self.bearer_token)) if value
        ]
        if has_userinfo(self.url):
            given.insert(0, "credentials in url")
        if len(given) > 1:
            raise ValueError(
                f"set at most one of credentials in url, basic_auth and bearer_token (got {', '.join(given)})"
            )
        return self


class WebhookConfig(SettingsModel):
    url: HttpUrl = Field(
        description="URL that receives a POST with an Alertmanager-style JSON payload. Logged with user:password@"
        " and query values masked."
    )
    headers: dict[HeaderName, HeaderValue] = Field(
        default_factory=dict,
        description="Extra HTTP headers, e.g. Authorization for the receiving service (values are never logged).",
    )
    timeout: PositiveDuration = Field(default=timedelta(seconds=10), description="Timeout of one HTTP request.")

    @model_validator(mode="after")
    def _one_auth(self) -> WebhookConfig:
        if has_userinfo(self.url) and any(name.lower() == "authorization" for name in self.headers):
            raise ValueError(
                "set credentials either in the url (user:password@) or in an Authorization header, not both"
            )
        return self


def _moved_to_metrics_stuck(key: str) -> str:
    return (
        f"moved: set metrics.stuck.{key} instead (one stuck threshold for the stuck metrics and the "
        "stuck-run alerts, so that they cannot disagree)"
    )


class StuckAlertsConfig(JobSettings):
    """Alerts for the runs the engine's stuck rule judges stuck: the same rule and the same settings
    (``metrics.stuck``) as the stuck metrics.  This section is only about delivering them."""

    # Keys that used to be here, and the message the config loader gives for them (an old config
    # must fail loudly, not silently lose its thresholds).
    retired_keys: ClassVar[dict[str, str]] = {
        key: _moved_to_metrics_stuck(key) for key in ("running_after", "per_pipeline", "paused_after")
    }

    interval: PositiveDuration = interval_field(timedelta(minutes=1))
    jitter: Duration = jitter_field(timedelta(seconds=5))
    timeout: PositiveDuration = timeout_field(timedelta(minutes=1))
    severity: str = Field(default="warning", min_length=1, description="Value of the alerts' severity label.")
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="Extra static labels on every alert, e.g. {team: data}. Cannot override alertname, "
        "engine, pipeline, severity, status, reason or run_id.",
    )
    resend_interval: PositiveDuration = Field(
        default=timedelta(minutes=5),
        description="Firing alerts are re-sent to Alertmanager this often (with endsAt = now + 4 x "
        "max(resend_interval, interval)); a resolved alert is sent once with endsAt = now.",
    )
    generator_url: str | None = Field(
        default=None, description="Optional generatorURL of the alerts, e.g. a dashboard link."
    )
    attempts: int = Field(
        default=3, ge=1, le=10, description="HTTP attempts per receiver and run before the delivery counts as failed."
    )
    retry_backoff: Duration = Field(
        default=timedelta(seconds=1), description="Wait before the 2nd attempt; doubles for every further attempt."
    )
    alertmanager: AlertmanagerConfig | None = Field(
        default=None, description="Send alerts to this Alertmanager's v2 API (unset: metrics only)."
    )
    webhook: WebhookConfig | None = Field(
        default=None,
        description="Also POST to a generic JSON webhook: once when an alert starts firing, once when it resolves.",
    )

    @field_validator("labels")
    @classmethod
    def _label_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not _LABEL_NAME.match(name):
                raise ValueError(f"invalid label name {name!r}")
            if name in _RESERVED_LABELS:
                raise ValueError(f"label {name!r} is set by the exporter and cannot be overridden")
        return value


class JobsPostgresConfig(SettingsModel):
    """How the write jobs reach a Postgres database (``db.url``): with a role of their own, because the
    exporter's read role is SELECT-only by design."""

    url: str | None = Field(
        default=None,
        description="postgresql:// URL of the same database as db.url, for a role with the write jobs' grants "
        "(README: the write role). Required for cleanup (unless dry_run) and "
        "stale_background_tasks on db.url. Put no password in it: use password_file or PGPASSFILE.",
    )
    password_file: ReadableFile | None = Field(
        default=None, description="File holding the write role's password (read at every connect, so it can rotate)."
    )
    statement_timeout: PositiveDuration = Field(
        default=timedelta(seconds=5),
        description="Server-side limit of one statement of a write job (Postgres statement_timeout); a page "
        "of deletes is one short transaction well under it.",
    )

    @field_validator("url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("postgresql://", "postgres://")):
            raise ValueError(f"must be a postgresql:// URL, got {redact_url(value)!r}")
        return value

    @model_validator(mode="after")
    def _file_needs_url(self) -> JobsPostgresConfig:
        if self.password_file is not None and self.url is None:
            raise ValueError("jobs.postgres.password_file is for jobs.postgres.url")
        return self


class JobsConfig(SettingsModel):
    """The ``jobs:`` section."""

    write_busy_timeout: Duration = Field(
        default=timedelta(seconds=1),
        description="How long a write job waits for the application's write lock before the run fails as "
        "'database is locked' (retried at the next interval). Keep it short. On Postgres: the sessions' "
        "lock_timeout.",
    )
    postgres: JobsPostgresConfig = Field(
        default_factory=JobsPostgresConfig,
        description="The write jobs' own role on a Postgres database (db.url): url, password_file, statement_timeout.",
    )
    cleanup: CleanupConfig = Field(default_factory=CleanupConfig, description="Delete old workflows (and runs).")
    stale_background_tasks: StaleTasksConfig = Field(
        default_factory=StaleTasksConfig, description="Fail background tasks that stopped updating (0.6 layouts)."
    )
    stuck_alerts: StuckAlertsConfig = Field(
        default_factory=StuckAlertsConfig,
        description="Alert on the runs metrics.stuck judges stuck: metrics, Alertmanager, webhook.",
    )


JobName = Literal["cleanup", "stale_background_tasks", "stuck_alerts"]
JOB_NAMES: tuple[JobName, ...] = ("cleanup", "stale_background_tasks", "stuck_alerts")


def writes_enabled(config: JobsConfig) -> bool:
    """Whether an enabled job writes to the DB (a dry-run cleanup does not)."""
    cleanup = config.cleanup.enabled and not config.cleanup.dry_run
    return cleanup or config.stale_background_tasks.enabled
