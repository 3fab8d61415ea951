"""prometheus/*.rules.yml (workflow, flujo, pynenc, seeknal, marianne): promtool checks them and runs their unit
tests (firing and not-firing cases for every alert); every metric name the rules and the Grafana dashboards use is
emitted by the real daemons (over the Flujo, pynenc, seeknal and Marianne fixtures); the engine-neutral rules and
overview dashboard use only the engine-neutral families; the Kubernetes PrometheusRule carries exactly the groups
of every file.

Regenerate deploy/kubernetes/prometheusrule.yaml after editing the rules with
``UPDATE_PROMETHEUSRULE=1 .venv/bin/pytest tests/ops/test_ops_rules.py -k prometheusrule``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from processes import http_get, promql
from support import parse_exposition, require_tool

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "prometheus" / "flujo.rules.yml"
WORKFLOW_RULES = REPO / "prometheus" / "workflow.rules.yml"
PYNENC_RULES = REPO / "prometheus" / "pynenc.rules.yml"
SEEKNAL_RULES = REPO / "prometheus" / "seeknal.rules.yml"
# Each rules file and its promtool unit tests; the PrometheusRule carries their groups in this order.
RULE_FILES = {
    WORKFLOW_RULES: REPO / "prometheus" / "workflow.rules.test.yml",
    RULES: REPO / "prometheus" / "flujo.rules.test.yml",
    PYNENC_RULES: REPO / "prometheus" / "pynenc.rules.test.yml",
    SEEKNAL_RULES: REPO / "prometheus" / "seeknal.rules.test.yml",
}
# Marianne's rules (kept in a block of their own: other engines append theirs the same way).
MARIANNE_RULES = REPO / "prometheus" / "marianne.rules.yml"
RULE_FILES[MARIANNE_RULES] = REPO / "prometheus" / "marianne.rules.test.yml"
DASHBOARD = REPO / "grafana" / "flujo-state-exporter.json"
OVERVIEW = REPO / "grafana" / "workflow-overview.json"
PYNENC_DASHBOARD = REPO / "grafana" / "pynenc.json"
SEEKNAL_DASHBOARD = REPO / "grafana" / "seeknal.json"
DASHBOARDS = (DASHBOARD, OVERVIEW, PYNENC_DASHBOARD, SEEKNAL_DASHBOARD)
MARIANNE_DASHBOARD = REPO / "grafana" / "marianne.json"
DASHBOARDS += (MARIANNE_DASHBOARD,)
PROMETHEUS_RULE = REPO / "deploy" / "kubernetes" / "prometheusrule.yaml"
JOB = "flujo-state-exporter"  # the scrape job the "exporter down" alerts match

# Metrics that Prometheus itself produces for every target.
PROMETHEUS_SERIES = {"up"}
# PromQL words that look like metric names: binary operators, grouping modifiers, literals.
KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
KEYWORDS |= {"inf", "nan", "atan2"}
SEVERITIES = {"critical", "warning", "info"}


@cache
def rules(path: Path = RULES) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def all_rules(path: Path | None = None) -> list[dict[str, Any]]:
    """The rules of one file, or of every file."""
    paths = [path] if path else list(RULE_FILES)
    return [rule for p in paths for group in rules(p)["groups"] for rule in group["rules"]]


def alerts(path: Path | None = None) -> list[dict[str, Any]]:
    return [rule for rule in all_rules(path) if "alert" in rule]


def rules_file_of(alert: str) -> Path:
    [path] = [path for path in RULE_FILES if alert in {rule["alert"] for rule in alerts(path)}]
    return path


def recorded_names() -> set[str]:
    return {rule["record"] for rule in all_rules() if "record" in rule}


@cache
def dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def dashboard_panels(path: Path = DASHBOARD) -> list[dict[str, Any]]:
    found = []
    for panel in dashboard(path)["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))  # collapsed rows nest their panels
    return found


def dashboard_expressions(path: Path = DASHBOARD) -> list[str]:
    exprs = [t["expr"] for p in dashboard_panels(path) for t in p.get("targets", []) if t.get("expr")]
    for variable in dashboard(path)["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            exprs.append(query["query"] if isinstance(query, dict) else query)
    return exprs


# ---- metric names in PromQL ----


def metric_names(expr: str) -> set[str]:
    """Metric names an expression (or a Grafana label_values() query) selects.

    Strings, label matchers, ranges, grouping label lists, Grafana variables, function calls and keywords are
    removed; what is left of the identifiers are metric (or recording rule) names.  ``{__name__=~"a|b"}``
    selectors contribute their alternatives.
    """
    variable_query = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", expr, re.S)
    if variable_query:
        expr = variable_query.group(1)
    names = set()
    for match in re.finditer(r'__name__\s*=~?\s*"([^"]*)"', expr):
        names.update(match.group(1).split("|"))
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\$\{?\w+\}?", " ", text)
    for match in re.finditer(r"(?<![\w:.$])([A-Za-z_:][\w:]*)(\s*\()?", text):
        token, call = match.group(1), match.group(2)
        if call or token in KEYWORDS:
            continue
        names.add(token)
    return names


def test_metric_name_extraction() -> None:
    """Control for the extractor: functions, matchers, grouping, variables, durations and keywords are not names."""
    expr = (
        'sum by (pipeline, le) (rate(flujo_run_duration_seconds_bucket{pipeline=~"$pipeline",x="a b"}[5m]))'
        ' / on (job) group_left (status) flujo:ratio:rate5m > bool 1e3 and absent(up{job="x"}) offset 5m'
        " unless time() - max without (instance) (foo_timestamp_seconds) < inf"
    )
    assert metric_names(expr) == {
        "flujo_run_duration_seconds_bucket",
        "flujo:ratio:rate5m",
        "up",
        "foo_timestamp_seconds",
    }
    assert metric_names('label_values({__name__=~"a_total|b",job=~"$job"}, pipeline)') == {"a_total", "b"}
    assert metric_names('label_values(flujo_x{job=~"$job"}, instance)') == {"flujo_x"}
    assert metric_names("histogram_quantile(0.95, sum by (le) (rate(h_bucket[$__rate_interval])))") == {"h_bucket"}


def used_names() -> dict[str, set[str]]:
    """Where each name is used: the rules files and dashboards (by file name) that use it."""
    used: dict[str, set[str]] = {}
    for path in RULE_FILES:
        for rule in all_rules(path):
            for name in metric_names(str(rule["expr"])):
                used.setdefault(name, set()).add(path.name)
    for path in DASHBOARDS:
        for expr in dashboard_expressions(path):
            for name in metric_names(expr):
                used.setdefault(name, set()).add(path.name)
    return used


# The engine-neutral families (and the scrape's own up): all the overview dashboard and the generic rules may use.
NEUTRAL = re.compile(r"(?:workflow|state_exporter)_[a-z0-9_]+|up")
OVERVIEW_FAMILIES = {
    "workflow_runs",
    "workflow_runs_stuck",
    "workflow_runs_finished_total",
    "workflow_run_duration_seconds_bucket",
    "workflow_oldest_active_update_timestamp_seconds",
    "state_exporter_engine_info",
}


def test_engine_neutral_files_use_only_engine_neutral_families() -> None:
    uses = {name for expr in dashboard_expressions(OVERVIEW) for name in metric_names(expr)}
    assert uses >= OVERVIEW_FAMILIES, sorted(OVERVIEW_FAMILIES - uses)
    assert {name for name in uses if not NEUTRAL.fullmatch(name)} == set()
    uses = {name for rule in all_rules(WORKFLOW_RULES) for name in metric_names(str(rule["expr"]))}
    assert OVERVIEW_FAMILIES - {"workflow_run_duration_seconds_bucket", "state_exporter_engine_info"} <= uses
    assert {name for name in uses if not NEUTRAL.fullmatch(name)} == set()
    # The other engines' rules need no recording rule: their alerts load on their own.  The engine-neutral file
    # records only the fleet views, and none of its alerts depends on them.
    fleet = {rule["record"] for rule in all_rules(WORKFLOW_RULES) if "record" in rule}
    assert recorded_names() == {rule["record"] for rule in all_rules(RULES) if "record" in rule} | fleet
    assert fleet and all(name.startswith("job_engine") for name in fleet)
    assert not {name for rule in alerts(WORKFLOW_RULES) for name in metric_names(str(rule["expr"]))} & fleet


def test_pynenc_files_use_only_pynenc_families() -> None:
    """The pynenc rules and dashboard speak pynenc: its own families, no recording rule of Flujo's."""
    uses = {name for rule in all_rules(PYNENC_RULES) for name in metric_names(str(rule["expr"]))}
    uses |= {name for expr in dashboard_expressions(PYNENC_DASHBOARD) for name in metric_names(expr)}
    assert uses and {name for name in uses if not name.startswith("pynenc_")} == set()


