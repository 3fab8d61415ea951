"""The traces: section and the standard OTEL_* variables."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from exporter.traces import TracesConfig, apply_otel_env, resolve_endpoint


def test_defaults() -> None:
    config = TracesConfig()
    assert config.enabled is False and config.protocol == "grpc" and config.endpoint is None
    assert config.service_name is None  # the engine's name, set when its file is read
    assert config.compression == "none" and config.timeout == timedelta(seconds=10)
    assert config.batch_size == 512 and config.grace_period == timedelta(hours=1)
    assert config.limits.attribute_count == 128 and config.limits.attribute_value_length == 4096
    assert resolve_endpoint(config).target == "localhost:4317"


def test_every_field_is_documented() -> None:
    def walk(model: type) -> None:
        for name, field in model.model_fields.items():  # type: ignore[attr-defined]
            assert field.description, f"{model.__name__}.{name} has no description"
            annotation = field.annotation
            if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
                walk(annotation)

    walk(TracesConfig)


def test_strict_and_frozen() -> None:
    with pytest.raises(ValidationError, match="Extra inputs"):
        TracesConfig.model_validate({"endpont": "x"})
    config = TracesConfig.model_validate({"poll_interval": "2s", "grace_period": "30m", "batch_size": 10})
    assert config.poll_interval == timedelta(seconds=2) and config.grace_period == timedelta(minutes=30)
    with pytest.raises(ValidationError):
        config.batch_size = 5  # type: ignore[misc]
    with pytest.raises(ValidationError, match="go together"):
        TracesConfig.model_validate({"tls": {"cert_file": "c.pem"}})
    with pytest.raises(ValidationError, match="unsupported scheme"):
        TracesConfig.model_validate({"endpoint": "ftp://x"})
    with pytest.raises(ValidationError):
        TracesConfig.model_validate({"headers": {"bad name": "x"}})
    with pytest.raises(ValidationError):
        TracesConfig.model_validate({"batch_size": True})


def test_otel_variables_fill_what_the_yaml_left_unset() -> None:
    env = {
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector:4318/",
        "OTEL_EXPORTER_OTLP_HEADERS": "api-key=abc%3D,x-team=obs",
        "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "2500",
        "OTEL_EXPORTER_OTLP_CERTIFICATE": "/etc/ca.pem",
        "OTEL_SERVICE_NAME": "billing-flujo",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod,service.name=ignored,team=a%20b",
        "OTEL_ATTRIBUTE_COUNT_LIMIT": "64",
        "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT": "100",
    }
    config = apply_otel_env(TracesConfig(), env)
    assert config.protocol == "http/protobuf"
    assert config.endpoint == "https://collector:4318/v1/traces"
    assert config.headers == {"api-key": "abc=", "x-team": "obs"}
    assert config.compression == "gzip" and config.timeout == timedelta(milliseconds=2500)
    assert config.tls.ca_file == Path("/etc/ca.pem")
    assert config.service_name == "billing-flujo"
    assert config.resource_attributes == {"deployment.environment": "prod", "team": "a b"}
    assert config.limits.attribute_count == 64 and config.limits.attribute_value_length == 100
    endpoint = resolve_endpoint(config)
    assert (endpoint.host, endpoint.port, endpoint.path, endpoint.secure) == ("collector", 4318, "/v1/traces", True)


def test_yaml_wins_and_signal_specific_variables_win_over_generic() -> None:
    yaml = TracesConfig.model_validate(
        {
            "endpoint": "http://yaml:4317",
            "headers": {"api-key": "from-yaml"},
            "service_name": "from-yaml",
            "resource_attributes": {"team": "yaml"},
            "limits": {"attribute_count": 5},
        }
    )
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://env:4317",
        "OTEL_EXPORTER_OTLP_HEADERS": "api-key=env,other=1",
        "OTEL_SERVICE_NAME": "env",
        "OTEL_RESOURCE_ATTRIBUTES": "team=env,zone=z",
        "OTEL_ATTRIBUTE_COUNT_LIMIT": "9",
        "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "7",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
    }
    config = apply_otel_env(yaml, env)
    assert config.endpoint == "http://yaml:4317"
    assert config.headers == {"api-key": "from-yaml", "other": "1"}
    assert config.service_name == "from-yaml"
    assert config.resource_attributes == {"team": "yaml", "zone": "z"}
    assert config.limits.attribute_count == 5 and config.limits.attribute_value_length == 7
    assert config.tls.insecure is True
    assert apply_otel_env(config, env) == config, "applying twice changes nothing"

    specific = apply_otel_env(
        TracesConfig(),
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://generic:4317",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://traces:4317",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "1000",
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "3000",
            "OTEL_RESOURCE_ATTRIBUTES": "service.name=from-resource",
        },
    )
    assert specific.endpoint == "http://traces:4317" and specific.timeout == timedelta(seconds=3)
    assert specific.service_name == "from-resource"
    http = apply_otel_env(
        TracesConfig(protocol="http/protobuf"), {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/custom"}
    )
    assert resolve_endpoint(http).path == "/custom", "the TRACES_ endpoint is used as is"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "OTEL_EXPORTER_OTLP_PROTOCOL"),
        ({"OTEL_EXPORTER_OTLP_TIMEOUT": "soon"}, "OTEL_EXPORTER_OTLP_TIMEOUT"),
        ({"OTEL_EXPORTER_OTLP_COMPRESSION": "zstd"}, "OTEL_EXPORTER_OTLP_COMPRESSION"),
        ({"OTEL_EXPORTER_OTLP_HEADERS": "novalue"}, "OTEL_EXPORTER_OTLP_HEADERS"),
        ({"OTEL_EXPORTER_OTLP_INSECURE": "maybe"}, "OTEL_EXPORTER_OTLP_INSECURE"),
        ({"OTEL_ATTRIBUTE_COUNT_LIMIT": "-1"}, "OTEL_ATTRIBUTE_COUNT_LIMIT"),
    ],
)
def test_invalid_variables_are_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        apply_otel_env(TracesConfig(), env)


@pytest.mark.parametrize(
    ("data", "target", "secure", "path"),
    [
        ({}, "localhost:4317", False, ""),
        ({"endpoint": "collector:4317"}, "collector:4317", True, ""),
        ({"endpoint": "collector"}, "collector:4317", True, ""),
        ({"endpoint": "collector:4317", "tls": {"insecure": True}}, "collector:4317", False, ""),
        ({"endpoint": "https://collector"}, "collector:4317", True, ""),
        ({"endpoint": "http://[::1]:4317"}, "[::1]:4317", False, ""),
        ({"protocol": "http/protobuf"}, "http://localhost:4318/v1/traces", False, "/v1/traces"),
        ({"protocol": "http/protobuf", "endpoint": "https://c"}, "https://c/v1/traces", True, "/v1/traces"),
        ({"protocol": "http/protobuf", "endpoint": "http://c:9/x?y=1"}, "http://c:9/x?y=1", False, "/x?y=1"),
    ],
)
def test_resolve_endpoint(data: dict[str, object], target: str, secure: bool, path: str) -> None:
    endpoint = resolve_endpoint(TracesConfig.model_validate(data))
    assert (endpoint.target, endpoint.secure, endpoint.path) == (target, secure, path)


def test_bad_endpoints() -> None:
    with pytest.raises(ValueError, match="invalid port"):
        resolve_endpoint(TracesConfig(endpoint="http://c:99999"))
    with pytest.raises(ValueError, match="credentials"):
        resolve_endpoint(TracesConfig(protocol="http/protobuf", endpoint="http://u:p@c/v1/traces"))
