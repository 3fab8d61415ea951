"""The ``traces:`` section of the YAML config, and the standard ``OTEL_*`` variables.

Precedence, per key: a value set in the ``traces:`` section (or through ``STATE_EXPORTER_TRACES__*``)
> the standard OpenTelemetry variable > the default below.  :func:`apply_otel_env` does the middle step.

Standard variables honoured (``OTEL_EXPORTER_OTLP_TRACES_*`` wins over ``OTEL_EXPORTER_OTLP_*``):

====================================================  ==================================================
``OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL``              ``protocol`` (``grpc`` or ``http/protobuf``)
``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT``              ``endpoint``; for HTTP the generic variable is a
                                                      base URL and ``/v1/traces`` is appended, the
                                                      ``TRACES_`` one is used as is (OTLP spec)
``OTEL_EXPORTER_OTLP_[TRACES_]HEADERS``               ``headers`` (``k=v,k2=v2``, values URL-decoded)
``OTEL_EXPORTER_OTLP_[TRACES_]COMPRESSION``           ``compression`` (``gzip`` or ``none``)
``OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT``               ``timeout`` (milliseconds, as in the spec)
``OTEL_EXPORTER_OTLP_[TRACES_]INSECURE``              ``tls.insecure``
``OTEL_EXPORTER_OTLP_[TRACES_]CERTIFICATE``           ``tls.ca_file``
``OTEL_EXPORTER_OTLP_[TRACES_]CLIENT_CERTIFICATE``    ``tls.cert_file``
``OTEL_EXPORTER_OTLP_[TRACES_]CLIENT_KEY``            ``tls.key_file``
``OTEL_SERVICE_NAME``                                 ``service_name``
``OTEL_RESOURCE_ATTRIBUTES``                          merged under ``resource_attributes`` (the YAML
                                                      wins per key); its ``service.name`` is used when
                                                      neither ``service_name`` nor OTEL_SERVICE_NAME is set
``OTEL_[SPAN_]ATTRIBUTE_COUNT_LIMIT``                 ``limits.attribute_count``
``OTEL_[SPAN_]ATTRIBUTE_VALUE_LENGTH_LIMIT``          ``limits.attribute_value_length``
====================================================  ==================================================
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from exporter.config_types import Count, Duration, HeaderName, HeaderValue, PositiveDuration
from exporter.redact import redact_url
from exporter.traces.ids import check_namespace

DEFAULT_GRPC_ENDPOINT = "http://localhost:4317"
DEFAULT_HTTP_ENDPOINT = "http://localhost:4318/v1/traces"
HTTP_TRACES_PATH = "/v1/traces"
DEFAULT_STATE_FILE_NAME = "traces-state.sqlite"

Protocol = Literal["grpc", "http/protobuf"]


class _Section(BaseModel):
    # hide_input_in_errors: a ValidationError printed anywhere must not show a header value or a URL.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class TLSConfig(_Section):
    insecure: bool | None = Field(
        default=None,
        description=(
            "gRPC only: send without TLS. Unset: decided by the endpoint's scheme (http:// plain, https:// TLS);"
            " an endpoint without scheme then uses TLS. OTEL_EXPORTER_OTLP_INSECURE."
        ),
    )
    ca_file: Path | None = Field(
        default=None,
        description="PEM CA bundle that signs the collector's certificate (default: the system's trust store).",
    )
    cert_file: Path | None = Field(default=None, description="PEM client certificate for mutual TLS (with key_file).")
    key_file: Path | None = Field(default=None, description="PEM private key of cert_file.")

    @model_validator(mode="after")
    def _pair(self) -> TLSConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("tls.cert_file and tls.key_file go together (mutual TLS needs both)")
        return self


class LimitsConfig(_Section):
    attribute_count: Count = Field(
        default=128,
        ge=0,
        le=100_000,
        description="At most this many stored attributes per span (0: no limit); the rest are counted in"
        " dropped_attributes_count. The exporter's own attributes come on top.",
    )
    attribute_value_length: Count = Field(
        default=4096,
        ge=0,
        le=10_000_000,
        description="Strings (and each string of an array) are cut to this many characters (0: no limit).",
    )


class RetryConfig(_Section):
    initial_backoff: PositiveDuration = Field(
        default=timedelta(milliseconds=500),
        description="Backoff ceiling of the first retry; doubles per failed attempt (full jitter: the wait is"
        " uniform between 0 and the ceiling).",
    )
    max_backoff: PositiveDuration = Field(
        default=timedelta(seconds=30),
        description="Cap of the backoff ceiling. Retries never stop while the collector fails (the data stays"
        " in the Flujo DB and the watermark does not move).",
    )


class TracesConfig(_Section):
    """Export of the stored Flujo spans over OTLP (one trace per run)."""

    enabled: bool = Field(default=False, description="Tail the DB's spans and export them over OTLP.")
    protocol: Protocol = Field(default="grpc", description="OTLP transport: grpc or http/protobuf.")
    endpoint: str | None = Field(
        default=None,
        description=(
            f"Collector address. gRPC: host:port or a URL (default {DEFAULT_GRPC_ENDPOINT}). HTTP: the full URL"
            f" of the traces endpoint (default {DEFAULT_HTTP_ENDPOINT}); a URL without a path gets"
            f" {HTTP_TRACES_PATH} appended."
        ),
    )
    headers: dict[HeaderName, HeaderValue] = Field(
        default_factory=dict,
        description="Extra request headers / gRPC metadata, e.g. authorization (credentials go here, never in"
        " the endpoint URL). Merged with OTEL_EXPORTER_OTLP_HEADERS (these win per name). Values are never logged.",
    )
    compression: Literal["none", "gzip"] = Field(default="none", description="Request compression.")
    timeout: PositiveDuration = Field(
        default=timedelta(seconds=10), description="Deadline of one export request; a timeout is retried."
    )
    tls: TLSConfig = Field(default_factory=TLSConfig, description="TLS towards the collector.")
    service_name: str | None = Field(
        default=None,
        min_length=1,
        description="Resource attribute service.name of every exported span (default: the engine's name, e.g."
        " 'flujo', the name flujo's own telemetry uses, or 'pynenc').",
    )
    resource_attributes: dict[str, str | bool | int | float] = Field(
        default_factory=dict,
        description="Extra resource attributes (e.g. deployment.environment). Merged with"
        " OTEL_RESOURCE_ATTRIBUTES (these win per key).",
    )
    id_namespace: str | None = Field(
        default=None,
        description="Mixed into every derived trace and span id and sent as resource attribute"
        " state_exporter.source, so that two DBs holding the same run id give different traces (e.g. the"
        " DB's or the site's name). Unset: ids unchanged. Changing it changes every id from then on.",
    )
    state_file: Path | None = Field(
        default=None,
        description=f"The exporter's own SQLite state (watermark, pending runs, dead letters). Never the Flujo"
        f" DB. Unset: the daemon's state directory/{DEFAULT_STATE_FILE_NAME}.",
    )
    start_at: Literal["beginning", "end"] = Field(
        default="beginning",
        description="With an empty state file: 'beginning' exports every run already in the DB, 'end' only"
        " runs that finish from now on (use `state-exporter replay` for history).",
    )
    poll_interval: PositiveDuration = Field(
        default=timedelta(seconds=5), description="How often the DB is checked for new and finished runs."
    )
    batch_size: Count = Field(default=512, ge=1, le=100_000, description="Spans per export request (at most).")
    max_batch_bytes: Count = Field(
        default=3_000_000,
        ge=1024,
        le=1 << 30,
        description="Bytes per export request (at most, except a single larger span). Keep it under the"
        " collector's limit (4 MiB for gRPC by default).",
    )
    grace_period: Duration = Field(
        default=timedelta(hours=1),
        description="A run still in progress (running, paused) this long after its start has its finished spans"
        " exported; spans without an end time wait for the run to finish.",
    )
    settle_period: Duration = Field(
        default=timedelta(seconds=5),
        description="A finished run is exported once the exporter has seen it finished, with unchanged stored"
        " spans, for this long (flujo saves the spans just after the final status; measured on the exporter's"
        " clock, so a writer's clock offset does not matter). 0 exports at first sight, at the risk of catching a"
        " run between its final status and its span save.",
    )
    abandon_after: PositiveDuration = Field(
        default=timedelta(days=7),
        description="A run still unfinished this long after its start is exported one last time (spans without"
        " an end closed at their last child's end and flagged) and no longer followed.",
    )
    limits: LimitsConfig = Field(default_factory=LimitsConfig, description="Attribute limits (OTel semantics).")
    retry: RetryConfig = Field(default_factory=RetryConfig, description="Backoff while the collector fails.")
    max_dead_letters: Count = Field(
        default=10_000,
        ge=0,
        description="Dead-lettered spans kept in the state file for inspection (oldest removed first).",
    )

    @field_validator("id_namespace")
    @classmethod
    def _namespace(cls, value: str | None) -> str | None:
        return None if value is None else check_namespace(value)

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if not value:
            raise ValueError("must not be empty (leave it unset for the default)")
        split_endpoint(value, info.data.get("protocol", "grpc"))
        return value


# --- OTEL_* variables --------------------------------------------------------------------------------


@dataclass(frozen=True)
class EnvProblem:
    variable: str
    key: str  # dotted, below traces
    message: str  # never the value: header values are secrets

    def __str__(self) -> str:
        return f"{self.variable}: traces.{self.key}: {self.message}"


class OtelEnvError(ValueError):
    """One or more invalid ``OTEL_*`` variables, one per line."""

    def __init__(self, problems: list[EnvProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(map(str, problems)))


_MAX_TIMEOUT_MS = 86_400_000.0  # a day: more is a typo (seconds given as milliseconds the other way round)


class _OtelVariables:
    """The variables of one :func:`apply_otel_env` call, the problems found and who set which key."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[EnvProblem] = []
        self.origin: dict[str, str] = {}  # dotted key -> variable

    def get(self, *names: str) -> tuple[str, str] | None:
        """(variable, stripped value) of the first of ``names`` set to something not blank."""
        for name in names:
            value = self.env.get(name)
            if value is not None and value.strip():
                return name, value.strip()
        return None

    def otlp(self, name: str) -> tuple[str, str] | None:
        """``OTEL_EXPORTER_OTLP_TRACES_<name>`` else ``OTEL_EXPORTER_OTLP_<name>``."""
        return self.get(f"OTEL_EXPORTER_OTLP_TRACES_{name}", f"OTEL_EXPORTER_OTLP_{name}")

    def problem(self, variable: str, key: str, message: str) -> None:
        self.problems.append(EnvProblem(variable, key, message))

    def key_values(self, variable: str, text: str, key: str) -> dict[str, str]:
        try:
            return parse_key_values(text, variable)
        except ValueError as exc:
            self.problem(variable, key, str(exc).removeprefix(f"{variable}: "))
            return {}


