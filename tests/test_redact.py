"""URL redaction, and every place that shows a URL or a credential uses it: errors, descriptions, logs."""

from __future__ import annotations

import json
import logging
import socket
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from pydantic import ValidationError

from exporter.config import ConfigError, load_config
from exporter.jobs.config import StuckAlertsConfig
from exporter.jobs.delivery import DeliveryError, Receiver, post_json
from exporter.logs import JsonFormatter, RedactingFormatter
from exporter.redact import redact_text, redact_url
from exporter.traces.config import OtelEnvError, TracesConfig, apply_otel_env
from exporter.traces.transport import make_transport

SECRET = "pa55-w0rd-7d1c"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://user:pass@host:8443/x/y?token=abc&team=a#frag", "https://host:8443/x/y?token=***&team=***"),
        ("http://host/hook?secret", "http://host/hook?***"),
        ("http://host/hook?a=1&&b", "http://host/hook?a=***&***&***"),
        ("http://token@host", "http://host"),
        ("http://u:pa/ss@host/x", "http://host/x"),  # an unencoded "/" in the password
        ("http://u:pa#ss@host/x", "http://host/x"),  # an unencoded "#" in the password
        ("http://host/x?mail=a@b", "http://host/x?mail=***"),
        ("user:pass@collector:4317", "collector:4317"),  # gRPC style, no scheme
        ("collector:4317", "collector:4317"),
        ("http://[::1]:4318/v1/traces", "http://[::1]:4318/v1/traces"),
        ("http://[::1:4318/x?k=v", "http://***"),  # unparseable host: nothing kept
        ("http://host:99999/x?k=v", "http://host:99999/x?k=***"),  # a bad port is no secret
        ("", ""),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_redact_text_finds_urls_in_messages() -> None:
    text = (
        "cannot POST to http://u:p@h:1/x?token=abc: failed ('https://h/y?k=v'), "
        "see <http://a:b@c/>; host:port stays, so does http://plain/path."
    )
    assert redact_text(text) == (
        "cannot POST to http://h:1/x?token=***: failed ('https://h/y?k=***'), "
        "see <http://c/>; host:port stays, so does http://plain/path."
    )


# --- webhook / Alertmanager delivery --------------------------------------------------------------------


@pytest.fixture
async def failing_server() -> AsyncIterator[str]:
    async def fail(request: web.Request) -> web.Response:
        # A receiver that echoes the URL it was called with, token included.
        return web.Response(status=500, text=f"cannot handle {request.url}")

    app = web.Application()
    app.router.add_post("/{tail:.*}", fail)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"127.0.0.1:{port}"
    await runner.cleanup()


def refused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def delivery_error(url: str) -> DeliveryError:
    receiver = Receiver("webhook", url, 5.0)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(DeliveryError) as caught:
            await post_json(session, receiver, {"alerts": []})
    return caught.value


async def test_delivery_errors_show_the_url_redacted(failing_server: str) -> None:
    error = await delivery_error(f"http://hook:{SECRET}@{failing_server}/hook?token={SECRET}")
    assert str(error).startswith(f"HTTP 500 from http://{failing_server}/hook?token=***: cannot handle")
    assert SECRET not in str(error)
    refused = await delivery_error(f"http://hook:{SECRET}@127.0.0.1:{refused_port()}/hook?token={SECRET}")
    assert str(refused).startswith("cannot POST to http://127.0.0.1:")
    assert SECRET not in str(refused)
    # Not chained: a traceback of the error cannot show aiohttp's own message with the URL.
    assert refused.__cause__ is None and refused.__suppress_context__


def test_receivers_do_not_show_credentials_in_repr() -> None:
    receiver = Receiver("webhook", f"http://u:{SECRET}@h/x", 1.0, {"Authorization": SECRET})
    assert SECRET not in repr(receiver)


# --- span export ----------------------------------------------------------------------------------------


def test_otlp_transport_description_and_errors_are_redacted() -> None:
    config = TracesConfig(
        protocol="http/protobuf", endpoint=f"http://127.0.0.1:{refused_port()}/v1/traces?api-key={SECRET}"
    )
    transport = make_transport(config)
    try:
        assert "api-key=***" in transport.description and SECRET not in transport.description
        outcome = transport.send(b"", threading.Event())
        assert outcome.reason == "connection" and SECRET not in outcome.detail
    finally:
        transport.close()


