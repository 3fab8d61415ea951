"""The ``traces:`` section of the YAML config, and the standard ``OTEL_*`` variables.

Precedence, per key: a value set in the ``traces:`` section (or through ``FLUJO_EXPORTER_TRACES__*``)
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

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from exporter.config_types import Count, Duration, PositiveDuration

DEFAULT_SERVICE_NAME = "flujo"
DEFAULT_GRPC_ENDPOINT = "http://localhost:4317"
DEFAULT_HTTP_ENDPOINT = "http://localhost:4318/v1/traces"
HTTP_TRACES_PATH = "/v1/traces"
DEFAULT_STATE_FILE_NAME = "traces-state.sqlite"

Protocol = Literal["grpc", "http/protobuf"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Extra request headers / gRPC metadata, e.g. authorization. Merged with"
        " OTEL_EXPORTER_OTLP_HEADERS (these win per name).",
    )
    compression: Literal["none", "gzip"] = Field(default="none", description="Request compression.")
    timeout: PositiveDuration = Field(
        default=timedelta(seconds=10), description="Deadline of one export request; a timeout is retried."
    )
    tls: TLSConfig = Field(default_factory=TLSConfig, description="TLS towards the collector.")
    service_name: str = Field(
        default=DEFAULT_SERVICE_NAME,
        min_length=1,
        description=f"Resource attribute service.name of every exported span (default {DEFAULT_SERVICE_NAME!r},"
        " the name flujo's own telemetry uses).",
    )
    resource_attributes: dict[str, str | bool | int | float] = Field(
        default_factory=dict,
        description="Extra resource attributes (e.g. deployment.environment). Merged with"
        " OTEL_RESOURCE_ATTRIBUTES (these win per key).",
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

    @field_validator("headers")
    @classmethod
    def _header_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not name or any(c.isspace() or c in ":\r\n" for c in name):
                raise ValueError(f"invalid header name {name!r}")
        return value

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if not value:
            raise ValueError("must not be empty (leave it unset for the default)")
        if "://" in value and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError(f"unsupported scheme in {value!r} (use http:// or https://)")
        return value


# --- OTEL_* variables --------------------------------------------------------------------------------


def _env(env: Mapping[str, str], name: str) -> str | None:
    """``OTEL_EXPORTER_OTLP_TRACES_<name>`` else ``OTEL_EXPORTER_OTLP_<name>`` (blank counts as unset)."""
    for key in (f"OTEL_EXPORTER_OTLP_TRACES_{name}", f"OTEL_EXPORTER_OTLP_{name}"):
        value = env.get(key)
        if value is not None and value.strip():
            return value.strip()
    return None


def parse_key_values(text: str, variable: str) -> dict[str, str]:
    """``k=v,k2=v2`` with URL-encoded keys and values (W3C baggage style, as the OTel spec says)."""
    result: dict[str, str] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{variable}: invalid entry {item.strip()!r} (expected key=value)")
        result[unquote(key.strip())] = unquote(value.strip())
    return result


def _bool(text: str, variable: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise ValueError(f"{variable}: expected true or false, got {text!r}")


def apply_otel_env(config: TracesConfig, env: Mapping[str, str] | None = None) -> TracesConfig:
    """``config`` with the standard OpenTelemetry variables applied to every key the config did not set.

    Raises :class:`ValueError` naming the variable when one is invalid.
    """
    env = os.environ if env is None else env
    explicit = config.model_fields_set
    update: dict[str, Any] = {}

    protocol = _env(env, "PROTOCOL")
    if protocol is not None and "protocol" not in explicit:
        if protocol not in ("grpc", "http/protobuf"):
            raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL: {protocol!r} is not supported (use grpc or http/protobuf)")
        update["protocol"] = protocol
    effective_protocol = update.get("protocol", config.protocol)

    if "endpoint" not in explicit:
        specific = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
        generic = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
        if specific:
            update["endpoint"] = specific
        elif generic:
            if effective_protocol == "http/protobuf":
                generic = generic.rstrip("/") + HTTP_TRACES_PATH
            update["endpoint"] = generic

    headers = _env(env, "HEADERS")
    if headers is not None:
        update["headers"] = {**parse_key_values(headers, "OTEL_EXPORTER_OTLP_HEADERS"), **config.headers}

    compression = _env(env, "COMPRESSION")
    if compression is not None and "compression" not in explicit:
        if compression.lower() not in ("gzip", "none"):
            raise ValueError(f"OTEL_EXPORTER_OTLP_COMPRESSION: {compression!r} is not supported (gzip or none)")
        update["compression"] = compression.lower()

    timeout = _env(env, "TIMEOUT")
    if timeout is not None and "timeout" not in explicit:
        try:
            millis = float(timeout)
        except ValueError:
            raise ValueError(f"OTEL_EXPORTER_OTLP_TIMEOUT: expected milliseconds, got {timeout!r}") from None
        if not millis > 0:
            raise ValueError(f"OTEL_EXPORTER_OTLP_TIMEOUT: must be greater than 0, got {timeout!r}")
        update["timeout"] = timedelta(milliseconds=millis)

    tls_update: dict[str, Any] = {}
    tls_explicit = config.tls.model_fields_set if "tls" in explicit else set()
    for name, field in (
        ("INSECURE", "insecure"),
        ("CERTIFICATE", "ca_file"),
        ("CLIENT_CERTIFICATE", "cert_file"),
        ("CLIENT_KEY", "key_file"),
    ):
        value = _env(env, name)
        if value is None or field in tls_explicit:
            continue
        tls_update[field] = _bool(value, f"OTEL_EXPORTER_OTLP_{name}") if field == "insecure" else Path(value)
    if tls_update:
        update["tls"] = TLSConfig.model_validate({**config.tls.model_dump(exclude_unset=True), **tls_update})

    resource_text = env.get("OTEL_RESOURCE_ATTRIBUTES", "").strip()
    from_env = parse_key_values(resource_text, "OTEL_RESOURCE_ATTRIBUTES") if resource_text else {}
    env_service = from_env.pop("service.name", None)
    if from_env:
        update["resource_attributes"] = {**from_env, **config.resource_attributes}
    if "service_name" not in explicit:
        service = env.get("OTEL_SERVICE_NAME", "").strip() or env_service
        if service:
            update["service_name"] = service

    limits_update: dict[str, Any] = {}
    limits_explicit = config.limits.model_fields_set if "limits" in explicit else set()
    for field, names in (
        ("attribute_count", ("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "OTEL_ATTRIBUTE_COUNT_LIMIT")),
        ("attribute_value_length", ("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT")),
    ):
        if field in limits_explicit:
            continue
        for name in names:
            text = env.get(name, "").strip()
            if text:
                if not text.isdigit():
                    raise ValueError(f"{name}: expected a non-negative integer, got {text!r}")
                limits_update[field] = int(text)
                break
    if limits_update:
        update["limits"] = LimitsConfig.model_validate(
            {**config.limits.model_dump(exclude_unset=True), **limits_update}
        )

    if not update:
        return config
    merged = config.model_dump(exclude_unset=True)
    merged.update(update)
    result = TracesConfig.model_validate(merged)
    # Keep "set explicitly" as it was: values that came from the environment are not YAML-explicit.
    object.__setattr__(result, "__pydantic_fields_set__", set(explicit))
    return result


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
        raw = config.endpoint or DEFAULT_GRPC_ENDPOINT
        if "://" in raw:
            parts = urlsplit(raw)
            secure = parts.scheme == "https"
            netloc = parts.netloc
        else:
            secure = not bool(config.tls.insecure)
            netloc = raw
        host, port = _host_port(netloc, 4317, raw)
        return Endpoint(
            "grpc", netloc if ":" in netloc.rsplit("]", 1)[-1] else f"{netloc}:{port}", secure, host, port, ""
        )
    raw = config.endpoint or DEFAULT_HTTP_ENDPOINT
    if "://" not in raw:
        raw = ("http://" if config.tls.insecure else "https://") + raw
    parts = urlsplit(raw)
    path = parts.path if parts.path not in ("", "/") else HTTP_TRACES_PATH
    if parts.query:
        path += "?" + parts.query
    secure = parts.scheme == "https"
    host, port = _host_port(parts.netloc, 443 if secure else 80, raw)
    return Endpoint("http/protobuf", f"{parts.scheme}://{parts.netloc}{path}", secure, host, port, path)


def _host_port(netloc: str, default_port: int, raw: str) -> tuple[str, int]:
    if "@" in netloc:
        raise ValueError(f"endpoint {raw!r}: credentials in the URL are not supported (use headers)")
    host, port = netloc, default_port
    if netloc.startswith("["):
        host, _, rest = netloc[1:].partition("]")
        if rest.startswith(":"):
            port = _port(rest[1:], raw)
    elif ":" in netloc:
        host, _, text = netloc.rpartition(":")
        port = _port(text, raw)
    if not host:
        raise ValueError(f"endpoint {raw!r}: no host")
    return host, port


def _port(text: str, raw: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"endpoint {raw!r}: invalid port {text!r}")
    return int(text)


def default_state_file(state_dir: Path) -> Path:
    return state_dir / DEFAULT_STATE_FILE_NAME
