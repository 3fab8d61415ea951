"""Start and stop real processes for end-to-end tests: the daemon, Prometheus, Alertmanager.

Every process is stopped by PID (SIGTERM, then SIGKILL after a grace period) even when a test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support import wait_for


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Process:
    proc: subprocess.Popen[bytes]
    log: Path
    url: str

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, grace: float = 5.0) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        return int(self.proc.returncode)


def http_get(url: str, timeout: float = 5.0, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()


def wait_until_up(process: Process, path: str, timeout: float = 30.0) -> None:
    def up() -> bool:
        if process.proc.poll() is not None:
            raise RuntimeError(f"process exited with {process.proc.returncode}:\n{process.output()}")
        with contextlib.suppress(OSError):
            return http_get(process.url + path, timeout=1.0)[0] == 200
        return False

    wait_for(up, timeout, lambda: f"{process.url}{path} to answer 200:\n{process.output()}")


def start(argv: list[str], log: Path, url: str, env: dict[str, str] | None = None) -> Process:
    with log.open("wb") as handle:  # the child writes through its own copy of the descriptor
        proc = subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    return Process(proc, log, url)


def daemon_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("STATE_EXPORTER_")}


@contextlib.contextmanager
def running_daemon(tmp: Path, *args: str, config: str | None = None, wait_path: str = "/healthz") -> Iterator[Process]:
    port = free_port()
    argv = [sys.executable, "-m", "exporter", "run", "--listen", f"127.0.0.1:{port}", *args]
    if config is not None:
        path = tmp / f"daemon-{port}.yaml"
        path.write_text(config)
        argv += ["--config", str(path)]
    process = start(argv, tmp / f"daemon-{port}.log", f"http://127.0.0.1:{port}", env=daemon_env())
    try:
        wait_until_up(process, wait_path)
        yield process
    finally:
        process.stop()


@contextlib.contextmanager
def running_prometheus(binary: str, tmp: Path, config: str, *extra: str) -> Iterator[Process]:
    port = free_port()
    workdir = tmp / f"prometheus-{port}"
    workdir.mkdir()
    (workdir / "prometheus.yml").write_text(config)
    argv = [
        binary,
        f"--config.file={workdir / 'prometheus.yml'}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        *extra,
    ]
    process = start(argv, workdir / "prometheus.log", f"http://127.0.0.1:{port}")
    try:
        wait_until_up(process, "/-/ready")
        yield process
    finally:
        process.stop()


def promql(prometheus: Process, query: str) -> list[dict[str, Any]]:
    url = f"{prometheus.url}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    status, body = http_get(url)
    data = json.loads(body)
    if status != 200 or data.get("status") != "success":
        raise AssertionError(f"query {query!r} failed: {body}")
    result: list[dict[str, Any]] = data["data"]["result"]
    return result


def wait_for_series(prometheus: Process, query: str, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Wait until ``query`` returns a series (use a comparison in the query to wait for a value)."""
    return wait_for(
        lambda: promql(prometheus, query),
        timeout,
        lambda: f"data for {query!r}:\n{prometheus.output()[-3000:]}",
        interval=0.3,
    )


ALERTMANAGER_CONFIG = "route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n"


@contextlib.contextmanager
def running_alertmanager(
    binary: str, tmp: Path, config: str = ALERTMANAGER_CONFIG, port: int | None = None
) -> Iterator[Process]:
    """A real Alertmanager on 127.0.0.1, without HA gossip, its storage in ``tmp``."""
    port = port or free_port()
    workdir = tmp / f"alertmanager-{port}"
    workdir.mkdir()
    (workdir / "alertmanager.yml").write_text(config)
    argv = [
        binary,
        f"--config.file={workdir / 'alertmanager.yml'}",
        f"--storage.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",  # no HA gossip port
    ]
    process = start(argv, workdir / "alertmanager.log", f"http://127.0.0.1:{port}")
    try:
        wait_until_up(process, "/-/ready")
        yield process
    finally:
        process.stop()