def test_seeknal_files_use_only_seeknal_families() -> None:
    """The seeknal rules and dashboard speak seeknal: its own families, no recording rule of Flujo's."""
    uses = {name for rule in all_rules(SEEKNAL_RULES) for name in metric_names(str(rule["expr"]))}
    uses |= {name for expr in dashboard_expressions(SEEKNAL_DASHBOARD) for name in metric_names(expr)}
    assert uses and {name for name in uses if not name.startswith("seeknal_")} == set()


def test_marianne_files_use_only_marianne_families() -> None:
    """The Marianne rules and dashboard speak Marianne: its own families; the dashboard's variables and its table
    of targets also read state_exporter_engine_info (Marianne has no info family of its own)."""
    uses = {name for rule in all_rules(MARIANNE_RULES) for name in metric_names(str(rule["expr"]))}
    assert uses and {name for name in uses if not name.startswith("marianne_")} == set()
    uses |= {name for expr in dashboard_expressions(MARIANNE_DASHBOARD) for name in metric_names(expr)}
    assert {name for name in uses if not name.startswith("marianne_")} == {"state_exporter_engine_info"}


def test_dashboard_and_rules_use_only_defined_recording_rules() -> None:
    recording = {name for name in used_names() if ":" in name}
    assert recording, "the dashboard uses the recording rules"
    assert recording <= recorded_names(), sorted(recording - recorded_names())
    unused = recorded_names() - recording - federated_names()
    assert unused == set(), f"recording rules nothing uses: {sorted(unused)}"


