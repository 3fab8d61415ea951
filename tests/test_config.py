"""Configuration loading: every error names file:line (or the variable / flag) and the key."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, get_args, get_origin

import pytest
import trustme
from pydantic import BaseModel

from exporter.config import (
    DEFAULT_LISTEN,
    Config,
    ConfigError,
    load_config,
    parse_duration,
    require_db_path,
)

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "config.example.yaml"
BCRYPT_HINT = (
    "generate one with: python -c \"import bcrypt; print(bcrypt.hashpw(b'secret', bcrypt.gensalt()).decode())\""
)
LISTEN_HINT = "expected HOST:PORT, e.g. 0.0.0.0:10078, :10078 or [::1]:10078"
# A real bcrypt hash (of "change-me"): 60 characters, $2b$ prefix.
HASH = "$2b$12$sSKekGZtHpWtSidPIUEwP.t9CkWNqyUIma.vSCA1vTXHM0Ooxf84e"

ENGINE_CHOICES = "'auto', 'flujo', 'pynenc', 'seeknal' or 'marianne'"  # what a bad db.engine is told it may be


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with real TLS files, so errors read ``config.yaml:LINE: ...``."""
    monkeypatch.chdir(tmp_path)
    ca = trustme.CA()
    server = ca.issue_cert("localhost")
    server.cert_chain_pems[0].write_to_path(str(tmp_path / "server.crt"))
    server.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.crt"))
    return tmp_path


def errors_of(text: str, **kwargs: Any) -> list[str]:
    path = Path("config.yaml")
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env=kwargs.pop("env", {}), **kwargs)
    assert str(caught.value) == "\n".join(caught.value.errors)
    return caught.value.errors


def load_text(text: str, **kwargs: Any) -> Config:
    path = Path("config.yaml")
    path.write_text(text)
    return load_config(path, env=kwargs.pop("env", {}), **kwargs)