@pytest.mark.parametrize(
    "data",
    [
        {"endpoint": f"http://otel:{SECRET}@collector:4317"},
        {"endpoint": f"http://otel:{SECRET}@collector:99999"},
        {"protocol": "http/protobuf", "endpoint": f"https://otel:{SECRET}@collector/v1/traces?k={SECRET}"},
        {"endpoint": f"ftp://otel:{SECRET}@collector"},
        {"headers": {"authorization": f"Bearer {SECRET}\r\n"}},
    ],
)
def test_traces_config_errors_never_show_the_secret(data: dict[str, object]) -> None:
    with pytest.raises(ValidationError) as caught:
        TracesConfig.model_validate(data)
    assert SECRET not in str(caught.value)


def test_otel_variable_errors_never_show_the_secret() -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://otel:{SECRET}@collector:4317",
        "OTEL_EXPORTER_OTLP_HEADERS": f"authorization=Bearer%20{SECRET},{SECRET}",  # entry 2 is no key=value
    }
    with pytest.raises(OtelEnvError) as caught:
        apply_otel_env(TracesConfig(enabled=True), env)
    assert [(p.variable, p.key) for p in caught.value.problems] == [
        ("OTEL_EXPORTER_OTLP_HEADERS", "headers"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "endpoint"),
    ]
    assert "credentials in the URL are not allowed" in str(caught.value)
    assert SECRET not in str(caught.value)
    with pytest.raises(OtelEnvError) as caught:
        apply_otel_env(TracesConfig(enabled=True), {"OTEL_EXPORTER_OTLP_HEADERS": f"authorization={SECRET}%0D%0A"})
    assert [(p.variable, p.key) for p in caught.value.problems] == [
        ("OTEL_EXPORTER_OTLP_HEADERS", "headers.authorization")
    ]
    assert SECRET not in str(caught.value)


def test_jobs_config_errors_never_show_the_secret() -> None:
    for data in (
        {"webhook": {"url": f"hooks.example.com/x?token={SECRET}"}},
        {"webhook": {"url": f"http://h:99999/x?token={SECRET}"}},
        {"alertmanager": {"url": f"http://u:{SECRET}@am:9093/api/v2/alerts"}},
        {"alertmanager": {"url": f"http://am:9093?token={SECRET}"}},
    ):
        with pytest.raises(ValidationError) as caught:
            StuckAlertsConfig.model_validate(data)
        assert SECRET not in str(caught.value), data


def test_config_errors_do_not_echo_values_below_secret_keys(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "traces:\n  headers: {authorization: 73312345}\n"
        "jobs:\n  stuck_alerts:\n    alertmanager:\n      url: http://am\n"
        "      basic_auth: {username: u, password: 73312346}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert caught.value.errors == [
        f"{path}:2: traces.headers.authorization: must be a string, got a value not shown (a secret)",
        f"{path}:7: jobs.stuck_alerts.alertmanager.basic_auth.password: must be a string, got a value not shown "
        "(a secret)",
    ]


# --- logs -----------------------------------------------------------------------------------------------


def log_record() -> logging.LogRecord:
    try:
        raise ValueError(f"library error for http://u:{SECRET}@h/x?token={SECRET}")
    except ValueError:
        args = (f"https://h/?k=caf\u00e9{SECRET}",)  # JSON escapes the é: the URL is redacted before
        return logging.LogRecord("test", logging.ERROR, __file__, 1, 'POST "%s" failed', args, sys.exc_info())


def test_log_formatter_redacts_messages_arguments_and_tracebacks() -> None:
    text = RedactingFormatter(logging.Formatter("%(levelname)s %(message)s")).format(log_record())
    assert text.startswith('ERROR POST "https://h/?k=***" failed\nTraceback')
    assert "ValueError: library error for http://h/x?token=***" in text
    assert SECRET not in text


def test_json_log_formatter_redacts_before_escaping() -> None:
    text = RedactingFormatter(JsonFormatter()).format(log_record())
    entry = json.loads(text)
    assert entry["msg"] == 'POST "https://h/?k=***" failed'
    assert entry["exc"].endswith("ValueError: library error for http://h/x?token=***")
    assert SECRET not in text