def federated_names() -> set[str]:
    """Recording rules the fleet's global Prometheus federates (deploy/scale-out/prometheus-global.yml)."""
    config = yaml.safe_load((REPO / "deploy" / "scale-out" / "prometheus-global.yml").read_text())
    patterns = [
        re.fullmatch(r'\{__name__=~"(.+)"\}', match)
        for scrape in config["scrape_configs"]
        for match in scrape.get("params", {}).get("match[]", [])
    ]
    assert patterns and all(patterns), "the federation config matches recording rules by name"
    return {name for name in recorded_names() for p in patterns if p and re.fullmatch(p[1], name)}


def daemon_sample_names(*stacks: Any) -> set[str]:
    names = set()
    for daemon in (daemon for stack in stacks for daemon in stack.daemons.values()):
        status, body = http_get(daemon.url + "/metrics")
        assert status == 200, body
        names |= {name for name, _ in parse_exposition(body)}
    return names


def test_every_metric_used_by_the_rules_and_the_dashboard_is_emitted(
    ops_stack: Any, pynenc_stack: Any, seeknal_stack: Any, marianne_stack: Any
) -> None:
    """Against the /metrics of the real daemons: span export (to a receiver that failed, then accepted) and every
    job enabled, so the conditional families are there too; the daemons over the pynenc, seeknal and Marianne
    fixtures."""
    emitted = daemon_sample_names(ops_stack, pynenc_stack, seeknal_stack, marianne_stack)
    used = {name: where for name, where in used_names().items() if name not in recorded_names()}
    assert len(used) > 40
    assert {path.name for path in (*RULE_FILES, *DASHBOARDS)} == set().union(*used.values())
    missing = {name: sorted(where) for name, where in used.items() if name not in emitted | PROMETHEUS_SERIES}
    assert missing == {}, f"names not emitted by the daemon: {missing}"
    # And the other way round, as a reminder: families nothing shows.
    assert {"flujo_workflows_stuck", "state_exporter_job_success", "state_exporter_span_backlog_spans"} <= emitted
    # Every pynenc family is used (the pynenc daemons emit nothing of Flujo's).
    pynenc = {name for name in daemon_sample_names(pynenc_stack) if name.startswith("pynenc_")}
    pynenc = {re.sub(r"_(?:sum|count)$", "_bucket", name) for name in pynenc}
    assert pynenc - set(used) == {"pynenc_runs_finished_total"}, "what workflow_runs_finished_total shows"
    # Every seeknal family is used.
    seeknal = {name for name in daemon_sample_names(seeknal_stack) if name.startswith("seeknal_")}
    seeknal = {re.sub(r"_(?:sum|count)$", "_bucket", name) for name in seeknal}
    assert seeknal and seeknal - set(used) == set()
    # Every Marianne family is used (the workspace daemon runs with the same-host pid check: the zombie gauge too).
    marianne = {name for name in daemon_sample_names(marianne_stack) if name.startswith("marianne_")}
    marianne = {re.sub(r"_(?:sum|count)$", "_bucket", name) for name in marianne}
    assert "marianne_jobs_zombie" in marianne and marianne - set(used) == set()