BROKEN = [
    pytest.param(
        "metric:\n  refresh_interval: 30s\n",
        ["config.yaml:1: metric: unknown key (did you mean 'metrics'?)"],
        id="unknown-top-level-key-suggested",
    ),
    pytest.param(
        "db:\n  path: x.db\ncolour: blue\n",
        ["config.yaml:3: colour: unknown key (valid: db, jobs, logging, metrics, targets, traces, web)"],
        id="unknown-top-level-key-listed",
    ),
    pytest.param(
        "metrics:\n  max_steps: 10\n\n  refresh_intervall: 30s\n",
        ["config.yaml:4: metrics.refresh_intervall: unknown key (did you mean 'refresh_interval'?)"],
        id="unknown-nested-key",
    ),
    pytest.param(
        "metrics:\n  stuck:\n    running_afterr: 2h\n",
        ["config.yaml:3: metrics.stuck.running_afterr: unknown key (did you mean 'running_after'?)"],
        id="unknown-deeply-nested-key",
    ),
    pytest.param(
        "metrics:\n  refresh_interval: fast\n",
        ["config.yaml:2: metrics.refresh_interval: invalid duration 'fast' (use e.g. 30s, 5m, 1h)"],
        id="bad-duration",
    ),
    pytest.param(
        "metrics: {refresh_interval: 30 seconds}\n",
        ["config.yaml:1: metrics.refresh_interval: invalid duration '30 seconds' (use e.g. 30s, 5m, 1h)"],
        id="bad-duration-flow-style",
    ),
    pytest.param(
        "db:\n  busy_timeout: -5s\n",
        ["config.yaml:2: db.busy_timeout: duration must not be negative, got '-5s'"],
        id="negative-duration",
    ),
    pytest.param(
        "db:\n  busy_timeout: -1\n",
        ["config.yaml:2: db.busy_timeout: duration must not be negative, got -1"],
        id="negative-number-duration",
    ),
    pytest.param(
        "metrics:\n  refresh_timeout: yes\n",
        ["config.yaml:2: metrics.refresh_timeout: invalid duration true (use e.g. 30s, 5m, 1h)"],
        id="bool-as-duration",
    ),
    pytest.param(
        "metrics:\n  refresh_timeout: .inf\n",
        ["config.yaml:2: metrics.refresh_timeout: duration too large: inf"],
        id="infinite-duration",
    ),
    pytest.param(
        "metrics:\n  refresh_timeout: 0\n",
        ["config.yaml:2: metrics.refresh_timeout: must be greater than 0, got 0s"],
        id="zero-refresh-timeout",
    ),
    pytest.param(
        "web:\n  listen_address: localhost\n",
        [f"config.yaml:2: web.listen_address: invalid listen address 'localhost': no port ({LISTEN_HINT})"],
        id="listen-no-port",
    ),
    pytest.param(
        "web:\n  listen_address: 0.0.0.0:0\n",
        ["config.yaml:2: web.listen_address: invalid listen address '0.0.0.0:0': invalid port '0' (use 1-65535)"],
        id="listen-port-0",
    ),
    pytest.param(
        "web:\n  listen_address: ':70000'\n",
        ["config.yaml:2: web.listen_address: invalid listen address ':70000': invalid port '70000' (use 1-65535)"],
        id="listen-port-70000",
    ),
    pytest.param(
        "web:\n  listen_address: 'http://exporter:80'\n",
        [
            "config.yaml:2: web.listen_address: invalid listen address 'http://exporter:80': "
            f"invalid host 'http://exporter' ({LISTEN_HINT}; IPv6 addresses go in brackets)"
        ],
        id="listen-garbage",
    ),
    pytest.param(
        "web:\n  listen_address: '::1:10078'\n",
        [
            "config.yaml:2: web.listen_address: invalid listen address '::1:10078': "
            f"invalid host '::1' ({LISTEN_HINT}; IPv6 addresses go in brackets)"
        ],
        id="listen-ipv6-without-brackets",
    ),
    pytest.param(
        "web:\n  listen_address: '[::g]:10078'\n",
        [
            "config.yaml:2: web.listen_address: invalid listen address '[::g]:10078': "
            f"invalid host '::g' ({LISTEN_HINT}; IPv6 addresses go in brackets)"
        ],
        id="listen-bad-ipv6",
    ),
    pytest.param(
        "web:\n  listen_address: 10078\n",
        ["config.yaml:2: web.listen_address: invalid listen address 10078: expected HOST:PORT, e.g. ':10078'"],
        id="listen-port-only",
    ),
    pytest.param(
        "db:\n  writer_timezone: Mars/Olympus_Mons\n",
        [
            "config.yaml:2: db.writer_timezone: unknown time zone 'Mars/Olympus_Mons' "
            "(use an IANA name such as Europe/Berlin)"
        ],
        id="unknown-time-zone",
    ),
    pytest.param(
        "web:\n  tls_server_config:\n    cert_file: missing.crt\n    key_file: server.key\n",
        ["config.yaml:3: web.tls_server_config.cert_file: cannot read missing.crt: No such file or directory"],
        id="tls-cert-missing",
    ),
    pytest.param(
        "web:\n  tls_server_config:\n    cert_file: server.crt\n    key_file: .\n",
        ["config.yaml:4: web.tls_server_config.key_file: not a regular file: ."],
        id="tls-key-is-a-directory",
    ),
    pytest.param(
        "web:\n  tls_server_config:\n    cert_file: server.crt\n",
        ["config.yaml:2: web.tls_server_config.key_file: required"],
        id="tls-key-file-required",
    ),
    pytest.param(
        "web:\n  tls_server_config:\n    cert_file: server.crt\n    key_file: server.key\n"
        "    client_auth_type: RequireAndVerifyClientCert\n",
        [
            "config.yaml:5: web.tls_server_config.client_auth_type: RequireAndVerifyClientCert needs "
            "client_ca_file (the CA of client certificates)"
        ],
        id="mtls-without-ca",
    ),
    pytest.param(
        "web:\n  tls_server_config:\n    cert_file: server.crt\n    key_file: server.key\n"
        "    client_auth_type: RequestClientCert\n",
        [
            "config.yaml:5: web.tls_server_config.client_auth_type: must be one of 'NoClientCert' or "
            "'RequireAndVerifyClientCert', got 'RequestClientCert'"
        ],
        id="tls-unsupported-client-auth-type",
    ),
    pytest.param(
        "web:\n  basic_auth_users:\n    bob: " + HASH + "\n    alice: secret\n",
        [f"config.yaml:4: web.basic_auth_users.alice: not a bcrypt hash ({BCRYPT_HINT})"],
        id="password-not-bcrypt",
    ),
    pytest.param(
        "web:\n  basic_auth_users:\n    alice: '" + HASH[:-1] + "'\n",
        [f"config.yaml:3: web.basic_auth_users.alice: not a bcrypt hash ({BCRYPT_HINT})"],
        id="password-hash-truncated",
    ),
    pytest.param(
        "metrics:\n  max_pipelines: 0\n",
        ["config.yaml:2: metrics.max_pipelines: must be at least 1, got 0"],
        id="max-pipelines-0",
    ),
    pytest.param(
        "metrics:\n  max_pipelines: 5000\n",
        ["config.yaml:2: metrics.max_pipelines: must be at most 1000, got 5000"],
        id="max-pipelines-5000",
    ),
    pytest.param(
        "metrics:\n  max_steps: many\n",
        ["config.yaml:2: metrics.max_steps: must be an integer, got 'many'"],
        id="string-for-int",
    ),
    pytest.param(
        "metrics:\n  max_steps: true\n",
        ["config.yaml:2: metrics.max_steps: must be an integer, got true"],
        id="bool-for-int",
    ),
    pytest.param(
        "metrics:\n  flujo_compat: maybe\n",
        ["config.yaml:2: metrics.flujo_compat: must be true or false, got 'maybe'"],
        id="string-for-bool",
    ),
    pytest.param(
        "db:\n  path: [a.db, b.db]\n",
        ["config.yaml:2: db.path: must be a path (a string), got a list"],
        id="list-for-path",
    ),
    pytest.param(
        "metrics:\n  - refresh_interval: 30s\n",
        ["config.yaml:1: metrics: must be a mapping (a section), got a list"],
        id="list-instead-of-section",
    ),
    pytest.param(
        "db:\n  path: x.db\nweb: 10078\n",
        ["config.yaml:3: web: must be a mapping (a section), got 10078"],
        id="scalar-instead-of-section",
    ),
    pytest.param(
        "traces: [otlp]\n",
        ["config.yaml:1: traces: must be a mapping (a section), got a list"],
        id="list-instead-of-placeholder-section",
    ),
    pytest.param(
        "metrics:\n  refresh_interval: 30s\n max_steps: 5\n",
        [
            "config.yaml:3: YAML syntax error: while parsing a block mapping: "
            "expected <block end>, but found '<block mapping start>'"
        ],
        id="yaml-syntax-error",
    ),
    pytest.param(
        "db:\n  path: x.db\n\tbusy_timeout: 1s\n",
        [
            "config.yaml:3: YAML syntax error: while scanning for the next token: "
            "found character '\\t' that cannot start any token"
        ],
        id="yaml-tab",
    ),
    pytest.param(
        "db:\n  path: x.db\n---\nweb: {}\n",
        ["config.yaml:3: YAML syntax error: expected a single document in the stream: but found another document"],
        id="yaml-two-documents",
    ),
    pytest.param(
        "- db\n- web\n",
        [
            "config.yaml:1: top level must be a mapping of sections "
            "(db, web, metrics, logging, traces, jobs, targets), got a list"
        ],
        id="top-level-list",
    ),
    pytest.param(
        "# the exporter\nflujo\n",
        [
            "config.yaml:2: top level must be a mapping of sections "
            "(db, web, metrics, logging, traces, jobs, targets), got 'flujo'"
        ],
        id="top-level-scalar",
    ),
    pytest.param(
        "metrics:\n  refresh_interval: 1m\n  aggregate_interval: 30s\n",
        ["config.yaml:3: metrics.aggregate_interval: must be at least metrics.refresh_interval (1m), got 30s"],
        id="aggregate-below-refresh",
    ),
    pytest.param(
        "metrics:\n  refresh_interval: 10m\n",
        [
            "config.yaml:1: metrics.counts_interval: must be at least metrics.refresh_interval (10m), got 1m",
            "config.yaml:1: metrics.aggregate_interval: must be at least metrics.refresh_interval (10m), got 5m",
        ],
        id="default-aggregate-below-refresh",
    ),
    pytest.param(
        "metrics:\n  refresh_interval: 0\n",
        ["config.yaml:2: metrics.refresh_interval: must be at least 1s, got 0s"],
        id="refresh-interval-0",
    ),
    pytest.param(
        "metrics:\n  refresh_interval: 500ms\n",
        ["config.yaml:2: metrics.refresh_interval: must be at least 1s, got 500ms"],
        id="refresh-interval-below-1s",
    ),
    pytest.param(
        "logging:\n  level: verbose\n",
        ["config.yaml:2: logging.level: must be one of 'debug', 'info', 'warning' or 'error', got 'verbose'"],
        id="bad-logging-level",
    ),
    pytest.param(
        "logging:\n  format: xml\n",
        ["config.yaml:2: logging.format: must be one of 'plain' or 'json', got 'xml'"],
        id="bad-logging-format",
    ),
    pytest.param(
        "db:\n  path: x.db\n  engine: nosuch\n",
        [f"config.yaml:3: db.engine: must be one of {ENGINE_CHOICES}, got 'nosuch'"],
        id="unknown-engine",
    ),
    pytest.param(
        "db:\n  engine: [flujo]\n",
        [f"config.yaml:2: db.engine: must be one of {ENGINE_CHOICES}, got a list"],
        id="engine-not-a-name",
    ),
    pytest.param(
        "metrics:\n  stuck:\n    per_pipeline:\n      nightly: 6h\n      ingest: soon\n",
        ["config.yaml:5: metrics.stuck.per_pipeline.ingest: invalid duration 'soon' (use e.g. 30s, 5m, 1h)"],
        id="bad-per-pipeline-duration",
    ),
    pytest.param(
        "metrics:\n  stuck:\n    per_pipeline:\n      nightly: 0s\n",
        ["config.yaml:4: metrics.stuck.per_pipeline.nightly: must be greater than 0, got 0s"],
        id="zero-per-pipeline-duration",
    ),
    pytest.param(
        "metrics:\n  stuck:\n    per_pipeline:\n      2024: 1h\n",
        ["config.yaml:4: metrics.stuck.per_pipeline.2024: key must be a string (quote it)"],
        id="per-pipeline-number-key",
    ),
    pytest.param(
        "metrics:\n  stuck:\n    paused_after: -1h\n",
        ["config.yaml:3: metrics.stuck.paused_after: duration must not be negative, got '-1h'"],
        id="negative-paused-after",
    ),
    pytest.param(
        "metrics:\n  refresh_interval: 30s\n  max_steps: 5\n  refresh_interval: 1m\n",
        ["config.yaml:4: metrics.refresh_interval: duplicate key (first set on line 2)"],
        id="duplicate-key",
    ),
    pytest.param(
        "db:\n  writer_timezone: Atlantis/Capital\n  query_timeout: 0s\n"
        "web:\n  listen_address: nowhere\n  basic_auth_users:\n    alice: hunter2\n"
        "metrics:\n  refresh_intervall: 30s\n  max_pipelines: 0\n"
        "logging:\n  level: loud\n"
        "extra: 1\n",
        [
            "config.yaml:2: db.writer_timezone: unknown time zone 'Atlantis/Capital' "
            "(use an IANA name such as Europe/Berlin)",
            "config.yaml:3: db.query_timeout: must be greater than 0, got 0s",
            f"config.yaml:5: web.listen_address: invalid listen address 'nowhere': no port ({LISTEN_HINT})",
            f"config.yaml:7: web.basic_auth_users.alice: not a bcrypt hash ({BCRYPT_HINT})",
            "config.yaml:9: metrics.refresh_intervall: unknown key (did you mean 'refresh_interval'?)",
            "config.yaml:10: metrics.max_pipelines: must be at least 1, got 0",
            "config.yaml:12: logging.level: must be one of 'debug', 'info', 'warning' or 'error', got 'loud'",
            "config.yaml:13: extra: unknown key (valid: db, jobs, logging, metrics, targets, traces, web)",
        ],
        id="several-errors-all-reported",
    ),
]


