"""The ``jobs:`` section of the YAML config: every key is documented in its ``Field(description=...)``.

Every job is disabled by default.  ``cleanup`` and ``stale_background_tasks`` write to the user's DB
(see :func:`writes_enabled`); ``stuck_alerts`` only reads it.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Annotated, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from exporter.config_types import Duration, HeaderName, HeaderValue, PositiveDuration
from exporter.redact import redact_url

STALE_TASK_ERROR = "Task timeout: process likely crashed"  # flujo 0.6.11's text

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


def _finite_days(value: float) -> float:
    if not math.isfinite(value) or value > 36500:
        raise ValueError(f"must be a finite number of days up to 36500, got {value!r}")
    return value


HttpUrl = Annotated[str, AfterValidator(_http_url)]
Days = Annotated[float, Field(gt=0), AfterValidator(_finite_days)]


class _Model(BaseModel):
    # hide_input_in_errors: a ValidationError printed anywhere must not show a password or a URL.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


_INTERVAL_DOC = "Time between the starts of two runs, e.g. 30s, 5m, 1h."
_JITTER_DOC = (
    "A random delay of 0..jitter added to every start (also to the first one after startup), "
    "so several exporters do not hit the DB at the same moment."
)
_TIMEOUT_DOC = (
    "A run still going after this long is cancelled and counted as an error; the next run starts at the next interval."
)


def _interval(default: timedelta) -> timedelta:
    return Field(default=default, description=_INTERVAL_DOC)


def _jitter(default: timedelta) -> timedelta:
    return Field(default=default, description=_JITTER_DOC)


def _timeout(default: timedelta) -> timedelta:
    return Field(default=default, description=_TIMEOUT_DOC)


class JobSettings(_Model):
    enabled: bool = Field(default=False, description="Run this job inside the daemon.")
    interval: PositiveDuration = Field(description=_INTERVAL_DOC)
    jitter: Duration = Field(description=_JITTER_DOC)
    timeout: PositiveDuration = Field(description=_TIMEOUT_DOC)


class CleanupConfig(JobSettings):
    """Deletes old workflows like flujo's ``cleanup_old_workflows(days_old)``, comparing real instants."""

    interval: PositiveDuration = _interval(timedelta(hours=1))
    jitter: Duration = _jitter(timedelta(minutes=5))
    timeout: PositiveDuration = _timeout(timedelta(minutes=30))
    days_old: Days = Field(
        default=30.0,
        description="Delete workflow_state rows whose created_at is more than this many days (a float) before now. "
        "Like flujo, created_at is the time of the last save for runs that were never resumed.",
    )
    delete_runs: bool = Field(
        default=False,
        description="Also delete runs and their steps, spans (and on 0.6 traces and evaluations), like flujo's "
        "delete_run, once the run has no workflow_state row left and started more than runs_retention_days ago.",
    )
    runs_retention_days: Days | None = Field(
        default=None,
        description="Age in days (float) after which a run without workflow_state row is deleted when "
        "delete_runs is on; default: days_old.",
    )
    batch_size: int = Field(
        default=500,
        ge=1,
        le=5000,
        description="At most this many workflows (or runs, with their child rows) per delete transaction.",
    )
    max_transaction: PositiveDuration = Field(
        default=timedelta(milliseconds=20),
        description="Target for how long one delete transaction may hold the write lock: a slower transaction "
        "halves the next batch, fast ones grow it back up to batch_size.",
    )
    pause_between_batches: Duration = Field(
        default=timedelta(milliseconds=20),
        description="Pause after every transaction, so that the application writing the DB gets the write lock.",
    )
    dry_run: bool = Field(
        default=False,
        description="Delete nothing: log the run ids that would be deleted (one line per batch) and export "
        "state_exporter_cleanup_would_delete_rows. The DB is then only opened read-only.",
    )


class StaleTasksConfig(JobSettings):
    """Like flujo 0.6.11's ``cleanup_stale_background_tasks(stale_hours)``, comparing real instants."""

    interval: PositiveDuration = _interval(timedelta(minutes=15))
    jitter: Duration = _jitter(timedelta(minutes=1))
    timeout: PositiveDuration = _timeout(timedelta(minutes=5))
    stale_hours: float = Field(
        default=24.0,
        gt=0,
        le=876000,
        description="Running background tasks whose updated_at is more than this many hours (a float) before now "
        "are set to status 'failed'.",
    )
    error_message: str = Field(
        default=STALE_TASK_ERROR,
        min_length=1,
        max_length=1000,
        description="Text written to background_error of a timed-out task (flujo's own text by default).",
    )


class BasicAuth(_Model):
    username: str = Field(min_length=1, description="User name for HTTP basic authentication.")
    password: str = Field(description="Password for HTTP basic authentication.")


class AlertmanagerConfig(_Model):
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


class WebhookConfig(_Model):
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

    interval: PositiveDuration = _interval(timedelta(minutes=1))
    jitter: Duration = _jitter(timedelta(seconds=5))
    timeout: PositiveDuration = _timeout(timedelta(minutes=1))
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


class JobsConfig(_Model):
    """The ``jobs:`` section."""

    write_busy_timeout: Duration = Field(
        default=timedelta(seconds=1),
        description="How long a write job waits for the application's write lock before the run fails as "
        "'database is locked' (retried at the next interval). Keep it short.",
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