def test_job_metrics_name_the_job_in_job_name(ops_stack: Any) -> None:
    """`job` stays the target's label (no exported_job renaming): the maintenance job is in job_name."""
    result = promql(ops_stack.prometheus, "state_exporter_job_success")
    assert result, "no job metrics scraped"
    for series in result:
        assert series["metric"]["job"] == JOB
        assert series["metric"]["job_name"] in {"cleanup", "stale_background_tasks", "stuck_alerts"}
        assert "exported_job" not in series["metric"]


# ---- promtool ----


def run_promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    promtool = require_tool("promtool")
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=120, cwd=cwd, check=False)


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda path: path.name)
def test_promtool_check_rules(path: Path) -> None:
    result = run_promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(all_rules(path))} rules found" in result.stdout


@pytest.mark.parametrize("path", RULE_FILES.values(), ids=lambda path: path.name)
def test_promtool_test_rules(path: Path) -> None:
    result = run_promtool("test", "rules", path.name, cwd=path.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda path: path.name)
def test_promtool_test_rules_fails_on_a_wrong_expectation(tmp_path: Path, path: Path) -> None:
    """Control: the unit tests do check something (a firing case expected not to fire fails)."""
    tests = RULE_FILES[path]
    assert yaml.safe_load(tests.read_text())["rule_files"] == [path.name], "each test file loads its rules file"
    (tmp_path / path.name).write_text(path.read_text())
    text = tests.read_text()
    broken = re.sub(r"(eval_time: 20m\n\s+exp_alerts:)\n(?:\s+- exp_labels:(?:\n\s{10,}.*)+)", r"\1 []", text, count=1)
    assert broken != text
    (tmp_path / tests.name).write_text(broken)
    result = run_promtool("test", "rules", tests.name, cwd=tmp_path)
    assert result.returncode != 0


def unit_tests(path: Path = RULES) -> list[dict[str, Any]]:
    tests: list[dict[str, Any]] = yaml.safe_load(RULE_FILES[path].read_text())["tests"]
    return tests


@pytest.mark.parametrize("alert", [rule["alert"] for rule in alerts()])
def test_every_alert_has_firing_and_not_firing_unit_tests(alert: str) -> None:
    """In the unit tests of the file the alert lives in (promtool only evaluates that file's rules there)."""
    tests = unit_tests(rules_file_of(alert))
    cases = [case for test in tests for case in test.get("alert_rule_test", []) if case["alertname"] == alert]
    firing = [case for case in cases if case.get("exp_alerts")]
    assert firing, f"{alert}: no firing case"
    assert [case for case in cases if not case.get("exp_alerts")], f"{alert}: no not-firing case"
    for case in firing:
        for expected in case["exp_alerts"]:
            assert expected.get("exp_annotations"), f"{alert}: the firing case checks the rendered annotations"


def test_recording_rules_are_unit_tested() -> None:
    tested = {
        name
        for test in unit_tests()
        for case in test.get("promql_expr_test", [])
        for name in metric_names(case["expr"])
    }
    assert tested & recorded_names(), "no recording rule is checked by promql_expr_test"
    assert "flujo:pipeline_failure_ratio:rate30m" in tested


# ---- conventions of the rules ----