@pytest.mark.parametrize(("text", "expected"), BROKEN)
def test_broken_config(workdir: Path, text: str, expected: list[str]) -> None:
    assert errors_of(text) == expected


def test_broken_table_is_large_enough() -> None:
    assert len(BROKEN) >= 25


def test_errors_are_sorted_by_line(workdir: Path) -> None:
    text = "logging:\n  level: loud\nmetrics:\n  max_steps: 0\ndb:\n  busy_timeout: soon\n"
    assert [error.split(":")[1] for error in errors_of(text)] == ["2", "4", "6"]


def test_line_numbers_follow_anchors_and_merge_keys(workdir: Path) -> None:
    text = (
        "metrics:\n"
        "  stuck:\n"
        "    per_pipeline: &thresholds\n"
        "      nightly: 6h\n"
        "      ingest: soon\n"
        "  refresh_interval: fast\n"
    )
    assert errors_of(text) == [
        "config.yaml:5: metrics.stuck.per_pipeline.ingest: invalid duration 'soon' (use e.g. 30s, 5m, 1h)",
        "config.yaml:6: metrics.refresh_interval: invalid duration 'fast' (use e.g. 30s, 5m, 1h)",
    ]
    merged = "base: &base\n  level: loud\nlogging:\n  <<: *base\n  format: json\n"
    assert errors_of(merged) == [
        "config.yaml:1: base: unknown key (valid: db, jobs, logging, metrics, targets, traces, web)",
        "config.yaml:2: logging.level: must be one of 'debug', 'info', 'warning' or 'error', got 'loud'",
    ]