def parse_key_values(text: str, variable: str) -> dict[str, str]:
    """``k=v,k2=v2`` with URL-encoded keys and values (W3C baggage style, as the OTel spec says).
    Errors name the entry by position: entries may hold secrets."""
    result: dict[str, str] = {}
    for index, item in enumerate(text.split(","), 1):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{variable}: entry {index} is not key=value (values URL-encoded, entries separated by ,)")
        result[unquote(key.strip())] = unquote(value.strip())
    return result


def _bool(text: str) -> bool | None:
    lowered = text.strip().lower()
    return True if lowered in ("true", "1", "yes") else False if lowered in ("false", "0", "no") else None


def apply_otel_env(config: TracesConfig, env: Mapping[str, str] | None = None) -> TracesConfig:
    """``config`` with the standard OpenTelemetry variables applied to every key the config did not set.

    Raises :class:`OtelEnvError` (a :class:`ValueError`) naming every invalid variable and its key.
    """
    return apply_otel_env_traced(config, env)[0]


def apply_otel_env_traced(
    config: TracesConfig, env: Mapping[str, str] | None = None
) -> tuple[TracesConfig, dict[str, str]]:
    """:func:`apply_otel_env`, and which variable set each key it changed (dotted key -> variable)."""
    found = _OtelVariables(os.environ if env is None else env)
    explicit = config.model_fields_set
    update: dict[str, Any] = {}

    if (item := found.otlp("PROTOCOL")) is not None and "protocol" not in explicit:
        variable, protocol = item
        if protocol in ("grpc", "http/protobuf"):
            update["protocol"] = protocol
            found.origin["protocol"] = variable
        else:
            found.problem(variable, "protocol", f"{protocol!r} is not supported (use grpc or http/protobuf)")
    effective_protocol = update.get("protocol", config.protocol)

    if "endpoint" not in explicit:
        if (item := found.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")) is not None:
            update["endpoint"] = item[1]
        elif (item := found.get("OTEL_EXPORTER_OTLP_ENDPOINT")) is not None:
            generic = item[1]
            if effective_protocol == "http/protobuf":
                generic = generic.rstrip("/") + HTTP_TRACES_PATH
            update["endpoint"] = generic
        if item is not None:
            found.origin["endpoint"] = item[0]

    if (item := found.otlp("HEADERS")) is not None:
        update["headers"] = {**found.key_values(item[0], item[1], "headers"), **config.headers}
        found.origin["headers"] = item[0]

    if (item := found.otlp("COMPRESSION")) is not None and "compression" not in explicit:
        variable, compression = item
        if compression.lower() in ("gzip", "none"):
            update["compression"] = compression.lower()
        else:
            found.problem(variable, "compression", f"{compression!r} is not supported (gzip or none)")

    if (item := found.otlp("TIMEOUT")) is not None and "timeout" not in explicit:
        variable, timeout = item
        try:
            millis = float(timeout)
        except ValueError:
            millis = math.nan
        if 0 < millis <= _MAX_TIMEOUT_MS:
            update["timeout"] = timedelta(milliseconds=millis)
        else:
            found.problem(variable, "timeout", f"expected milliseconds between 0 and 86400000, got {timeout!r}")

    tls_update: dict[str, Any] = {}
    tls_explicit = config.tls.model_fields_set if "tls" in explicit else set()
    for name, field in (
        ("INSECURE", "insecure"),
        ("CERTIFICATE", "ca_file"),
        ("CLIENT_CERTIFICATE", "cert_file"),
        ("CLIENT_KEY", "key_file"),
    ):
        item = found.otlp(name)
        if item is None or field in tls_explicit:
            continue
        variable, value = item
        found.origin[f"tls.{field}"] = variable
        if field != "insecure":
            tls_update[field] = Path(value)
        elif (flag := _bool(value)) is not None:
            tls_update[field] = flag
        else:
            found.problem(variable, "tls.insecure", f"expected true or false, got {value!r}")
    if tls_update:
        update["tls"] = {**config.tls.model_dump(exclude_unset=True), **tls_update}

    resource = found.get("OTEL_RESOURCE_ATTRIBUTES")
    from_env = found.key_values(resource[0], resource[1], "resource_attributes") if resource else {}
    env_service = from_env.pop("service.name", None)
    if from_env and resource is not None:
        update["resource_attributes"] = {**from_env, **config.resource_attributes}
        found.origin["resource_attributes"] = resource[0]
    if "service_name" not in explicit:
        service = found.get("OTEL_SERVICE_NAME")
        if service is not None or env_service:
            update["service_name"] = service[1] if service is not None else env_service
            found.origin["service_name"] = service[0] if service is not None else "OTEL_RESOURCE_ATTRIBUTES"

    limits_update: dict[str, Any] = {}
    limits_explicit = config.limits.model_fields_set if "limits" in explicit else set()
    for field, names in (
        ("attribute_count", ("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "OTEL_ATTRIBUTE_COUNT_LIMIT")),
        ("attribute_value_length", ("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT")),
    ):
        item = found.get(*names)
        if field in limits_explicit or item is None:
            continue
        variable, text = item
        found.origin[f"limits.{field}"] = variable
        if text.isdigit():
            limits_update[field] = int(text)
        else:
            found.problem(variable, f"limits.{field}", f"expected a non-negative integer, got {text!r}")
    if limits_update:
        update["limits"] = {**config.limits.model_dump(exclude_unset=True), **limits_update}

    if not found.problems and not update:
        return config, found.origin
    merged = config.model_dump(exclude_unset=True)
    merged.update(update)
    try:
        result = TracesConfig.model_validate(merged)
    except ValidationError as exc:
        for error in exc.errors():
            loc = [str(part) for part in error["loc"] if part != "[key]"]
            variable = found.origin.get(".".join(loc[:2])) or found.origin.get(loc[0], "OTEL_*")
            message = str((error.get("ctx") or {}).get("error") or error["msg"])  # never the input: secrets
            found.problem(variable, ".".join(loc), message)
        result = config
    if found.problems:
        raise OtelEnvError(found.problems)
    # Keep "set explicitly" as it was: values that came from the environment are not YAML-explicit.
    object.__setattr__(result, "__pydantic_fields_set__", set(explicit))
    return result, found.origin


# --- Resolved transport settings ---------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    protocol: Protocol
    target: str  # gRPC: host:port; HTTP: the full URL
    secure: bool
    host: str
    port: int
    path: str  # HTTP request path (with query), "" for gRPC


def resolve_endpoint(config: TracesConfig) -> Endpoint:
    """Where and how to connect, from ``endpoint``, ``protocol`` and ``tls.insecure``."""
    if config.protocol == "grpc":
        parts = split_endpoint(config.endpoint or DEFAULT_GRPC_ENDPOINT, "grpc")
        secure = parts.scheme == "https" if parts.scheme else not bool(config.tls.insecure)
        port = parts.port or 4317
        return Endpoint("grpc", f"{parts.netloc_host}:{port}", secure, parts.host, port, "")
    raw = config.endpoint or DEFAULT_HTTP_ENDPOINT
    if "://" not in raw:
        raw = ("http://" if config.tls.insecure else "https://") + raw
    parts = split_endpoint(raw, "http/protobuf")
    path = parts.path if parts.path not in ("", "/") else HTTP_TRACES_PATH
    if parts.query:
        path += "?" + parts.query
    secure = parts.scheme == "https"
    port = parts.port or (443 if secure else 80)
    netloc = parts.netloc_host + (f":{parts.port}" if parts.port else "")
    return Endpoint("http/protobuf", f"{parts.scheme}://{netloc}{path}", secure, parts.host, port, path)


@dataclass(frozen=True)
class EndpointParts:
    scheme: str  # "" when written without one (gRPC's host:port)
    host: str  # without brackets
    netloc_host: str  # as written in a URL: IPv6 in brackets
    port: int | None
    path: str
    query: str


_HOSTNAME = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?")
_CREDENTIALS = (
    "credentials in the URL are not allowed (the URL is shown in logs and metrics): put them in a header,"
    " e.g. traces.headers: {authorization: Basic ...} or OTEL_EXPORTER_OTLP_HEADERS (from a secret file or variable)"
)


def split_endpoint(raw: str, protocol: Protocol) -> EndpointParts:
    """The parts of an endpoint, or a :class:`ValueError` that shows the URL redacted."""
    shown = f"endpoint {redact_url(raw)!r}"
    if any(char.isspace() or not char.isprintable() for char in raw):
        raise ValueError(f"{shown}: must not contain spaces or control characters")
    if "@" in raw.partition("?")[0]:
        raise ValueError(f"{shown}: {_CREDENTIALS}")
    has_scheme = "://" in raw
    try:
        parts = urlsplit(raw if has_scheme else "//" + raw)
    except ValueError:
        raise ValueError(f"{shown}: invalid host (IPv6 addresses go in brackets: [::1]:4317)") from None
    try:
        port = parts.port
    except ValueError:
        port = 0
    if has_scheme and parts.scheme not in ("http", "https"):
        raise ValueError(f"unsupported scheme in {shown} (use http:// or https://)")
    host = parts.hostname or ""
    netloc_host = f"[{host}]" if ":" in host else host
    if port == 0 or parts.netloc.endswith(":"):
        raise ValueError(f"{shown}: invalid port (expected host:port with a port 1-65535)")
    if not host or not (_is_ipv6(host) if ":" in host else _HOSTNAME.fullmatch(host)):
        raise ValueError(f"{shown}: invalid or missing host")
    if parts.fragment or raw.endswith("#"):
        raise ValueError(f"{shown}: must not have a #fragment")
    if protocol == "grpc" and (parts.path not in ("", "/") or parts.query):
        raise ValueError(
            f"{shown}: a gRPC endpoint is host:port or http(s)://host:port, without path or query"
            " (for OTLP over HTTP set protocol: http/protobuf)"
        )
    return EndpointParts(parts.scheme if has_scheme else "", host, netloc_host, port, parts.path, parts.query)


def _is_ipv6(host: str) -> bool:
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        return False
    return True


def default_state_file(state_dir: Path) -> Path:
    return state_dir / DEFAULT_STATE_FILE_NAME
