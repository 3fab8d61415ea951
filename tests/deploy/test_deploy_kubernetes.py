"""deploy/kubernetes: schema-valid manifests that fit together, and an exporter that works with them.

* Core kinds are validated by kubernetes-validate against the pinned Kubernetes version's OpenAPI schemas in
  strict mode (unknown fields are errors: the API server would drop them silently).
* ServiceMonitor and PrometheusRule are validated against the schemas below, transcribed from the
  prometheus-operator CRDs (monitoring.coreos.com_servicemonitors.yaml of v0.84, prometheusrules of v0.82):
  every field name of the levels we use, with the CRD's types, patterns, enums and required lists, and
  unknown fields rejected (the CRDs are structural, so the API server would prune them silently).  metadata
  and the label selector use the Kubernetes definitions.  Control tests feed both validators a misspelt field.
* Semantic checks tie the objects together (ports, names, labels, mounts, secret keys, the config's db.path),
  promtool checks the rules, and the real daemon is started with the ConfigMap's config and the Secret's
  values to check that the probes need no credentials and that the ServiceMonitor's credentials are accepted.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import importlib.resources
import json
import os
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import yaml
from processes import free_port, http_get, start, wait_until_up
from support import FIXTURES, SMALL06, in_ci, require_tool

from exporter.config import load_config

try:  # test dependencies: kubernetes-validate (which brings jsonschema and referencing)
    import jsonschema
    import kubernetes_validate
    from referencing import Registry, Resource
except ImportError as exc:  # pragma: no cover - like the external tools: skipped locally, an error in CI
    if in_ci():
        raise
    pytest.skip(f"{exc.name} not installed (pip install kubernetes-validate)", allow_module_level=True)

REPO = Path(__file__).resolve().parents[2]
KUBE = REPO / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.33.0"
EXPORTER = "state-exporter"
APP = "flujo-app"
DEFAULT_PORT = 10078
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
# Volume types that are network filesystems: SQLite's WAL (shared-memory -shm, POSIX locks) breaks on them.
NETWORK_FILESYSTEMS = {"nfs", "cephfs", "glusterfs", "azureFile", "quobyte", "flocker", "csi"}

Manifest = dict[str, Any]


# ---- loading ----


@cache
def documents() -> dict[str, list[Manifest]]:
    found = {}
    for path in sorted(KUBE.glob("*.yaml")):
        found[path.name] = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    return found


def manifests() -> list[Manifest]:
    return [doc for name, docs in documents().items() if name != "kustomization.yaml" for doc in docs]


def one(kind: str) -> Manifest:
    matching = [doc for doc in manifests() if doc["kind"] == kind]
    assert len(matching) == 1, f"expected one {kind}, found {len(matching)}"
    return copy.deepcopy(matching[0])


def pod_spec() -> Manifest:
    spec: Manifest = one("Deployment")["spec"]["template"]["spec"]
    return spec


def container(name: str) -> Manifest:
    matching = [c for c in pod_spec()["containers"] if c["name"] == name]
    assert len(matching) == 1, f"expected one container {name}"
    return matching[0]


def mount(container_spec: Manifest, volume: str) -> Manifest:
    matching = [m for m in container_spec.get("volumeMounts", []) if m["name"] == volume]
    assert len(matching) == 1, f"{container_spec['name']} mounts {volume} {len(matching)} times"
    return matching[0]


def volume(name: str) -> Manifest:
    matching = [v for v in pod_spec()["volumes"] if v["name"] == name]
    assert len(matching) == 1, f"expected one volume {name}"
    return matching[0]


def env(container_spec: Manifest) -> dict[str, Manifest]:
    return {item["name"]: item for item in container_spec.get("env", [])}


def exporter_config_text() -> str:
    config_map = one("ConfigMap")
    args = container(EXPORTER)["args"]
    config_path = Path(args[args.index("--config") + 1])
    config_mount = next(m for m in container(EXPORTER)["volumeMounts"] if Path(m["mountPath"]) == config_path.parent)
    assert volume(config_mount["name"])["configMap"]["name"] == config_map["metadata"]["name"]
    text: str = config_map["data"][config_path.name]
    return text


def secret_value(key: str) -> str:
    value: str = one("Secret")["stringData"][key]
    return value


def db_volume_name() -> str:
    claims = [v["name"] for v in pod_spec()["volumes"] if "persistentVolumeClaim" in v or "hostPath" in v]
    assert len(claims) == 1, f"expected one persistent volume for the DB, found {claims}"
    return claims[0]


# ---- parsing and listing ----


def test_every_manifest_parses_and_is_in_the_kustomization() -> None:
    files = {name for name in documents() if name != "kustomization.yaml"}
    for name in files:
        docs = documents()[name]
        assert len(docs) == 1, f"{name}: one object per file"
        assert {"apiVersion", "kind", "metadata"} <= set(docs[0]), name
        assert docs[0]["metadata"].get("name"), name
    kustomization = documents()["kustomization.yaml"][0]
    assert kustomization["kind"] == "Kustomization"
    assert sorted(kustomization["resources"]) == sorted(files)
    kinds = {doc["kind"] for doc in manifests()}
    assert {"Deployment", "Service", "ConfigMap", "Secret", "ServiceMonitor", "PrometheusRule"} <= kinds


def test_kustomize_builds_every_object(tmp_path: Path) -> None:
    kubectl = require_tool("kubectl")
    result = subprocess.run(
        [kubectl, "kustomize", str(KUBE)], capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    built = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    key = lambda doc: (doc["kind"], doc["metadata"]["name"])  # noqa: E731
    assert sorted(map(key, built)) == sorted(map(key, manifests()))


# ---- Kubernetes schemas ----


def core_manifests() -> list[Manifest]:
    return [doc for doc in manifests() if doc["kind"] not in CRD_KINDS]


@pytest.mark.parametrize("manifest", core_manifests(), ids=lambda doc: doc["kind"])
def test_core_objects_match_the_kubernetes_schema(manifest: Manifest) -> None:
    kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


def test_kubernetes_schema_rejects_unknown_fields() -> None:
    """Control: strict mode is on, so a misspelt field (which the API server would drop) fails."""
    deployment = one("Deployment")
    exporter = next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == EXPORTER)
    exporter["livenesProbe"] = exporter.pop("livenessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


# ---- the operator's CRDs ----

K8S_DEFS = "https://kubernetes.io/api/_definitions.json#/$defs/"
DURATION = {
    "type": "string",
    "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$",
}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
SECRET_KEY = {
    "type": "object",
    "required": ["key"],
    "additionalProperties": False,
    "properties": {"key": {"type": "string"}, "name": {"type": "string"}, "optional": {"type": "boolean"}},
}
RELABEL_ACTIONS = ["replace", "keep", "drop", "hashmod", "labelmap", "labeldrop", "labelkeep"]
RELABEL_ACTIONS += ["lowercase", "uppercase", "keepequal", "dropequal"]
RELABEL = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "action": {
            "type": "string",
            "enum": [
                *RELABEL_ACTIONS,
                "Replace",
                "Keep",
                "Drop",
                "HashMod",
                "LabelMap",
                "LabelDrop",
                "LabelKeep",
                "Lowercase",
                "Uppercase",
                "KeepEqual",
                "DropEqual",
            ],
        },
        "modulus": {"type": "integer"},
        "regex": {"type": "string"},
        "replacement": {"type": "string"},
        "separator": {"type": "string"},
        "sourceLabels": {"type": "array", "items": {"type": "string", "pattern": "^[a-zA-Z_][a-zA-Z0-9_]*$"}},
        "targetLabel": {"type": "string"},
    },
}
OBJECT = {"type": "object"}
ENDPOINT = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "authorization": OBJECT,
        "basicAuth": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"username": SECRET_KEY, "password": SECRET_KEY},
        },
        "bearerTokenFile": {"type": "string"},
        "bearerTokenSecret": SECRET_KEY,
        "enableHttp2": {"type": "boolean"},
        "filterRunning": {"type": "boolean"},
        "followRedirects": {"type": "boolean"},
        "honorLabels": {"type": "boolean"},
        "honorTimestamps": {"type": "boolean"},
        "interval": DURATION,
        "metricRelabelings": {"type": "array", "items": RELABEL},
        "noProxy": {"type": "string"},
        "oauth2": OBJECT,
        "params": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}},
        "path": {"type": "string"},
        "port": {"type": "string"},
        "proxyConnectHeader": OBJECT,
        "proxyFromEnvironment": {"type": "boolean"},
        "proxyUrl": {"type": "string", "pattern": "^(http|https|socks5)://.+$"},
        "relabelings": {"type": "array", "items": RELABEL},
        "scheme": {"type": "string", "enum": ["http", "https"]},
        "scrapeTimeout": DURATION,
        "targetPort": {"type": ["integer", "string"]},
        "tlsConfig": OBJECT,
        "trackTimestampsStaleness": {"type": "boolean"},
    },
}
SERVICE_MONITOR_SPEC = {
    "type": "object",
    "required": ["endpoints", "selector"],
    "additionalProperties": False,
    "properties": {
        "attachMetadata": OBJECT,
        "bodySizeLimit": {"type": "string"},
        "convertClassicHistogramsToNHCB": {"type": "boolean"},
        "endpoints": {"type": "array", "items": ENDPOINT},
        "fallbackScrapeProtocol": {"type": "string"},
        "jobLabel": {"type": "string"},
        "keepDroppedTargets": {"type": "integer"},
        "labelLimit": {"type": "integer"},
        "labelNameLengthLimit": {"type": "integer"},
        "labelValueLengthLimit": {"type": "integer"},
        "namespaceSelector": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"any": {"type": "boolean"}, "matchNames": {"type": "array", "items": {"type": "string"}}},
        },
        "nativeHistogramBucketLimit": {"type": "integer"},
        "nativeHistogramMinBucketFactor": {"type": ["integer", "string"]},
        "podTargetLabels": {"type": "array", "items": {"type": "string"}},
        "sampleLimit": {"type": "integer"},
        "scrapeClass": {"type": "string", "minLength": 1},
        "scrapeClassicHistograms": {"type": "boolean"},
        "scrapeProtocols": {"type": "array", "items": {"type": "string"}},
        "selector": {"$ref": K8S_DEFS + "io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector"},
        "selectorMechanism": {"type": "string", "enum": ["RelabelConfig", "RoleSelector"]},
        "targetLabels": {"type": "array", "items": {"type": "string"}},
        "targetLimit": {"type": "integer"},
    },
}
RULE = {
    "type": "object",
    "required": ["expr"],
    "additionalProperties": False,
    "properties": {
        "alert": {"type": "string"},
        "annotations": STRING_MAP,
        "expr": {"type": ["integer", "string"]},
        "for": DURATION,
        "keep_firing_for": {**DURATION, "minLength": 1},
        "labels": STRING_MAP,
        "record": {"type": "string"},
    },
    # Only one of record and alert (the CRD's description; Prometheus enforces it).
    "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
}
PROMETHEUS_RULE_SPEC = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "groups": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "additionalProperties": False,
                "properties": {
                    "interval": DURATION,
                    "labels": STRING_MAP,
                    "limit": {"type": "integer"},
                    "name": {"type": "string", "minLength": 1},
                    "partial_response_strategy": {"type": "string"},
                    "query_offset": DURATION,
                    "rules": {"type": "array", "items": RULE},
                },
            },
        }
    },
}


def crd_schema(kind: str, spec: Manifest) -> Manifest:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": kind},
            "metadata": {"$ref": K8S_DEFS + "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"},
            "spec": spec,
        },
    }


CRD_SCHEMAS = {
    "ServiceMonitor": crd_schema("ServiceMonitor", SERVICE_MONITOR_SPEC),
    "PrometheusRule": crd_schema("PrometheusRule", PROMETHEUS_RULE_SPEC),
}


@cache
def crd_validators() -> dict[str, jsonschema.protocols.Validator]:
    folder = importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema"
    definitions = json.loads((folder / f"v{KUBERNETES_VERSION}-local-strict" / "_definitions.json").read_text())
    registry: Registry[Any] = Resource.from_contents(definitions) @ Registry()
    validators = {}
    for kind, schema in CRD_SCHEMAS.items():
        jsonschema.Draft202012Validator.check_schema(schema)
        validators[kind] = jsonschema.Draft202012Validator(schema, registry=registry)
    return validators


@pytest.mark.parametrize("kind", sorted(CRD_KINDS))
def test_operator_objects_match_the_crd_structure(kind: str) -> None:
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in crd_validators()[kind].iter_errors(one(kind))]
    assert errors == []


@pytest.mark.parametrize(
    ("kind", "path", "bad"),
    [
        ("ServiceMonitor", ["spec", "endpoints", 0, "basicAuth", "username"], {"name": "x", "kee": "y"}),
        ("ServiceMonitor", ["spec", "endpoints", 0, "interval"], "30 seconds"),
        ("ServiceMonitor", ["spec", "endpoint"], []),
        ("PrometheusRule", ["spec", "groups", 0, "rules", 0, "for"], "5 min"),
        ("PrometheusRule", ["spec", "groups", 0, "rules", 0, "labels", "severity"], 3),
        ("PrometheusRule", ["metadata", "lables"], {}),
    ],
)
def test_crd_structure_rejects_mistakes(kind: str, path: list[str | int], bad: object) -> None:
    """Control: the CRD schemas above catch misspelt fields, wrong types and bad durations."""
    manifest = one(kind)
    target: Any = manifest
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = bad
    assert list(crd_validators()[kind].iter_errors(manifest)) != []


# ---- the sidecar ----


def effective(pod: Manifest, name: str, key: str) -> Any:
    """A securityContext field as container ``name`` of ``pod`` gets it: its own value, else the Pod's."""
    [own] = [c.get("securityContext", {}) for c in pod["containers"] if c["name"] == name]
    return own[key] if key in own else pod.get("securityContext", {}).get(key)