def test_alias_bombs_and_cycles_stay_cheap(workdir: Path) -> None:
    levels = ["anchors:", "  l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 10)]
    text = "\n".join([*levels, "metrics:", "  refresh_interval: &loop [*loop]", ""])
    assert errors_of(text) == [
        "config.yaml:1: anchors: unknown key (valid: db, jobs, logging, metrics, targets, traces, web)",
        "config.yaml:13: metrics.refresh_interval: invalid duration a list (use e.g. 30s, 5m, 1h)",
    ]


# --- files -----------------------------------------------------------------------------------------------


def test_missing_file(workdir: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(Path("missing.yaml"), env={})
    assert caught.value.errors == ["missing.yaml: cannot read: No such file or directory"]


def test_directory_instead_of_file(workdir: Path) -> None:
    (workdir / "conf.d").mkdir()
    with pytest.raises(ConfigError) as caught:
        load_config(Path("conf.d"), env={})
    assert caught.value.errors == ["conf.d: cannot read: Is a directory"]


def test_file_not_utf8(workdir: Path) -> None:
    Path("config.yaml").write_bytes(b"db:\n  path: \xff\xfe.db\n")
    with pytest.raises(ConfigError, match=r"^config\.yaml: cannot read: not UTF-8 text"):
        load_config(Path("config.yaml"), env={})


def test_unreadable_file_still_reports_bad_env_names(workdir: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(Path("missing.yaml"), env={"STATE_EXPORTER_NOPE": "1"})
    assert caught.value.errors == [
        "missing.yaml: cannot read: No such file or directory",
        "environment STATE_EXPORTER_NOPE: nope: unknown key (valid: db, jobs, logging, metrics, targets, traces, web)",
    ]


@pytest.mark.parametrize("text", ["", "\n", "# nothing configured yet\n", "---\n", "null\n"])
def test_empty_file_gives_defaults(workdir: Path, text: str) -> None:
    assert load_text(text) == Config()


def test_no_file_gives_defaults() -> None:
    config = load_config(None, env={})
    assert config == Config()
    assert config.web.listen_address == DEFAULT_LISTEN == "0.0.0.0:10078"
    assert config.db.path is None
    assert config.metrics.refresh_interval == timedelta(seconds=15)


def test_valid_file(workdir: Path) -> None:
    config = load_text(
        "db:\n  path: /data/flujo_ops.db\n  writer_timezone: Europe/Berlin\n"
        "web:\n  listen_address: '[::1]:10078'\n"
        "  tls_server_config:\n    cert_file: server.crt\n    key_file: server.key\n"
        "    client_ca_file: ca.crt\n    client_auth_type: RequireAndVerifyClientCert\n    min_version: TLS13\n"
        f"  basic_auth_users:\n    prometheus: {HASH}\n"
        "metrics:\n  refresh_interval: 1m\n  aggregate_interval: 1m\n  max_pipelines: 1000\n"
        "  stuck:\n    paused_after: 1d\n    per_pipeline: {nightly: 6h, Doc-Ingest: 90s}\n"
        "logging: {level: DEBUG, format: json}\n"
    )
    assert config.db.path == Path("/data/flujo_ops.db")
    assert config.web.tls_server_config is not None
    assert config.web.tls_server_config.client_ca_file == Path("ca.crt")
    assert config.web.basic_auth_users == {"prometheus": HASH}
    assert config.metrics.stuck.per_pipeline == {"nightly": timedelta(hours=6), "Doc-Ingest": timedelta(seconds=90)}
    assert config.metrics.stuck.paused_after == timedelta(days=1)
    assert (config.logging.level, config.logging.format) == ("debug", "json")


@pytest.mark.parametrize(
    "address", ["0.0.0.0:10078", ":10078", "[::1]:10078", "[::]:1", "localhost:65535", "127.0.0.1:80"]
)
def test_valid_listen_addresses(address: str) -> None:
    assert load_config(None, env={}, overrides={"web": {"listen_address": address}}).web.listen_address == address


@pytest.mark.parametrize(
    ("text", "expected"),
    [("30s", 30), ("5m", 300), ("1.5h", 5400), ("2d", 172800), ("1w", 604800), ("500ms", 0.5), (45, 45), ("7", 7)],
)
def test_parse_duration(text: object, expected: float) -> None:
    assert parse_duration(text) == timedelta(seconds=expected)


# --- environment -----------------------------------------------------------------------------------------


def test_env_overrides_nested_keys_case_insensitively() -> None:
    config = load_config(
        None,
        env={
            "STATE_EXPORTER_DB__PATH": "/data/flujo_ops.db",
            "STATE_EXPORTER_METRICS__REFRESH_INTERVAL": "30s",
            "STATE_EXPORTER_logging__Level": "debug",
            "state_exporter_metrics__stuck__running_after": "2h",
            "PATH": "/usr/bin",
            "STATE_EXPORTERS": "not ours",
        },
    )
    assert config.db.path == Path("/data/flujo_ops.db")
    assert config.metrics.refresh_interval == timedelta(seconds=30)
    assert config.logging.level == "debug"
    assert config.metrics.stuck.running_after == timedelta(hours=2)


def test_env_values_are_yaml() -> None:
    config = load_config(
        None,
        env={
            "STATE_EXPORTER_METRICS__FLUJO_COMPAT": "true",
            "STATE_EXPORTER_METRICS__MAX_STEPS": "5",
            "STATE_EXPORTER_METRICS__STUCK__PER_PIPELINE": "{nightly: 6h, ingest: 15m}",
            "STATE_EXPORTER_METRICS__STUCK__PAUSED_AFTER": "90",
            "STATE_EXPORTER_WEB__LISTEN_ADDRESS": "[::1]:10078",  # not valid YAML: taken as text
            "STATE_EXPORTER_TRACES__ENDPOINT": "http://collector:4318",
        },
    )
    assert config.metrics.flujo_compat is True
    assert config.metrics.max_steps == 5
    assert config.metrics.stuck.per_pipeline == {"nightly": timedelta(hours=6), "ingest": timedelta(minutes=15)}
    assert config.metrics.stuck.paused_after == timedelta(seconds=90)
    assert config.web.listen_address == "[::1]:10078"
    assert config.traces.endpoint == "http://collector:4318"


def test_env_keeps_the_case_of_pipeline_and_user_names() -> None:
    config = load_config(
        None,
        env={
            "STATE_EXPORTER_METRICS__STUCK__PER_PIPELINE__NightlyImport": "6h",
            "STATE_EXPORTER_WEB__BASIC_AUTH_USERS__Prometheus": HASH,
        },
    )
    assert config.metrics.stuck.per_pipeline == {"NightlyImport": timedelta(hours=6)}
    assert config.web.basic_auth_users == {"Prometheus": HASH}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "STATE_EXPORTER_METRICS__REFRESH_INTERVALL",
            "metrics.refresh_intervall: unknown key (did you mean 'refresh_interval'?)",
        ),
        (
            "STATE_EXPORTER_DATABASE__PATH",
            "database: unknown key (valid: db, jobs, logging, metrics, targets, traces, web)",
        ),
        ("STATE_EXPORTER_LOGING__LEVEL", "loging: unknown key (did you mean 'logging'?)"),
        ("STATE_EXPORTER_DB__PATH__NAME", "db.path.name: unknown key (db.path is a value, not a section)"),
        (
            "STATE_EXPORTER_DB___PATH",
            "db._path: unknown key (did you mean 'path'?)",
        ),
        ("STATE_EXPORTER_DB____PATH", "db.: empty key name (separate nested keys with exactly two underscores)"),
    ],
)
def test_env_unknown_key_names_the_variable(name: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, env={name: "x"})
    assert caught.value.errors == [f"environment {name}: {expected}"]


def test_env_retired_prefix_is_an_error_naming_the_new_spelling() -> None:
    # A variable under the prefix from before the daemon served several engines would otherwise be
    # ignored silently and the daemon would run with a setting the operator believes is applied.
    with pytest.raises(ConfigError) as caught:
        load_config(None, env={"FLUJO_EXPORTER_DB__PATH": "/data/flujo.db"})
    assert caught.value.errors == [
        "environment FLUJO_EXPORTER_DB__PATH: the prefix is now STATE_EXPORTER_ (rename it to STATE_EXPORTER_DB__PATH)"
    ]


