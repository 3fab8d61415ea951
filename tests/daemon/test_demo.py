"""`make run`'s command: the demo DB moves within seconds."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from processes import daemon_env, free_port, http_get, start, wait_until_up
from support import parse_exposition


def total(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


def test_demo_metrics_move(tmp_path: Path) -> None:
    port = free_port()
    demo = start(
        [sys.executable, "-m", "exporter", "demo", "--dir", str(tmp_path / "demo"), "--listen", f"127.0.0.1:{port}"],
        tmp_path / "demo.log",
        f"http://127.0.0.1:{port}",
        env=daemon_env(),
    )
    try:
        wait_until_up(demo, "/readyz")
        first = parse_exposition(http_get(demo.url + "/metrics")[1])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            time.sleep(1)
            later = parse_exposition(http_get(demo.url + "/metrics")[1])
            if total(later, "flujo_runs") > total(first, "flujo_runs") + 3 and total(later, "flujo_background_tasks"):
                break
        assert total(later, "flujo_runs") > total(first, "flujo_runs") + 3
        assert total(later, "flujo_steps_finished_total") > 0
        assert total(later, "flujo_background_tasks") > 0
        assert "metrics at http://127.0.0.1" in demo.output()
        assert (tmp_path / "demo" / "flujo_ops.db").exists()
    finally:
        assert demo.stop() == 0, demo.output()
