"""The probe listener (kubelet probes when mTLS is required) and what /readyz tells an anonymous client."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import bcrypt
import pytest
import trustme
from processes import http_get, running_daemon
from web_support import Serve, client_context, local, write_server_tls

from exporter.config import ConfigError, WebConfig, load_config
from exporter.readiness import Readiness
from exporter.web import probe_port


async def status(url: str, **kwargs: object) -> tuple[int, str]:
    async with aiohttp.ClientSession() as client, client.get(url, **kwargs) as response:  # type: ignore[arg-type]
        return response.status, await response.text()


async def test_probe_listener_answers_kubelet_probes_without_client_certificate(serve: Serve, tmp_path: Path) -> None:
    ca = trustme.CA()
    tls = write_server_tls(tmp_path, ca).model_copy(
        update={"client_ca_file": tmp_path / "ca.crt", "client_auth_type": "RequireAndVerifyClientCert"}
    )
    users = {"prometheus": bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()}
    config = local(tls_server_config=tls, basic_auth_users=users).model_copy(
        update={"probe_listen_address": "127.0.0.1:0"}
    )
    served = await serve(config)
    probes = f"http://127.0.0.1:{probe_port(served.server)}"
    # The main listener: no client certificate, no TLS session, not even for /healthz.
    with pytest.raises(aiohttp.ClientError):
        await status(f"{served.base}/healthz", ssl=client_context(ca))
    assert (await status(f"{served.base}/healthz", ssl=client_context(ca, client_cert=True)))[0] == 200
    # The probe listener: plain HTTP, no credentials, the two probes and nothing else.
    assert await status(f"{probes}/healthz") == (200, "ok")
    assert await status(f"{probes}/readyz") == (200, "ready\n")
    for path in ("/metrics", "/", "/nope"):
        assert (await status(f"{probes}{path}"))[0] == 404
    with pytest.raises(aiohttp.ClientError):  # it speaks no TLS
        await status(f"https://127.0.0.1:{probe_port(served.server)}/healthz", ssl=client_context(ca))


def test_probe_listen_address_is_validated(tmp_path: Path) -> None:
    assert WebConfig().probe_listen_address is None
    assert WebConfig(probe_listen_address="127.0.0.1:10079").probe_listen_address == "127.0.0.1:10079"
    config = tmp_path / "config.yaml"
    config.write_text("web:\n  listen_address: ':10078'\n  probe_listen_address: ':10078'\n")
    with pytest.raises(ConfigError, match=r"config\.yaml:3: web\.probe_listen_address: must differ"):
        load_config(config, env={})
    config.write_text("web:\n  probe_listen_address: 10079\n")
    with pytest.raises(ConfigError, match=r"web\.probe_listen_address: invalid listen address"):
        load_config(config, env={})


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("header_timeout", "0s", "must be greater than 0"),
        ("idle_timeout", "soon", "invalid duration"),
        ("body_timeout", "-1s", "must not be negative"),
        ("max_connections", "0", "must be at least 1"),
        ("readyz_detail", "everything", "must be one of"),
    ],
)
def test_bad_web_limits_name_the_key(tmp_path: Path, key: str, value: str, message: str) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"web:\n  {key}: {value}\n")
    with pytest.raises(ConfigError, match=rf"config\.yaml:2: web\.{key}: .*{message}"):
        load_config(config, env={})


FOREIGN = Readiness(False, "unknown_layout", "/srv/secret/app.db: not a Flujo state DB (tables: invoices, payroll)")


@pytest.mark.parametrize(
    ("detail", "body"),
    [
        ("reason", "unknown_layout\n"),
        ("full", "unknown_layout: /srv/secret/app.db: not a Flujo state DB (tables: invoices, payroll)\n"),
    ],
)
async def test_readyz_detail_setting(serve: Serve, detail: str, body: str) -> None:
    served = await serve(local(readyz_detail=detail), readiness=lambda: FOREIGN)
    assert await status(f"{served.base}/readyz") == (503, body)


def other_application_db(path: Path) -> None:
    import sqlite3

    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
    conn.commit()
    conn.close()


@pytest.mark.parametrize("detail", [None, "full"])
def test_daemon_readyz_hides_paths_and_tables_by_default(tmp_path: Path, detail: str | None) -> None:
    db = tmp_path / "private-name.db"
    other_application_db(db)
    config = f"web:\n  readyz_detail: {detail}\n" if detail else None
    with running_daemon(tmp_path, "--db", str(db), config=config) as daemon:
        code, body = http_get(daemon.url + "/readyz")
    assert code == 503
    if detail is None:
        assert body == "unknown_layout\n"
    else:
        assert body.startswith("unknown_layout: ") and str(db) in body and "invoices" in body


def test_readiness_reason_is_a_short_code(tmp_path: Path) -> None:
    """The daemon fills Readiness with a bounded code and keeps the text for the detail."""
    from exporter.config import Config
    from exporter.daemon import Daemon

    missing = Daemon(Config.model_validate({"db": {"path": str(tmp_path / "absent.db")}})).readiness()
    assert (missing.ready, missing.reason) == (False, "missing")
    assert str(tmp_path / "absent.db") in missing.detail and str(tmp_path) not in missing.reason