MOVED = (
    "moved: set metrics.stuck.{} instead "
    "(one stuck threshold for the stuck metrics and the stuck-run alerts, so that they cannot disagree)"
)


def test_stuck_alert_thresholds_moved_to_metrics_stuck(workdir: Path) -> None:
    """The alert job used to have its own thresholds: an old config fails naming each key and its
    new place, rather than silently alerting on other thresholds than the ones it sets."""
    text = (
        "metrics:\n  stuck:\n    running_after: 2h\n"
        "jobs:\n  stuck_alerts:\n    enabled: true\n    running_after: 2h\n"
        "    per_pipeline: {nightly: 6h}\n    paused_after: 1d\n"
    )
    assert errors_of(text) == [
        f"config.yaml:7: jobs.stuck_alerts.running_after: {MOVED.format('running_after')}",
        f"config.yaml:8: jobs.stuck_alerts.per_pipeline: {MOVED.format('per_pipeline')}",
        f"config.yaml:9: jobs.stuck_alerts.paused_after: {MOVED.format('paused_after')}",
    ]
    env = {
        "STATE_EXPORTER_JOBS__STUCK_ALERTS__RUNNING_AFTER": "2h",
        "STATE_EXPORTER_JOBS__STUCK_ALERTS__PER_PIPELINE__nightly": "6h",
    }
    with pytest.raises(ConfigError) as caught:
        load_config(None, env=env)
    assert caught.value.errors == [
        "environment STATE_EXPORTER_JOBS__STUCK_ALERTS__PER_PIPELINE__nightly: jobs.stuck_alerts.per_pipeline: "
        + MOVED.format("per_pipeline"),
        "environment STATE_EXPORTER_JOBS__STUCK_ALERTS__RUNNING_AFTER: jobs.stuck_alerts.running_after: "
        + MOVED.format("running_after"),
    ]
    # The one setting, in its place, serves both.
    config = load_text("metrics:\n  stuck:\n    running_after: 2h\njobs:\n  stuck_alerts:\n    enabled: true\n")
    assert config.metrics.stuck.running_after == timedelta(hours=2)


def test_env_bad_value_names_the_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(
            None,
            env={
                "STATE_EXPORTER_METRICS__REFRESH_INTERVAL": "fast",
                "STATE_EXPORTER_METRICS": "{max_steps: 0}",
                "STATE_EXPORTER_WEB__BASIC_AUTH_USERS": "{alice: secret}",
            },
        )
    assert caught.value.errors == [  # by variable name
        "environment STATE_EXPORTER_METRICS: metrics.max_steps: must be at least 1, got 0",
        "environment STATE_EXPORTER_METRICS__REFRESH_INTERVAL: metrics.refresh_interval: "
        "invalid duration 'fast' (use e.g. 30s, 5m, 1h)",
        f"environment STATE_EXPORTER_WEB__BASIC_AUTH_USERS: web.basic_auth_users.alice: not a bcrypt hash "
        f"({BCRYPT_HINT})",
    ]


def test_engine_from_each_source() -> None:
    """Names are exact (the registry's spelling): "Flujo" is as unknown as a typo."""
    assert load_config(None, env={}).db.engine == "auto"
    assert load_config(None, env={"STATE_EXPORTER_DB__ENGINE": "flujo"}).db.engine == "flujo"
    assert load_config(None, env={}, overrides={"db": {"engine": "flujo"}}).db.engine == "flujo"
    with pytest.raises(ConfigError) as caught:
        load_config(None, env={"STATE_EXPORTER_DB__ENGINE": "Flujo"}, overrides={"db": {"engine": "nosuch"}})
    assert caught.value.errors == [f"command line: db.engine: must be one of {ENGINE_CHOICES}, got 'nosuch'"]
    with pytest.raises(ConfigError) as caught:
        load_config(None, env={"STATE_EXPORTER_DB__ENGINE": "Flujo"})
    assert caught.value.errors == [
        f"environment STATE_EXPORTER_DB__ENGINE: db.engine: must be one of {ENGINE_CHOICES}, got 'Flujo'"
    ]


def test_env_defaults_to_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATE_EXPORTER_LOGGING__FORMAT", "json")
    assert load_config(None).logging.format == "json"
    assert load_config(None, env={}).logging.format == "plain"


# --- precedence ------------------------------------------------------------------------------------------


def test_precedence_file_then_env_then_overrides(workdir: Path) -> None:
    config = load_text(
        "db:\n  path: /file.db\n  writer_timezone: UTC\n"
        "web:\n  listen_address: 127.0.0.1:1000\n"
        "metrics:\n  refresh_interval: 10s\n  aggregate_interval: 1m\n"
        "  stuck:\n    per_pipeline: {a: 1m, b: 2m}\n"
        "logging:\n  level: warning\n",
        env={
            "STATE_EXPORTER_DB__PATH": "/env.db",
            "STATE_EXPORTER_METRICS__REFRESH_INTERVAL": "20s",
            "STATE_EXPORTER_METRICS__STUCK__PER_PIPELINE__b": "3m",
            "STATE_EXPORTER_LOGGING__LEVEL": "error",
        },
        overrides={
            "db": {"path": "/flag.db", "writer_timezone": None},  # None: flag not given
            "web": {"listen_address": "127.0.0.1:9"},
        },
    )
    assert config.db.path == Path("/flag.db")
    assert config.db.writer_timezone == "UTC"
    assert config.web.listen_address == "127.0.0.1:9"
    assert config.metrics.refresh_interval == timedelta(seconds=20)
    assert config.metrics.aggregate_interval == timedelta(minutes=1)
    assert config.metrics.stuck.per_pipeline == {"a": timedelta(minutes=1), "b": timedelta(minutes=3)}
    assert config.logging.level == "error"


def test_overridden_bad_value_is_not_an_error(workdir: Path) -> None:
    config = load_text(
        "metrics:\n  refresh_interval: fast\n",
        env={"STATE_EXPORTER_METRICS__REFRESH_INTERVAL": "30s"},
    )
    assert config.metrics.refresh_interval == timedelta(seconds=30)


def test_errors_name_their_source(workdir: Path) -> None:
    errors = errors_of(
        "metrics:\n  max_steps: 0\n",
        env={"STATE_EXPORTER_LOGGING__LEVEL": "loud"},
        overrides={"web": {"listen_address": "nowhere"}, "db": {"pth": "/x.db"}},
    )
    assert errors == [
        "config.yaml:2: metrics.max_steps: must be at least 1, got 0",
        "environment STATE_EXPORTER_LOGGING__LEVEL: logging.level: "
        "must be one of 'debug', 'info', 'warning' or 'error', got 'loud'",
        "command line: db.pth: unknown key (did you mean 'path'?)",
        f"command line: web.listen_address: invalid listen address 'nowhere': no port ({LISTEN_HINT})",
    ]