@pytest.mark.parametrize("rule", alerts(), ids=lambda rule: rule["alert"])
def test_alert_conventions(rule: dict[str, Any]) -> None:
    """Flujo's alerts are named Flujo*, pynenc's Pynenc*, seeknal's Seeknal*; the engine-neutral ones Workflow*, the
    daemon's own StateExporter*."""
    if rules_file_of(rule["alert"]) == RULES:
        assert re.fullmatch(r"Flujo[A-Z][A-Za-z]+", rule["alert"])
    elif rules_file_of(rule["alert"]) == PYNENC_RULES:
        assert re.fullmatch(r"Pynenc[A-Z][A-Za-z]+", rule["alert"])
    elif rules_file_of(rule["alert"]) == SEEKNAL_RULES:
        assert re.fullmatch(r"Seeknal[A-Z][A-Za-z]+", rule["alert"])
    elif rules_file_of(rule["alert"]) == MARIANNE_RULES:
        assert re.fullmatch(r"Marianne[A-Z][A-Za-z]+", rule["alert"])
    else:
        assert re.fullmatch(r"(?:Workflow|StateExporter)[A-Z][A-Za-z]+", rule["alert"])
    assert rule["labels"]["severity"] in SEVERITIES
    assert {"summary", "description"} <= set(rule["annotations"])
    assert len(rule["annotations"]["description"]) > 100, "runbook-style description"
    text = json.dumps(rule)
    assert "run_id" not in text and "invocation_id" not in text, "run ids never become labels or templates here"
    templated = set(re.findall(r"\$labels\.(\w+)", text))
    assert templated <= {"instance", "pipeline", "status", "collector", "job_name", "engine", "reason"} | {
        "app",
        "task",
        "queue",
        "node",
    }


def test_rule_groups_and_names_are_unique() -> None:
    """Across both files: Prometheus (and the PrometheusRule) load them together."""
    names = [rule.get("alert") or rule.get("record") for rule in all_rules()]
    assert len(names) == len(set(names))
    groups = [group["name"] for path in RULE_FILES for group in rules(path)["groups"]]
    assert len(set(groups)) == len(groups)


def test_issue_alerts_are_all_there() -> None:
    expected = {
        RULES: {
            "FlujoRunsStuck",  # stuck runs, by pipeline
            "FlujoPipelineFailureRatioHigh",  # a high failure ratio per pipeline
            "FlujoBackgroundTasksStale",  # stale background tasks
            "FlujoSpanExportBacklog",  # span export backlog
            "FlujoSpanExportFailing",  # span export failures
            "FlujoSpanExportDroppingSpans",
        },
        WORKFLOW_RULES: {
            "WorkflowRunsStuck",  # stuck runs, by engine and reason
            "WorkflowFailureRatioHigh",
            "WorkflowNoRunsFinishing",
            "WorkflowOldestActiveRunIdle",
            "StateExporterRefreshFailing",  # snapshot refresh failing
            "StateExporterSnapshotStale",
            "StateExporterDown",  # exporter down
            "StateExporterTargetMissing",
            "StateExporterDBNotReady",
            "StateExporterJobFailing",  # a job failing
        },
        PYNENC_RULES: {
            "PynencRunnerDeadWithWork",  # running invocations whose runner is dead
            "PynencPendingTimeout",  # pending past max_pending_seconds
            "PynencBrokerBacklogOld",  # the oldest broker message too old
            "PynencTaskFailureRatioHigh",  # failure ratio per task, with a minimum volume
        },
        SEEKNAL_RULES: {
            "SeeknalNodesStuck",  # stuck nodes
            "SeeknalNodeNotFresh",  # a node without a success for N hours
            "SeeknalRunFailed",  # a failed node execution, so a failed run
            "SeeknalLockStale",  # a backend lock held too long
        },
        MARIANNE_RULES: {
            "MarianneJobZombie",  # running with a dead pid (same-host check)
            "MarianneJobStale",  # running, not updated for metrics.stuck.running_after
            "MarianneConductorOrphanedJobs",  # registry jobs a conductor restart would fail, the conductor gone
            "MarianneSheetFailureRatioHigh",  # failed share of ended sheets, with a minimum volume
            "MarianneWorkspacesUnreadable",  # workspaces the conductor daemon could not read
        },
    }
    for path, names in expected.items():
        assert {rule["alert"] for rule in alerts(path)} == names, path.name
    groups = {
        group["name"]: {rule["alert"] for rule in group["rules"] if "alert" in rule}
        for group in rules(WORKFLOW_RULES)["groups"]
    }
    assert groups["state-exporter"] == {name for name in expected[WORKFLOW_RULES] if name.startswith("StateExporter")}


def test_no_alert_uses_the_old_daemon_names() -> None:
    """The daemon's health alerts were renamed FlujoExporter* -> StateExporter*: no file still names the old ones."""
    for path in (*RULE_FILES, *RULE_FILES.values(), *DASHBOARDS, PROMETHEUS_RULE, REPO / "README.md"):
        assert "FlujoExporter" not in path.read_text(), path.name
    for path in (REPO / "prometheus" / "README.md", REPO / "deploy" / "README.md"):
        assert "FlujoExporter" not in path.read_text(), path.name


