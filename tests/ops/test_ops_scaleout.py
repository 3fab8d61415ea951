"""The scale-out examples of deploy/scale-out (README "Scaling out") are the configs that are run here: each
Prometheus file passes ``promtool check config``; a site Prometheus evaluating the fleet rules over a real daemon is
federated by a global Prometheus with the very federation config shown; an HA pair of exporters on one DB, relabelled
as shown, serves two copies of every series that differ only by ``exporter_replica`` (what Thanos deduplicates);
the exporter's sidecar config passes ``check-config``; the two OpenTelemetry Collector tiers are wired to each other.

No OpenTelemetry Collector binary can be installed here (it is not packaged for Debian nor on PyPI), so the collector
files are checked for their wiring, not run.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from processes import Process, promql, running_daemon, running_prometheus, wait_for_series
from support import SMALL, require_tool

REPO = Path(__file__).resolve().parents[2]
SCALE_OUT = REPO / "deploy" / "scale-out"
PROMETHEUS_FILES = ("prometheus-site.yml", "prometheus-global.yml", "prometheus-exporter-pair.yml")
JOB = "flujo-state-exporter"


def example(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((SCALE_OUT / name).read_text())
    return loaded


def daemon_config(db: Path) -> str:
    return f"db:\n  path: {db}\n  writer_timezone: UTC\nmetrics:\n  refresh_interval: 1s\n"


def fast(config: dict[str, Any], targets: list[str]) -> str:
    """The example with this test's targets and a 1 s rhythm; everything else as shipped."""
    config = {**config, "global": {**config.get("global", {}), "scrape_interval": "1s", "evaluation_interval": "1s"}}
    (scrape,) = config["scrape_configs"]
    scrape["static_configs"] = [{**static, "targets": [target]} for static, target in zip_targets(scrape, targets)]
    config["rule_files"] = [str((SCALE_OUT / path).resolve()) for path in config.get("rule_files", [])]
    return yaml.safe_dump(config)


def zip_targets(scrape: dict[str, Any], targets: list[str]) -> list[tuple[dict[str, Any], str]]:
    """Shipped static configs paired with real targets: one per shipped target, in order."""
    shipped = [(static, t) for static in scrape["static_configs"] for t in static["targets"]]
    assert len(shipped) >= len(targets), f"the example lists {len(shipped)} targets, the test needs {len(targets)}"
    return [(static, target) for (static, _), target in zip(shipped, targets, strict=False)]


def test_prometheus_examples_pass_promtool() -> None:
    promtool = require_tool("promtool")
    for name in PROMETHEUS_FILES:
        done = subprocess.run(
            [promtool, "check", "config", name], cwd=SCALE_OUT, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, f"{name}: {done.stdout}{done.stderr}"


def test_site_rules_are_federated_to_the_global_prometheus(tmp_path: Path, fixture_copy: Callable[[str], Path]) -> None:
    binary = require_tool("prometheus")
    db = fixture_copy(SMALL)
    with contextlib.ExitStack() as stack:
        daemon = stack.enter_context(running_daemon(tmp_path, config=daemon_config(db), wait_path="/readyz"))
        site = stack.enter_context(
            running_prometheus(binary, tmp_path, fast(example("prometheus-site.yml"), [address(daemon)]))
        )
        world = stack.enter_context(
            running_prometheus(binary, tmp_path, fast(example("prometheus-global.yml"), [address(site)]))
        )
        federated = wait_for_series(world, f'job_engine_phase:workflow_runs:sum{{site="eu-1",job="{JOB}"}}')
        at_site = {s["metric"]["phase"]: float(s["value"][1]) for s in promql(site, f'workflow_runs{{job="{JOB}"}}')}
        assert {s["metric"]["phase"]: float(s["value"][1]) for s in federated} == at_site
        assert sum(at_site.values()) > 0
        # Only the fleet rules travel: no raw exporter series, no per-exporter instance.
        assert promql(world, "workflow_runs") == []
        assert all("instance" not in s["metric"] or s["metric"]["instance"] == address(site) for s in federated)


def test_an_exporter_pair_serves_one_series_per_database_and_replica(
    tmp_path: Path, fixture_copy: Callable[[str], Path]
) -> None:
    binary = require_tool("prometheus")
    db = fixture_copy(SMALL)
    with contextlib.ExitStack() as stack:
        pair = []
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            pair.append(
                stack.enter_context(running_daemon(tmp_path / name, config=daemon_config(db), wait_path="/readyz"))
            )
        prometheus = stack.enter_context(
            running_prometheus(
                binary, tmp_path, fast(example("prometheus-exporter-pair.yml"), list(map(address, pair)))
            )
        )
        wait_for_series(prometheus, f'count(up{{job="{JOB}"}} == 1) == 2')
        wait_for_series(prometheus, f'count(workflow_runs{{job="{JOB}"}}) > 0')
        series = promql(prometheus, f'workflow_runs{{job="{JOB}"}}')
        assert {s["metric"]["instance"] for s in series} == {"flujo-prod"}
        assert {s["metric"]["exporter_replica"] for s in series} == {"a", "b"}
        assert all("database" not in s["metric"] for s in series)
        # Without the replica label (what Thanos' --query.replica-label does), each series is there once, and
        # both replicas agree on its value.
        per_phase = promql(prometheus, f'count by (phase) (workflow_runs{{job="{JOB}"}})')
        assert {float(s["value"][1]) for s in per_phase} == {2.0}
        disagree = promql(
            prometheus,
            f'max without (exporter_replica) (workflow_runs{{job="{JOB}"}})'
            f' != min without (exporter_replica) (workflow_runs{{job="{JOB}"}})',
        )
        assert disagree == []


def test_the_sidecar_config_passes_check_config() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "exporter", "check-config", str(SCALE_OUT / "state-exporter-sidecar.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_collector_tiers_are_wired_to_each_other() -> None:
    gateway, sampling = example("otelcol-gateway.yaml"), example("otelcol-sampling.yaml")
    for config in (gateway, sampling):
        for pipeline in config["service"]["pipelines"].values():
            for kind in ("receivers", "processors", "exporters"):
                for component in pipeline.get(kind, []):
                    assert component in config[kind], f"pipeline uses {kind[:-1]} {component}, not defined"
    balancing = gateway["exporters"]["loadbalancing"]
    # Tail sampling needs every span of a trace on one sampler.
    assert balancing["routing_key"] == "traceID"
    sampler_port = sampling["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].rsplit(":", 1)[1]
    assert str(balancing["resolver"]["dns"]["port"]) == sampler_port
    assert "tail_sampling" in sampling["service"]["pipelines"]["traces"]["processors"]
    sidecar = example("state-exporter-sidecar.yaml")["traces"]
    gateway_port = gateway["receivers"]["otlp"]["protocols"][sidecar["protocol"]]["endpoint"].rsplit(":", 1)[1]
    assert sidecar["endpoint"].endswith(f":{gateway_port}")


def address(process: Process) -> str:
    return process.url.removeprefix("http://")