def test_cross_check_blames_the_source_that_set_the_section() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, env={"STATE_EXPORTER_METRICS__REFRESH_INTERVAL": "10m"})
    assert caught.value.errors == [
        "environment STATE_EXPORTER_METRICS__REFRESH_INTERVAL: metrics.aggregate_interval: "
        "must be at least metrics.refresh_interval (10m), got 5m",
        "environment STATE_EXPORTER_METRICS__REFRESH_INTERVAL: metrics.counts_interval: "
        "must be at least metrics.refresh_interval (10m), got 1m",
    ]


# --- require_db_path, ConfigError ------------------------------------------------------------------------


def test_require_db_path() -> None:
    with pytest.raises(ConfigError) as caught:
        require_db_path(load_config(None, env={}))
    message = "db.path: required (set it in the config file, STATE_EXPORTER_DB__PATH or --db)"
    assert caught.value.errors == [message]
    assert str(caught.value) == message
    config = load_config(None, env={}, overrides={"db": {"path": "/x.db"}})
    assert require_db_path(config) == Path("/x.db")


def test_config_error_joins_errors_with_newlines() -> None:
    error = ConfigError(["a: one", "b: two"])
    assert error.errors == ["a: one", "b: two"]
    assert str(error) == "a: one\nb: two"


# --- the example file ------------------------------------------------------------------------------------

# A key line, commented out or not.  "  #   key:" is the key at indent 2 + 2: one space follows "#".
_KEY_LINE = re.compile(r"^(?P<indent> *)(?:#(?P<comment> +))?(?P<key>[a-z_][a-z0-9_]*):(?: |$)")


def example_keys(text: str) -> set[str]:
    """Dotted keys written in the example, including commented-out ones."""
    stack: list[tuple[int, str]] = []
    keys: set[str] = set()
    for line in text.splitlines():
        match = _KEY_LINE.match(line)
        if match is None:
            continue
        indent = len(match["indent"]) + (len(match["comment"]) - 1 if match["comment"] else 0)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match["key"]))
        keys.add(".".join(key for _, key in stack))
    return keys