def test_exporter_down_alerts_match_the_documented_job() -> None:
    exprs = {rule["alert"]: str(rule["expr"]) for rule in alerts()}
    assert exprs["StateExporterDown"] == f'up{{job="{JOB}"}} == 0'
    assert exprs["StateExporterTargetMissing"] == f'absent(up{{job="{JOB}"}})'
    assert f"job_name` `{JOB}`" not in WORKFLOW_RULES.read_text()  # documented in plain words at the top instead
    assert f"`{JOB}`" in WORKFLOW_RULES.read_text().split("groups:")[0]
    assert [rule["alert"] for rule in alerts() if JOB in str(rule["expr"])] == [
        "StateExporterDown",
        "StateExporterTargetMissing",
    ]


# ---- the Kubernetes PrometheusRule ----


def prometheusrule_text() -> str:
    """The PrometheusRule: its header and metadata as they are, spec.groups = the rules files' groups (verbatim,
    comments included): the engine-neutral and daemon groups, then Flujo's, pynenc's, seeknal's, Marianne's."""
    current = PROMETHEUS_RULE.read_text()
    head = current.split("\nspec:\n", 1)[0]
    body = "\n".join(path.read_text().split("\ngroups:\n", 1)[1].rstrip("\n") + "\n" for path in RULE_FILES)
    indented = "\n".join(("  " + line) if line.strip() else "" for line in body.splitlines())
    return f"{head}\nspec:\n  groups:\n{indented}\n"


def test_prometheusrule_groups_are_the_rules_file_groups() -> None:
    if os.environ.get("UPDATE_PROMETHEUSRULE") == "1":
        PROMETHEUS_RULE.write_text(prometheusrule_text())
    manifest = yaml.safe_load(PROMETHEUS_RULE.read_text())
    assert manifest["spec"]["groups"] == [group for path in RULE_FILES for group in rules(path)["groups"]], (
        "deploy/kubernetes/prometheusrule.yaml drifted from prometheus/*.rules.yml; regenerate it with "
        "UPDATE_PROMETHEUSRULE=1 .venv/bin/pytest tests/ops/test_ops_rules.py -k prometheusrule"
    )
    assert PROMETHEUS_RULE.read_text() == prometheusrule_text()


def test_prometheusrule_keeps_its_metadata() -> None:
    manifest = yaml.safe_load(PROMETHEUS_RULE.read_text())
    assert manifest["apiVersion"] == "monitoring.coreos.com/v1"
    assert manifest["kind"] == "PrometheusRule"
    assert manifest["metadata"]["name"] == "flujo-state-exporter"
    assert manifest["metadata"]["labels"]["app.kubernetes.io/name"] == "flujo-state-exporter"
    assert set(manifest) == {"apiVersion", "kind", "metadata", "spec"}


# ---- the docs ----


def readme_section() -> str:
    text = (REPO / "README.md").read_text()
    return text.split("\n## Alerting rules and dashboard\n", 1)[1].split("\n## ", 1)[0]


def test_readme_lists_every_rules_file_dashboard_and_alert() -> None:
    """README's "Alerting rules and dashboard" names every file and alert; prometheus/README.md has a table row
    for every alert."""
    section = readme_section()
    shipped = [*RULE_FILES, *RULE_FILES.values(), *(REPO / "grafana").glob("*.json")]
    for path in shipped:
        assert f"`{path.relative_to(REPO)}`" in section, path.name
    table = (REPO / "prometheus" / "README.md").read_text()
    for rule in alerts():
        assert f"`{rule['alert']}`" in section, rule["alert"]
        [row] = [line for line in table.splitlines() if line.startswith(f"| `{rule['alert']}` |")]
        cells = [cell.strip() for cell in row.strip("|").split(" | ")]
        assert (cells[1], cells[3]) == (rule["labels"]["severity"], rule.get("for", "-")), row
    documented = set(re.findall(r"`((?:Flujo|Pynenc|Seeknal|Marianne|Workflow|StateExporter)[A-Z]\w+)`", section))
    # Sent by jobs.stuck_alerts, not by Prometheus.
    daemon_alerts = {"FlujoRunStuck", "PynencInvocationStuck", "SeeknalNodeStuck", "MarianneJobStuck"}
    assert documented - daemon_alerts <= {rule["alert"] for rule in alerts()}, "README names no phantom alert"
