"""The Helm chart and the Kubernetes manifests, checked offline with the real tools.

* ``helm lint --strict`` and ``helm template`` for the default values and every
  ``charts/inspectloop/ci/*-values.yaml``; the values schema rejects unknown keys;
* every rendered manifest validates against the Kubernetes schemas bundled in
  kubernetes-validate (operator kinds, which it has no schema for, are checked by structure);
* every ``INSPECTLOOP_*`` variable a Deployment or DaemonSet sets is a setting of that service's
  settings class (a renamed setting breaks this test), secrets replaced by dummy values;
* least privilege: only the rollout controller's pod gets an API token, and its Role allows
  ModelRollouts in the release namespace and nothing else;
* the PrometheusRule's rules pass ``promtool check rules``; every PromQL expression of the
  Grafana dashboards parses in Prometheus; every ``inspectloop_*`` metric they name is exported;
* ``k8s/``: the ModelRollout CRD and the kustomizations (every referenced path exists).

Helm comes from ``scripts/setup.sh`` (``go install`` into the cache directory); when it is
missing these tests fail rather than skip.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from pydantic_settings import BaseSettings

from inspectloop.core.settings import ENV_PREFIX, load_settings
from inspectloop.edge.settings import EdgeSettings
from inspectloop.gateway.settings import GatewaySettings
from inspectloop.monitor.settings import MonitorSettings
from inspectloop.registry.settings import RegistrySettings
from inspectloop.rollout.settings import RolloutSettings
from inspectloop.trainer.settings import TrainerSettings
from tests.integration.exported_metrics import exported_metrics

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts/inspectloop"
K8S = ROOT / "k8s"
DASHBOARDS = sorted((CHART / "files/dashboards").glob("*.json"))
RULE_FILES = sorted((CHART / "files/prometheus/rules").glob("*.yaml"))
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
VARIANTS = ["default", *(p.name.removesuffix("-values.yaml") for p in CI_VALUES)]
KUBE_VERSION = "1.33.0"  # the Kubernetes version rendered for and validated against
PROMTOOL = "/usr/bin/promtool"
METRIC = re.compile(r"\binspectloop_[a-z0-9_]+")

# Kinds of operators' CRDs: kubernetes-validate has no schema for them; checked by structure.
OPERATOR_KINDS = {
    "ServiceMonitor": "monitoring.coreos.com/v1",
    "PrometheusRule": "monitoring.coreos.com/v1",
    "Kafka": "kafka.strimzi.io/v1beta2",
    "KafkaNodePool": "kafka.strimzi.io/v1beta2",
    "RayCluster": "ray.io/v1",
}
SETTINGS: dict[str, type[BaseSettings]] = {
    "registry": RegistrySettings,
    "monitor": MonitorSettings,
    "gateway": GatewaySettings,
    "trainer": TrainerSettings,
    "rollout": RolloutSettings,
    "edge": EdgeSettings,
}
WORKLOAD_KINDS = ("Deployment", "DaemonSet")
# The one Role the chart may create: the rollout controller's ModelRollout records.
ROLLOUT_RULES = [
    {"apiGroups": ["inspectloop.io"], "resources": ["modelrollouts"], "verbs": ["get", "create"]},
    {"apiGroups": ["inspectloop.io"], "resources": ["modelrollouts/status"], "verbs": ["patch"]},
]
# Dummy values for the variables a Deployment takes from Secrets.
SECRET_DUMMIES = {
    "INSPECTLOOP_REGISTRY__DATABASE_URL": "postgresql://inspectloop:secret@db:5432/inspectloop",
    "INSPECTLOOP_REGISTRY__BOOTSTRAP_USERS": json.dumps(
        [{"name": "trainer", "role": "service", "token": "t" * 40}]
    ),
    "INSPECTLOOP_TRAINER__REGISTRY_TOKEN": "r" * 40,
    "INSPECTLOOP_TRAINER__RAY_AUTH_TOKEN": "ray-token",
    "INSPECTLOOP_GATEWAY__MODELS__REGISTRY_TOKEN": "g" * 40,
    "INSPECTLOOP_ROLLOUT__REGISTRY_TOKEN": "o" * 40,
    "INSPECTLOOP_EDGE__REGISTRY_TOKEN": "e" * 40,
}
# Grafana's variables, replaced by sample values before Prometheus parses an expression.
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "6h",
    "$line": ".*",
    "$detector": ".*",
}


def helm() -> str:
    cache = Path(os.environ.get("INSPECTLOOP_CACHE_DIR", Path.home() / ".cache/inspectloop"))
    candidate = cache / "bin/helm"
    if candidate.is_file():
        return str(candidate)
    found = shutil.which("helm")
    if found is None:
        pytest.fail(f"helm not found at {candidate} or on PATH: run scripts/setup.sh")
    return found


def run(*args: str, cwd: Path = CHART) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=False, capture_output=True, text=True, cwd=cwd)


def values_args(variant: str) -> list[str]:
    return [] if variant == "default" else ["-f", str(CHART / f"ci/{variant}-values.yaml")]


@functools.cache
def rendered(variant: str) -> tuple[dict[str, Any], ...]:
    result = run(
        helm(),
        "template",
        "demo",
        str(CHART),
        "--namespace",
        "inspect",
        "--kube-version",
        KUBE_VERSION,
        *values_args(variant),
    )
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def of_kind(variant: str, kind: str) -> list[dict[str, Any]]:
    return [doc for doc in rendered(variant) if doc["kind"] == kind]


def workloads(variant: str) -> list[dict[str, Any]]:
    return [doc for doc in rendered(variant) if doc["kind"] in WORKLOAD_KINDS]


def component(doc: dict[str, Any]) -> str:
    return str(doc["metadata"]["labels"]["app.kubernetes.io/component"])


@functools.cache
def dashboard_exprs(path: Path) -> list[str]:
    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for item in items:
            yield item
            yield from panels(item.get("panels", []))

    board = json.loads(path.read_text())
    return [
        target["expr"]
        for panel in panels(board["panels"])
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


def promtool_check(tmp_path: Path, name: str, groups: list[dict[str, Any]]) -> None:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    check = run(PROMTOOL, "check", "rules", str(path), cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr


# --- helm -------------------------------------------------------------------------------------


def test_ci_variants_exist() -> None:
    assert {"minimal", "production"} <= set(VARIANTS)


@pytest.mark.parametrize("variant", VARIANTS)
def test_helm_lint_strict(variant: str) -> None:
    result = run(helm(), "lint", "--strict", str(CHART), *values_args(variant))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "override", ["nope=1", "registry.nope=1", "kafka.strimzi.nope=1", "registry.resources.x=1"]
)
def test_values_schema_rejects_unknown_keys(override: str) -> None:
    result = run(helm(), "template", "demo", str(CHART), "--kube-version", KUBE_VERSION)
    assert result.returncode == 0, result.stderr
    result = run(
        helm(), "template", "demo", str(CHART), "--kube-version", KUBE_VERSION, "--set", override
    )
    assert result.returncode != 0, f"--set {override} was accepted"
    assert "additional properties" in result.stderr, result.stderr


def test_values_schema_rejects_wrong_types() -> None:
    for override in ("registry.port=http", "common.logLevel=LOUD", "image.digest=latest"):
        result = run(
            helm(),
            "template",
            "demo",
            str(CHART),
            "--kube-version",
            KUBE_VERSION,
            "--set",
            override,
        )
        assert result.returncode != 0, f"--set {override} was accepted"


# --- rendered manifests -----------------------------------------------------------------------


def test_validator_rejects_an_invalid_manifest() -> None:
    """kubernetes-validate bundles schemas for KUBE_VERSION and refuses unknown fields."""
    bad = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {"selector": {}, "template": {"spec": {"containers": []}}, "replicaz": 1},
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBE_VERSION, strict=True)


@pytest.mark.parametrize("variant", VARIANTS)
def test_rendered_manifests_are_valid_kubernetes(variant: str) -> None:
    docs = rendered(variant)
    assert docs
    for doc in docs:
        name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == "demo", name
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "inspectloop", name
        if doc["kind"] in OPERATOR_KINDS:
            # No bundled schema for operators' kinds: check their structure only.
            assert doc["apiVersion"] == OPERATOR_KINDS[doc["kind"]], name
            assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"]), name
            assert isinstance(doc.get("spec"), dict) and doc["spec"], name
            continue
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{variant}: {name}: {exc}")


@pytest.mark.parametrize("variant", VARIANTS)
def test_workloads_follow_the_security_baseline(variant: str) -> None:
    deployments = workloads(variant)
    assert deployments
    roles = of_kind(variant, "Role")
    for deployment in deployments:
        name = deployment["metadata"]["name"]
        pod = deployment["spec"]["template"]["spec"]
        # Only the rollout controller talks to the Kubernetes API, and only with its Role.
        expected_token = component(deployment) == "rollout" and bool(roles)
        assert pod["automountServiceAccountToken"] is expected_token, name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            assert container["resources"]["requests"], name
            assert "/tmp" in {m["mountPath"] for m in container["volumeMounts"]}, name
            for port in container.get("ports", []):
                # A port of the host only where the line's software must reach its own PC.
                if "hostPort" in port:
                    assert (component(deployment), port["name"]) == ("edge", "inspect-grpc"), name
                    assert port["hostPort"] == port["containerPort"], name
        if variant == "production" and component(deployment) == "edge":
            # Line PCs run the edge image, which has none of the platform's packages.
            assert pod["containers"][0]["image"].startswith("ghcr.io/inspectloop/inspectloop-edge:")
            for var in container.get("env", []):
                if var["name"] == "INSPECTLOOP_EDGE__NODE_ID":
                    assert var["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
                elif "valueFrom" in var:
                    assert set(var["valueFrom"]) == {"secretKeyRef"}, (name, var["name"])
                lowered = var["name"].lower()
                if any(word in lowered for word in ("token", "password", "database_url")):
                    assert "valueFrom" in var, f"{name}: {var['name']} must come from a Secret"
    for account in of_kind(variant, "ServiceAccount"):
        assert account["automountServiceAccountToken"] is False


@pytest.mark.parametrize("variant", VARIANTS)
def test_only_the_rollout_controller_gets_rbac_and_only_for_model_rollouts(variant: str) -> None:
    docs = rendered(variant)
    assert not [d for d in docs if d["kind"] in {"ClusterRole", "ClusterRoleBinding"}]
    roles = of_kind(variant, "Role")
    bindings = of_kind(variant, "RoleBinding")
    if variant == "minimal":  # rollout.kubernetes.recordModelRollouts: false
        assert not roles and not bindings
        return
    (role,) = roles
    (binding,) = bindings
    assert component(role) == component(binding) == "rollout"
    assert role["rules"] == ROLLOUT_RULES
    assert "namespace" not in role["metadata"]  # the release namespace, nothing wider
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    (controller,) = [d for d in workloads(variant) if component(d) == "rollout"]
    pod = controller["spec"]["template"]["spec"]
    assert controller["spec"]["replicas"] == 1
    assert controller["spec"]["strategy"] == {"type": "Recreate"}
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": pod["serviceAccountName"], "namespace": "inspect"}
    ]
    env = {v["name"]: v.get("value") for v in pod["containers"][0]["env"]}
    assert env["INSPECTLOOP_ROLLOUT__KUBERNETES_NAMESPACE"] == "inspect"


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_inspectloop_variable_is_a_setting_of_its_service(
    variant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = set()
    for deployment in workloads(variant):
        component = deployment["metadata"]["labels"]["app.kubernetes.io/component"]
        containers = deployment["spec"]["template"]["spec"]["containers"]
        env = {
            var["name"]: var.get("value", SECRET_DUMMIES.get(var["name"], "dummy"))
            for container in containers
            for var in container.get("env", [])
        }
        ours = {k: v for k, v in env.items() if k.startswith(ENV_PREFIX)}
        if component not in SETTINGS:
            assert not ours, f"{component} is not an inspectloop service but gets {sorted(ours)}"
            continue
        seen.add(component)
        for name in list(os.environ):
            if name.startswith(ENV_PREFIX):
                monkeypatch.delenv(name)
        for name, value in ours.items():
            monkeypatch.setenv(name, value)
        settings: Any = load_settings(SETTINGS[component])  # ConfigError names a bad variable
        assert settings.bus.backend == "kafka"
        assert str(settings.data_dir) == env["INSPECTLOOP_DATA_DIR"]
        if component == "registry":
            assert settings.registry.host == "0.0.0.0"
            assert settings.database_url.startswith("postgresql://")
        if component == "monitor":
            assert settings.metrics.port > 0
        if component == "trainer":
            assert settings.trainer.registry_token is not None
            assert settings.trainer.registry_url.startswith("http://demo-inspectloop-registry.")
        if component == "gateway":
            gateway = settings.gateway
            assert gateway.http_host == "0.0.0.0"
            assert gateway.triton.url == "demo-inspectloop-triton:8001"
            assert gateway.models.repository is not None
            assert gateway.models.registry_token is not None
            assert gateway.models.registry_url.startswith("http://demo-inspectloop-registry.")
        if component == "rollout":
            rollout = settings.rollout
            assert rollout.metrics_source.kind == "prometheus"
            assert rollout.metrics_source.prometheus_url.startswith("http")
            assert rollout.registry_token is not None
            assert rollout.registry_url.startswith("http://demo-inspectloop-registry.")
            assert str(rollout.state_path).startswith(str(settings.data_dir))
        if component == "edge":
            edge = settings.edge
            labels = deployment["spec"]["template"]["metadata"]["labels"]
            node_selector = deployment["spec"]["template"]["spec"]["nodeSelector"]
            assert (
                edge.line == labels["inspectloop.io/line"] == node_selector["inspectloop.io/line"]
            )
            assert str(edge.wave) == node_selector["inspectloop.io/edge-wave"]
            assert node_selector["inspectloop.io/edge-node"] == "true"
            assert edge.registry_token is not None
            assert edge.registry_url.startswith("http://demo-inspectloop-registry.")
            assert str(edge.store_dir).startswith(str(settings.data_dir))
    expected = {"registry", "monitor", "trainer", "rollout"}
    expected |= {"gateway"} if variant != "minimal" else set()
    expected |= {"edge"} if variant in {"production", "single-node"} else set()
    assert seen == expected, f"{variant}: services rendered: {sorted(seen)}"


@pytest.mark.parametrize("variant", VARIANTS)
def test_selectors_and_port_names_match_the_workloads(variant: str) -> None:
    pods = [d["spec"]["template"] for d in workloads(variant)]
    for cluster in of_kind(variant, "RayCluster"):  # KubeRay makes these pods
        spec = cluster["spec"]
        pods += [spec["headGroupSpec"]["template"]]
        pods += [group["template"] for group in spec["workerGroupSpecs"]]

    def selected(selector: dict[str, str]) -> list[dict[str, Any]]:
        """The pod templates a selector matches: one component's (several DaemonSets for the
        edge agents' line and wave groups)."""
        matched = [p for p in pods if selector.items() <= p["metadata"]["labels"].items()]
        assert len({component(p) for p in matched}) == 1, selector
        return matched

    for service in of_kind(variant, "Service"):
        for pod in selected(service["spec"]["selector"]):
            names = {p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}
            for port in service["spec"]["ports"]:
                assert port["targetPort"] in names, (service["metadata"]["name"], port)
    for kind in ("PodDisruptionBudget", "NetworkPolicy"):
        for doc in of_kind(variant, kind):
            key = "selector" if kind == "PodDisruptionBudget" else "podSelector"
            assert selected(doc["spec"][key]["matchLabels"]), doc["metadata"]["name"]
    for daemon_set in of_kind(variant, "DaemonSet"):
        spec = daemon_set["spec"]
        matched = [
            d
            for d in of_kind(variant, "DaemonSet")
            if spec["selector"]["matchLabels"].items()
            <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert matched == [daemon_set], "DaemonSet selectors must not overlap"
    services = of_kind(variant, "Service")
    for monitor in of_kind(variant, "ServiceMonitor"):
        selector = monitor["spec"]["selector"]["matchLabels"]
        (service,) = [s for s in services if selector.items() <= s["metadata"]["labels"].items()]
        ports = {p["name"] for p in service["spec"]["ports"]}
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= ports


def test_ray_cluster_gives_the_trainer_its_address() -> None:
    (cluster,) = of_kind("production", "RayCluster")
    (trainer,) = [
        d
        for d in of_kind("production", "Deployment")
        if d["metadata"]["labels"]["app.kubernetes.io/component"] == "trainer"
    ]
    env = {v["name"]: v for v in trainer["spec"]["template"]["spec"]["containers"][0]["env"]}
    address = env["INSPECTLOOP_TRAINER__RAY_ADDRESS"]["value"]
    assert address.startswith(f"http://{cluster['metadata']['name']}-head-svc.")
    assert address.endswith(":8265")
    default_trainer = [
        d
        for d in of_kind("default", "Deployment")
        if d["metadata"]["labels"]["app.kubernetes.io/component"] == "trainer"
    ]
    default_env = {
        v["name"] for v in default_trainer[0]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert "INSPECTLOOP_TRAINER__RAY_ADDRESS" not in default_env


def test_strimzi_kafka_is_the_bootstrap_when_enabled() -> None:
    (kafka,) = of_kind("production", "Kafka")
    for deployment in of_kind("production", "Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            env = {v["name"]: v.get("value") for v in container.get("env", [])}
            if "INSPECTLOOP_BUS__KAFKA__BOOTSTRAP_SERVERS" in env:
                servers = env["INSPECTLOOP_BUS__KAFKA__BOOTSTRAP_SERVERS"]
                assert servers.startswith(f"{kafka['metadata']['name']}-kafka-bootstrap.")
    assert not of_kind("default", "Kafka")


def test_helm_test_hook_calls_the_registry_health_route() -> None:
    hooks = [p for p in of_kind("default", "Pod") if "helm.sh/hook" in p["metadata"]["annotations"]]
    assert len(hooks) == 1
    assert hooks[0]["metadata"]["annotations"]["helm.sh/hook"] == "test"
    script = " ".join(hooks[0]["spec"]["containers"][0]["args"])
    assert "/healthz" in script and "/readyz" in script
    source = (ROOT / "services/inspectloop/registry/api.py").read_text()
    assert '"/healthz"' in source and '"/readyz"' in source


# --- Prometheus and Grafana ------------------------------------------------------------------


def test_prometheus_rule_embeds_the_rule_files_and_passes_promtool(tmp_path: Path) -> None:
    (rule,) = of_kind("production", "PrometheusRule")
    groups = rule["spec"]["groups"]
    expected = [g for path in RULE_FILES for g in yaml.safe_load(path.read_text())["groups"]]
    assert groups == expected
    promtool_check(tmp_path, "prometheusrule.yaml", groups)
    exported = exported_metrics()
    for group in groups:
        for entry in group["rules"]:
            unknown = set(METRIC.findall(entry["expr"])) - exported
            assert not unknown, f"{entry.get('alert')}: {sorted(unknown)}"


def test_promtool_rejects_a_broken_expression(tmp_path: Path) -> None:
    with pytest.raises(AssertionError):
        promtool_check(
            tmp_path, "broken.yaml", [{"name": "x", "rules": [{"record": "x", "expr": "sum(("}]}]
        )


def test_dashboards_are_rendered_as_labelled_config_maps() -> None:
    assert {p.stem for p in DASHBOARDS} == {"line-quality", "drift", "pipeline-health", "rollouts"}
    maps = [
        m for m in of_kind("default", "ConfigMap") if "grafana_dashboard" in m["metadata"]["labels"]
    ]
    assert len(maps) == len(DASHBOARDS)
    for config_map in maps:
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        ((key, text),) = config_map["data"].items()
        assert json.loads(text) == json.loads((CHART / "files/dashboards" / key).read_text())
    assert not [
        m for m in of_kind("minimal", "ConfigMap") if "grafana_dashboard" in m["metadata"]["labels"]
    ]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_dashboard_queries_parse_in_prometheus(path: Path, tmp_path: Path) -> None:
    exprs = dashboard_exprs(path)
    assert exprs
    rules = []
    for i, expr in enumerate(exprs):
        query = expr
        for variable, sample in GRAFANA_VARIABLES.items():
            query = query.replace(variable, sample)
        assert "$" not in query, f"unknown Grafana variable in {expr}"
        rules.append({"record": f"dashboard:query_{i}:check", "expr": query})
    promtool_check(tmp_path, f"{path.stem}.rules.yaml", [{"name": path.stem, "rules": rules}])


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_dashboards_use_only_exported_metrics(path: Path) -> None:
    exported = exported_metrics()
    for expr in dashboard_exprs(path):
        used = set(METRIC.findall(expr))
        assert used, f"{path.name}: {expr} uses no inspectloop metric"
        unknown = used - exported
        assert not unknown, f"{path.name}: {expr} uses {sorted(unknown)}"


# --- k8s/ -------------------------------------------------------------------------------------


def k8s_documents() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(K8S.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield path, doc


def test_k8s_manifests_are_valid() -> None:
    kinds = set()
    for path, doc in k8s_documents():
        kinds.add(doc["kind"])
        if doc["kind"] in {"Kustomization", "Component"}:
            assert doc["apiVersion"].startswith("kustomize.config.k8s.io/"), path
            continue
        if doc["kind"] == "ModelRollout":
            continue  # checked against the CRD below
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{path.relative_to(ROOT)}: {exc}")
    assert {"CustomResourceDefinition", "Kustomization", "Namespace"} <= kinds


def test_kustomizations_reference_existing_paths() -> None:
    kustomizations = sorted(K8S.rglob("kustomization.yaml"))
    assert {p.parent.relative_to(K8S).as_posix() for p in kustomizations} >= {
        "base",
        "overlays/single-node",
        "overlays/production",
    }
    for path in kustomizations:
        doc = yaml.safe_load(path.read_text())
        referenced = [*doc.get("resources", []), *doc.get("components", []), *doc.get("crds", [])]
        referenced += [p["path"] for p in doc.get("patches", []) if "path" in p]
        assert referenced, path
        for ref in referenced:
            target = (path.parent / ref).resolve()
            assert target.exists(), f"{path.relative_to(ROOT)}: {ref} does not exist"
            if target.is_dir():
                assert (target / "kustomization.yaml").is_file(), f"{path}: {ref}"


def test_model_rollout_crd_is_structural_and_accepts_the_example() -> None:
    crd = yaml.safe_load((K8S / "crds/modelrollouts.inspectloop.io.yaml").read_text())
    assert crd["metadata"]["name"] == "modelrollouts.inspectloop.io"
    (version,) = [v for v in crd["spec"]["versions"] if v["storage"]]
    assert version["subresources"]["status"] == {}
    schema = version["schema"]["openAPIV3Schema"]
    spec = schema["properties"]["spec"]
    assert {"modelName", "version", "lines", "steps"} <= set(spec["properties"])
    assert {"modelName", "version", "steps"} <= set(spec["required"])
    status = schema["properties"]["status"]["properties"]
    assert {"phase", "stepIndex", "canaryWeightBps", "conditions"} <= set(status)

    def structural(node: dict[str, Any], where: str) -> None:
        if node.get("x-kubernetes-preserve-unknown-fields") or node.get(
            "x-kubernetes-int-or-string"
        ):
            return
        assert "type" in node, f"{where}: no type"
        for key, child in node.get("properties", {}).items():
            structural(child, f"{where}.{key}")
        if "items" in node:
            structural(node["items"], f"{where}[]")

    structural(schema, "")
    examples = [doc for _, doc in k8s_documents() if doc["kind"] == "ModelRollout"]
    assert examples
    for example in examples:
        jsonschema.validate(example, schema)
    broken = dict(examples[0], spec={**examples[0]["spec"], "steps": [{"weightBps": 20000}]})
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_only_the_gateway_reaches_triton_and_only_the_trainer_the_ray_dashboard() -> None:
    policies = {
        p["metadata"]["labels"]["app.kubernetes.io/component"]: p["spec"]
        for p in of_kind("production", "NetworkPolicy")
    }

    def sources(component: str, port: int) -> list[dict[str, Any]]:
        """The peers an ingress rule of ``component`` admits to ``port``."""
        return [
            peer
            for rule in policies[component]["ingress"]
            if not rule.get("ports") or port in [p["port"] for p in rule["ports"]]
            for peer in rule["from"]
        ]

    def components(peers: list[dict[str, Any]]) -> set[str]:
        return {
            p["podSelector"]["matchLabels"].get("app.kubernetes.io/component", "ANY POD")
            for p in peers
            if "podSelector" in p
        }

    for control_port in (8000, 8001):  # inference and the model-control API
        assert components(sources("triton", control_port)) == {"gateway"}
    assert components(sources("triton", 8002)) == set()  # metrics: namespaces only
    assert components(sources("ray", 8265)) == {"ray", "trainer"}  # job submission
    assert components(sources("ray", 10001)) == {"ray", "trainer"}
    assert components(sources("ray", 6379)) == {"ray"}  # GCS: the cluster itself