def _submodel(annotation: Any) -> type[BaseModel] | None:
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def model_keys(model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    """Dotted key of every field, recursively through nested sections (not below a mapping of names,
    such as ``targets``: its keys are names)."""
    for name, field in model.model_fields.items():
        yield prefix + name
        sub = None if get_origin(field.annotation) is dict else _submodel(field.annotation)
        if sub is not None:
            yield from model_keys(sub, f"{prefix}{name}.")


def test_example_loads_cleanly() -> None:
    config = load_config(EXAMPLE, env={})
    assert config.db.path is not None


def test_example_shows_the_defaults() -> None:
    shown = load_config(EXAMPLE, env={}).model_dump()
    defaults = Config().model_dump()
    shown["db"]["path"] = defaults["db"]["path"]  # the one key without a default
    assert shown == defaults


def test_example_documents_every_key() -> None:
    keys = set(model_keys(Config))
    assert {"web.tls_server_config.client_ca_file", "metrics.stuck.per_pipeline", "jobs"} <= keys
    missing = sorted(keys - example_keys(EXAMPLE.read_text()))
    assert not missing, f"config.example.yaml does not document: {missing}"


def test_example_has_no_unknown_keys() -> None:
    """Commented-out keys are spelled right too (keys below name mappings are names)."""
    keys = set(model_keys(Config))
    names = (
        "web.basic_auth_users.",
        "metrics.stuck.per_pipeline.",
        "traces.headers.",
        "traces.resource_attributes.",
        "jobs.stuck_alerts.labels.",
        "jobs.stuck_alerts.webhook.headers.",
    )
    written = {key for key in example_keys(EXAMPLE.read_text()) if not key.startswith(names)}
    assert written <= keys, sorted(written - keys)


def test_example_mentions_the_default_port() -> None:
    text = EXAMPLE.read_text()
    assert "10078" in text
    assert "9100-9999" in text


# --- through the real CLI: check-config and run refuse alike, before serving -----------------------------

BAD_PEM = "not a certificate\n"
CLI_CASES = [
    # (id, config text, environment, expected in stderr); {db} is a missing DB path, {tmp} the directory
    ("listen-host-unresolvable", "web:\n  listen_address: nosuchhost.invalid:10078\n", {},
     "config.yaml:2: web.listen_address: cannot resolve host 'nosuchhost.invalid'"),
    ("listen-without-port", "web:\n  listen_address: 127.0.0.1\n", {},
     "config.yaml:2: web.listen_address: invalid listen address '127.0.0.1': no port"),
    ("tls-cert-not-pem", "web:\n  tls_server_config:\n    cert_file: bad.pem\n    key_file: server.key\n", {},
     "config.yaml:3: web.tls_server_config.cert_file: bad.pem does not contain a PEM certificate"),
    ("tls-key-not-pem", "web:\n  tls_server_config:\n    cert_file: server.crt\n    key_file: bad.pem\n", {},
     "config.yaml:4: web.tls_server_config.key_file: bad.pem does not contain a PEM private key"),
    ("tls-client-ca-not-pem",
     "web:\n  tls_server_config:\n    cert_file: server.crt\n    key_file: server.key\n    client_ca_file: bad.pem\n",
     {}, "config.yaml:5: web.tls_server_config.client_ca_file: bad.pem does not contain a PEM certificate"),
    ("tls-key-of-another-cert", "web:\n  tls_server_config:\n    cert_file: server.crt\n    key_file: other.key\n",
     {}, "config.yaml:2: web.tls_server_config: key_file other.key does not match cert_file server.crt"),
    ("basic-auth-user-with-colon", f"web:\n  basic_auth_users:\n    'ops:admin': '{HASH}'\n", {},
     "config.yaml:3: web.basic_auth_users.ops:admin: user name must not contain ':'"),
    ("db-path-below-a-file", "db:\n  path: {tmp}/bad.pem/flujo.db\n", {},
     "config.yaml:2: db.path: {tmp}/bad.pem is not a directory"),
    ("state-file-is-the-db", "traces:\n  enabled: true\n  state_file: {db}\n", {},
     "config.yaml:3: traces.state_file: {db} is the state DB"),
    ("state-file-is-the-db-wal", "traces:\n  enabled: true\n  state_file: {db}-wal\n", {},
     "config.yaml:3: traces.state_file: {db}-wal is the state DB"),
    ("state-file-symlink-to-db", "traces:\n  enabled: true\n  state_file: {tmp}/link.sqlite\n", {},
     "config.yaml:3: traces.state_file: {tmp}/link.sqlite is the state DB"),
    ("state-file-hard-link-to-db", "traces:\n  enabled: true\n  state_file: {tmp}/hard.sqlite\n", {},
     "config.yaml:3: traces.state_file: {tmp}/hard.sqlite is the state DB"),
    ("state-file-below-the-db", "traces:\n  enabled: true\n  state_file: {db}/state.sqlite\n", {},
     "config.yaml:3: traces.state_file: {db}/state.sqlite cannot be created: {db} is not a directory"),
    ("state-file-directory", "traces:\n  enabled: true\n  state_file: {tmp}\n", {},
     "config.yaml:3: traces.state_file: {tmp} is a directory"),
    ("endpoint-credentials", "traces:\n  enabled: true\n  endpoint: 'http://otel:hunter2@collector:4317'\n", {},
     "config.yaml:3: traces.endpoint: endpoint 'http://collector:4317': credentials in the URL are not allowed"),
    ("endpoint-port-99999", "traces:\n  enabled: true\n  endpoint: 'http://collector:99999'\n", {},
     "config.yaml:3: traces.endpoint: endpoint 'http://collector:99999': invalid port"),
    ("endpoint-grpc-with-http-path", "traces:\n  enabled: true\n  endpoint: 'http://collector:4318/v1/traces'\n",
     {}, "config.yaml:3: traces.endpoint: endpoint 'http://collector:4318/v1/traces': a gRPC endpoint is host:port"),
    ("endpoint-with-space", "traces:\n  enabled: true\n  endpoint: 'collector 4317'\n", {},
     "config.yaml:3: traces.endpoint: endpoint 'collector 4317': must not contain spaces"),
    ("header-value-crlf", 'traces:\n  enabled: true\n  headers:\n    x-team: "a\\r\\nX-Evil: 1"\n', {},
     "config.yaml:4: traces.headers.x-team: header value must be printable ASCII without line breaks"),
    ("header-name-invalid", "traces:\n  enabled: true\n  headers:\n    'api key': x\n", {},
     "config.yaml:4: traces.headers.api key: invalid header name 'api key'"),
    ("traces-ca-file-missing", "traces:\n  enabled: true\n  tls:\n    ca_file: {tmp}/missing-ca.pem\n", {},
     "config.yaml:4: traces.tls.ca_file: cannot read {tmp}/missing-ca.pem: No such file or directory"),
    ("traces-ca-file-not-pem", "traces:\n  enabled: true\n  tls:\n    ca_file: bad.pem\n", {},
     "config.yaml:4: traces.tls.ca_file: bad.pem does not contain a PEM certificate"),
    ("traces-tls-key-without-cert", "traces:\n  enabled: true\n  tls:\n    key_file: server.key\n", {},
     "config.yaml:3: traces.tls: tls.cert_file and tls.key_file go together"),
    ("otel-timeout-garbage", "traces:\n  enabled: true\n", {"OTEL_EXPORTER_OTLP_TIMEOUT": "soon"},
     "environment OTEL_EXPORTER_OTLP_TIMEOUT: traces.timeout: expected milliseconds"),
    ("otel-timeout-infinite", "traces:\n  enabled: true\n", {"OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "1e400"},
     "environment OTEL_EXPORTER_OTLP_TRACES_TIMEOUT: traces.timeout: expected milliseconds"),
    ("otel-protocol-garbage", "traces:\n  enabled: true\n", {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
     "environment OTEL_EXPORTER_OTLP_PROTOCOL: traces.protocol: 'http/json' is not supported"),
    ("otel-headers-garbage", "traces:\n  enabled: true\n", {"OTEL_EXPORTER_OTLP_HEADERS": "api-key"},
     "environment OTEL_EXPORTER_OTLP_HEADERS: traces.headers: entry 1 is not key=value"),
    ("otel-headers-crlf", "traces:\n  enabled: true\n", {"OTEL_EXPORTER_OTLP_HEADERS": "a=b%0D%0AX-Evil: 1"},
     "environment OTEL_EXPORTER_OTLP_HEADERS: traces.headers.a: header value must be printable ASCII"),
    ("otel-endpoint-garbage", "traces:\n  enabled: true\n", {"OTEL_EXPORTER_OTLP_ENDPOINT": "not a url"},
     "environment OTEL_EXPORTER_OTLP_ENDPOINT: traces.endpoint: endpoint 'not a url': must not contain spaces"),
    ("otel-endpoint-credentials", "traces:\n  enabled: true\n",
     {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://u:hunter2@collector"},
     "environment OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: traces.endpoint: endpoint 'https://collector': credentials"),
    ("otel-certificate-missing", "traces:\n  enabled: true\n", {"OTEL_EXPORTER_OTLP_CERTIFICATE": "/nonexistent.pem"},
     "environment OTEL_EXPORTER_OTLP_CERTIFICATE: traces.tls.ca_file: cannot read /nonexistent.pem"),
    ("otel-insecure-garbage", "traces:\n  enabled: true\n", {"OTEL_EXPORTER_OTLP_INSECURE": "maybe"},
     "environment OTEL_EXPORTER_OTLP_INSECURE: traces.tls.insecure: expected true or false"),
    ("otel-limit-too-large", "traces:\n  enabled: true\n", {"OTEL_ATTRIBUTE_COUNT_LIMIT": "99999999"},
     "environment OTEL_ATTRIBUTE_COUNT_LIMIT: traces.limits.attribute_count: Input should be less than or equal"),
    ("job-negative-interval", "jobs:\n  cleanup:\n    interval: -5m\n", {},
     "config.yaml:3: jobs.cleanup.interval: duration must not be negative, got '-5m'"),
    ("webhook-url-without-scheme", "jobs:\n  stuck_alerts:\n    webhook:\n      url: hooks.example.com/x?token=abc\n",
     {}, "config.yaml:4: jobs.stuck_alerts.webhook.url: must be an http:// or https:// URL, got "
     "'hooks.example.com/x?token=***'"),
    ("webhook-url-port-99999", "jobs:\n  stuck_alerts:\n    webhook:\n      url: http://hooks:99999/x\n", {},
     "config.yaml:4: jobs.stuck_alerts.webhook.url: invalid host or port (1-65535) in 'http://hooks:99999/x'"),
    ("webhook-credentials-twice",
     "jobs:\n  stuck_alerts:\n    webhook:\n      url: http://u:p@hooks/x\n      headers: {Authorization: x}\n", {},
     "config.yaml:3: jobs.stuck_alerts.webhook: set credentials either in the url (user:password@) or in an "
     "Authorization header, not both"),
    ("webhook-header-crlf", 'jobs:\n  stuck_alerts:\n    webhook:\n      url: http://hooks/x\n'
     '      headers: {X-Token: "a\\nb"}\n', {},
     "config.yaml:5: jobs.stuck_alerts.webhook.headers.X-Token: header value must be printable ASCII"),
    ("alertmanager-url-with-api-path",
     "jobs:\n  stuck_alerts:\n    alertmanager:\n      url: http://am:9093/api/v2/alerts\n", {},
     "config.yaml:4: jobs.stuck_alerts.alertmanager.url: give the base URL of Alertmanager ('http://am:9093')"),
    ("alertmanager-credentials-twice",
     "jobs:\n  stuck_alerts:\n    alertmanager:\n      url: http://u:p@am:9093\n"
     "      basic_auth: {username: u, password: p}\n", {},
     "config.yaml:3: jobs.stuck_alerts.alertmanager: set at most one of credentials in url, basic_auth and "
     "bearer_token (got credentials in url, basic_auth)"),
]  # fmt: skip


@pytest.fixture
def cli_dir(workdir: Path) -> Path:
    """``workdir`` plus a non-PEM file, another certificate's key, an existing DB file and links to it."""
    (workdir / "bad.pem").write_text(BAD_PEM)
    trustme.CA().issue_cert("other").private_key_pem.write_to_path(str(workdir / "other.key"))
    return workdir


def run_cli(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("STATE_EXPORTER_", "OTEL_"))}
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        cwd=cwd,
        env={**environment, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(("text", "env", "expected"), [case[1:] for case in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_cli_refuses_before_serving(cli_dir: Path, text: str, env: dict[str, str], expected: str) -> None:
    db = cli_dir / "flujo.db"
    db.write_bytes(b"")  # an empty file: the daemon would wait for Flujo to create its tables
    (cli_dir / "link.sqlite").symlink_to(db)
    os.link(db, cli_dir / "hard.sqlite")
    port = socket_free_port()
    listen = "" if text.startswith("web:") else f"web:\n  listen_address: 127.0.0.1:{port}\n"

    def fill(template: str) -> str:
        return template.replace("{db}", str(db)).replace("{tmp}", str(cli_dir))

    Path(cli_dir / "config.yaml").write_text(fill(text if "db:" in text else f"{text}db:\n  path: {{db}}\n") + listen)
    expected = fill(expected)
    check = run_cli(cli_dir, "check-config", *(["--env"] if env else []), "config.yaml", env=env)
    run = run_cli(cli_dir, "run", "--config", "config.yaml", env=env)
    for done in (check, run):
        assert done.returncode == 2, done.stdout + done.stderr
        assert expected in done.stderr, done.stderr
        assert "Traceback" not in done.stderr and "hunter2" not in done.stderr
        assert done.stderr.startswith("state-exporter: invalid configuration:\n")
    if env:  # without --env, check-config looks at the file alone
        assert run_cli(cli_dir, "check-config", "config.yaml", env=env).returncode == 0


def socket_free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_cli_cases_are_many() -> None:
    assert len(CLI_CASES) >= 40


def test_check_config_requires_what_run_requires(workdir: Path) -> None:
    """An empty file: no db.path.  `run` refuses it, so does check-config, unless --db or --env gives one."""
    Path("config.yaml").write_text("")
    message = "config.yaml: db.path: required (set it in the config file, STATE_EXPORTER_DB__PATH or --db)"
    for args in (["check-config", "config.yaml"], ["run", "--config", "config.yaml", "--listen", "127.0.0.1:1"]):
        done = run_cli(workdir, *args)
        assert (done.returncode, done.stderr) == (2, f"state-exporter: invalid configuration:\n{message}\n")
    assert run_cli(workdir, "check-config", "config.yaml", "--db", "flujo.db").returncode == 0


def test_db_path_may_be_a_directory(workdir: Path) -> None:
    """A seeknal project's ``target/`` directory (its JSON file backend) is a valid db.path."""
    Path("config.yaml").write_text("")
    Path("target").mkdir()
    done = run_cli(workdir, "check-config", "config.yaml", "--db", "target")
    assert done.returncode == 0, done.stderr
    env = {"STATE_EXPORTER_DB__PATH": str(workdir / "flujo.db")}
    assert run_cli(workdir, "check-config", "config.yaml", env=env).returncode == 2
    done = run_cli(workdir, "check-config", "--env", "config.yaml", env=env)
    assert (done.returncode, done.stdout) == (0, "config.yaml: ok\n")


def test_run_refuses_a_taken_port(workdir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        Path("config.yaml").write_text(f"db:\n  path: flujo.db\nweb:\n  listen_address: 127.0.0.1:{port}\n")
        done = run_cli(workdir, "run", "--config", "config.yaml")
        assert done.returncode == 2, done.stderr
        assert f"config.yaml:4: web.listen_address: cannot listen on 127.0.0.1:{port}: Address already in use" in (
            done.stderr
        )
        assert "Traceback" not in done.stderr
        # check-config does not bind: the daemon it checks for may be running.
        assert run_cli(workdir, "check-config", "config.yaml").returncode == 0


@pytest.mark.parametrize(
    ("url", "base"),
    [
        ("http://apihost:9093/api/v2/alerts", "http://apihost:9093"),
        ("http://am:9093/api/v1/", "http://am:9093"),
        ("https://u:secret@gw/alertmanager/api/v2", "https://gw/alertmanager"),
    ],
)
def test_alertmanager_api_path_is_refused_with_the_base_url(url: str, base: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, env={}, overrides={"jobs": {"stuck_alerts": {"alertmanager": {"url": url}}}})
    [error] = caught.value.errors
    expected = f"command line: jobs.stuck_alerts.alertmanager.url: give the base URL of Alertmanager ({base!r})"
    assert error.startswith(expected)
    assert "secret" not in error


def test_alertmanager_route_prefix_with_api_in_it_is_fine() -> None:
    url = "http://gateway/api/alertmanager"
    config = load_config(None, env={}, overrides={"jobs": {"stuck_alerts": {"alertmanager": {"url": url}}}})
    assert config.jobs.stuck_alerts.alertmanager is not None
    assert config.jobs.stuck_alerts.alertmanager.url == url