def test_sidecar_runs_as_non_root_with_a_read_only_root_filesystem() -> None:
    exporter = container(EXPORTER)
    context = exporter["securityContext"]
    assert context["runAsNonRoot"] is True
    assert effective(pod_spec(), EXPORTER, "runAsUser") == 65532
    assert effective(pod_spec(), EXPORTER, "runAsGroup") == 65532
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context.get("privileged", False) is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod_spec()["securityContext"]["runAsNonRoot"] is True
    assert pod_spec()["automountServiceAccountToken"] is False


def test_sidecar_probes_use_healthz_and_readyz_on_the_metrics_port() -> None:
    exporter = container(EXPORTER)
    port_names = {p["name"]: p["containerPort"] for p in exporter["ports"]}
    assert port_names == {"metrics": DEFAULT_PORT}
    expected = {"livenessProbe": "/healthz", "readinessProbe": "/readyz", "startupProbe": "/healthz"}
    for probe, path in expected.items():
        http = exporter[probe]["httpGet"]
        assert http["path"] == path, probe
        assert port_names.get(http["port"], http["port"]) == DEFAULT_PORT, probe
        assert http.get("scheme", "HTTP") == "HTTP", probe


QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)(m|Ki|Mi|Gi|Ti|k|M|G|T)?$")
FACTORS = {None: 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
FACTORS |= {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def quantity(text: str | int) -> float:
    match = QUANTITY.match(str(text))
    assert match, f"not a quantity: {text!r}"
    return float(match.group(1)) * FACTORS[match.group(2)]


def test_sidecar_has_requests_and_limits() -> None:
    resources = container(EXPORTER)["resources"]
    for resource in ("cpu", "memory"):
        request, limit = quantity(resources["requests"][resource]), quantity(resources["limits"][resource])
        assert 0 < request <= limit, resource
    # The daemon's resident set is about 55 MiB (65 MiB with the OTLP exporter): leave room.
    assert quantity(resources["limits"]["memory"]) >= 128 * 2**20
    assert "requests" in container(APP)["resources"]


def test_every_writable_path_of_the_sidecar_is_a_volume() -> None:
    """With a read-only root filesystem, /tmp and the daemon's state directory must be mounts; the DB volume
    is the only other writable one."""
    exporter = container(EXPORTER)
    writable = {m["mountPath"]: volume(m["name"]) for m in exporter["volumeMounts"] if not m.get("readOnly", False)}
    state_dir = env(exporter)["STATE_DIRECTORY"]["value"]
    db_mount = mount(exporter, db_volume_name())["mountPath"]
    assert set(writable) == {"/tmp", state_dir, db_mount}
    for path, spec in writable.items():
        if path != db_mount:
            assert "emptyDir" in spec and spec["emptyDir"].get("sizeLimit"), path


# ---- the shared DB volume ----


def test_db_volume_is_shared_at_the_same_path_and_writable_for_both() -> None:
    """A read of a WAL-mode DB whose -wal and -shm are absent creates them: the sidecar's mount must be
    writable, or /readyz fails with a read-only directory."""
    name = db_volume_name()
    app_mount, exporter_mount = mount(container(APP), name), mount(container(EXPORTER), name)
    assert app_mount["mountPath"] == exporter_mount["mountPath"]
    assert not app_mount.get("readOnly", False)
    assert not exporter_mount.get("readOnly", False)
    assert "subPath" not in app_mount and "subPath" not in exporter_mount


def identity_problems(pod: Manifest) -> list[str]:
    """Why files the sidecar makes SQLite create could be unwritable for the app: they are owned by the sidecar's
    user, with the DB file's mode (0644 by default), so only the app's own uid keeps them writable for the app.
    The volume's fsGroup is that group too, so the DB directory is writable for both."""
    problems = []
    for key in ("runAsUser", "runAsGroup"):
        app, exporter = effective(pod, APP, key), effective(pod, EXPORTER, key)
        if app is None:
            problems.append(f"the app's {key} is unset: set it in the Pod's securityContext")
        elif exporter != app:
            problems.append(f"the sidecar's {key} {exporter} is not the app's {app}")
    if pod.get("securityContext", {}).get("fsGroup") != effective(pod, APP, "runAsGroup"):
        problems.append("the Pod's fsGroup is not the app's group")
    return problems


def test_sidecar_runs_as_the_apps_user_and_group() -> None:
    assert identity_problems(pod_spec()) == []


@pytest.mark.parametrize(
    ("target", "key", "value", "problem"),
    [
        (EXPORTER, "runAsUser", 65531, "the sidecar's runAsUser"),
        (EXPORTER, "runAsGroup", 65531, "the sidecar's runAsGroup"),
        (APP, "runAsUser", 1000, "the sidecar's runAsUser 65532 is not the app's 1000"),
        (None, "fsGroup", 65531, "fsGroup"),
    ],
)
def test_identity_check_catches_a_mismatch(target: str | None, key: str, value: int, problem: str) -> None:
    """Control: an identity set on one container only (or another fsGroup) fails the check above."""
    pod = pod_spec()
    context = pod if target is None else next(c for c in pod["containers"] if c["name"] == target)
    context.setdefault("securityContext", {})[key] = value
    assert any(problem in found for found in identity_problems(pod))


def test_db_volume_is_node_local() -> None:
    spec = volume(db_volume_name())
    assert not NETWORK_FILESYSTEMS & set(spec)
    claim = one("PersistentVolumeClaim")
    assert spec["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    pv = one("PersistentVolume")
    assert claim["spec"]["volumeName"] == pv["metadata"]["name"]
    assert claim["spec"]["storageClassName"] == pv["spec"]["storageClassName"]
    assert "local" in pv["spec"] and not NETWORK_FILESYSTEMS & set(pv["spec"])
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    terms = pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"]
    assert [e["key"] for term in terms for e in term["matchExpressions"]] == ["kubernetes.io/hostname"]


def test_single_replica_without_rolling_update() -> None:
    """One SQLite writer on one node: a second Pod (scale-out or surge) would be a second writer."""
    spec = one("Deployment")["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}


def test_config_db_path_lies_on_the_shared_mount(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(exporter_config_text())
    config = load_config(path, env={})
    assert config.db.path is not None
    mount_path = Path(mount(container(EXPORTER), db_volume_name())["mountPath"])
    assert config.db.path.parent == mount_path
    # The app writes the same file: Flujo's state URI, sqlite:/// + absolute path.
    state_uri = env(container(APP))["FLUJO_STATE_URI"]["value"]
    assert state_uri == f"sqlite:///{config.db.path}"
    assert config.web.listen_address == f"0.0.0.0:{DEFAULT_PORT}"


# ---- Service, ServiceMonitor, Secret ----


def test_service_selects_the_pod_and_targets_the_metrics_port() -> None:
    service, deployment = one("Service"), one("Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    [port] = service["spec"]["ports"]
    container_ports = {p["name"]: p["containerPort"] for p in container(EXPORTER)["ports"]}
    assert container_ports[port["targetPort"]] == DEFAULT_PORT
    assert port["port"] == DEFAULT_PORT
    assert service["spec"]["publishNotReadyAddresses"] is True


def test_service_monitor_scrapes_the_service_port_with_the_secrets_credentials() -> None:
    monitor, service, secret = one("ServiceMonitor"), one("Service"), one("Secret")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"]
    assert endpoint["path"] == "/metrics"
    auth = endpoint["basicAuth"]
    for part in ("username", "password"):
        assert auth[part]["name"] == secret["metadata"]["name"]
        assert auth[part]["key"] in secret["stringData"]


def test_secret_holds_every_referenced_key_and_matching_credentials() -> None:
    secret = one("Secret")
    for item in env(container(EXPORTER)).values():
        ref = item.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            assert ref["name"] == secret["metadata"]["name"]
            assert ref["key"] in secret["stringData"] or ref.get("optional") is True, ref["key"]
    users_variable = env(container(EXPORTER))["STATE_EXPORTER_WEB__BASIC_AUTH_USERS"]["valueFrom"]["secretKeyRef"]
    config = load_config(None, env={"STATE_EXPORTER_WEB__BASIC_AUTH_USERS": secret_value(users_variable["key"])})
    auth = one("ServiceMonitor")["spec"]["endpoints"][0]["basicAuth"]
    username, password = secret_value(auth["username"]["key"]), secret_value(auth["password"]["key"])
    digest = config.web.basic_auth_users[username]
    assert bcrypt.checkpw(password.encode(), digest.encode()), "the scrape password does not match the hash"


def test_otlp_headers_placeholder_parses() -> None:
    traces_config = pytest.importorskip("exporter.traces.config")
    key = env(container(EXPORTER))["OTEL_EXPORTER_OTLP_HEADERS"]["valueFrom"]["secretKeyRef"]["key"]
    headers = traces_config.parse_key_values(secret_value(key), "OTEL_EXPORTER_OTLP_HEADERS")
    assert set(headers) == {"authorization"}


# ---- PrometheusRule ----


def rule_expressions() -> list[str]:
    return [str(rule["expr"]) for group in one("PrometheusRule")["spec"]["groups"] for rule in group["rules"]]


def test_rules_pass_promtool(tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": one("PrometheusRule")["spec"]["groups"]}))
    result = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_alert_on_db_ready_and_up() -> None:
    expressions = rule_expressions()
    assert "state_exporter_db_ready == 0" in expressions
    assert any(re.fullmatch(r'up\{job="[^"]+"\} == 0', e) for e in expressions)


def test_rules_job_label_is_the_one_the_service_monitor_produces() -> None:
    """Without jobLabel, the operator sets job to the Service's name."""
    assert "jobLabel" not in one("ServiceMonitor")["spec"]
    jobs = {job for e in rule_expressions() for job in re.findall(r'job="([^"]+)"', e)}
    assert jobs == {one("Service")["metadata"]["name"]}


def test_rules_use_metrics_the_exporter_emits() -> None:
    """Snapshot metrics from the golden expositions; span-export and job metrics from their collectors
    (tests/ops checks every name against a live daemon with both enabled)."""
    golden = "\n".join(p.read_text() for p in (REPO / "tests" / "golden").glob("*.prom"))
    emitted = set(re.findall(r"^([a-z_][a-z0-9_]*)", golden, re.MULTILINE))
    for module in ("traces", "jobs"):
        for name in re.findall(
            r'"(state_exporter_[a-z0-9_]+)"', (REPO / "exporter" / module / "metrics.py").read_text()
        ):
            emitted |= {name, f"{name}_total", f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    used = {name for e in rule_expressions() for name in re.findall(r"\b(flujo_[a-z0-9_]+)", e)}
    assert used and used <= emitted, sorted(used - emitted)


# ---- the real daemon with this bundle's config and secrets ----


def test_daemon_with_the_bundles_config_and_secret(tmp_path: Path) -> None:
    """Probes answer without credentials; the ServiceMonitor's credentials are accepted; others are not."""
    config = tmp_path / "config.yaml"
    config.write_text(exporter_config_text())
    db = tmp_path / "flujo_ops.db"
    shutil.copyfile(FIXTURES / SMALL06, db)
    exporter = container(EXPORTER)
    variables = {}
    for name, item in env(exporter).items():
        ref = item.get("valueFrom", {}).get("secretKeyRef")
        variables[name] = secret_value(ref["key"]) if ref else item["value"]
    (tmp_path / "state").mkdir()
    variables["STATE_DIRECTORY"] = str(tmp_path / "state")
    port = free_port()
    args = list(exporter["args"])
    args[args.index("--config") + 1] = str(config)
    argv = [sys.executable, "-m", "exporter", *args, "--db", str(db), "--listen", f"127.0.0.1:{port}"]
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("STATE_EXPORTER_", "OTEL_"))}
    process = start(argv, tmp_path / "daemon.log", f"http://127.0.0.1:{port}", env={**base_env, **variables})
    try:
        wait_until_up(process, exporter["readinessProbe"]["httpGet"]["path"])
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert http_get(process.url + exporter[probe]["httpGet"]["path"])[0] == 200, probe
        endpoint = one("ServiceMonitor")["spec"]["endpoints"][0]
        assert http_get(process.url + endpoint["path"])[0] == 401
        auth = endpoint["basicAuth"]
        user, password = secret_value(auth["username"]["key"]), secret_value(auth["password"]["key"])
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        status, body = http_get(process.url + endpoint["path"], headers={"Authorization": f"Basic {token}"})
        assert status == 200 and "state_exporter_db_ready 1.0" in body
        wrong = base64.b64encode(f"{user}:wrong".encode()).decode()
        assert http_get(process.url + endpoint["path"], headers={"Authorization": f"Basic {wrong}"})[0] == 401
    finally:
        with contextlib.suppress(Exception):
            process.stop()
