"""The deployment files: the Dockerfile and the Kubernetes manifests, checked offline.

No image is built here (no container engine): the Dockerfile is parsed and what it copies and
runs is checked against the repository. The manifests are rendered by ``kubectl kustomize``
and validated against the Kubernetes JSON schemas (``kubernetes-validate``, strict: an unknown
field fails); the Prometheus Operator objects against a vendored excerpt of their CRD schemas;
the alert expressions by ``promtool``. Then what a zone outage and a rollout rely on is
asserted: the spread over zones and nodes, the disruption budget, the probes, and a grace
period that covers the drain.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from dockerfile_parse import DockerfileParser

from buttress.backends import parse_backend_url
from buttress.config import load_settings

REPO = Path(__file__).resolve().parents[1]
KUBERNETES = REPO / "deploy" / "kubernetes"
OVERLAYS = ["base", "overlays/two-zones"]
CRDS = Path(__file__).parent / "data" / "crds"
# The oldest Kubernetes these manifests are written for (matchLabelKeys in spread
# constraints, unhealthyPodEvictionPolicy in budgets are GA/beta-on by then).
KUBERNETES_VERSION = "1.31.0"


@cache
def rendered(overlay: str) -> tuple[dict[str, Any], ...]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the manifests are rendered by kubectl kustomize")
    result = subprocess.run([kubectl, "kustomize", str(KUBERNETES / overlay)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def one(overlay: str, kind: str) -> dict[str, Any]:
    objects = [doc for doc in rendered(overlay) if doc["kind"] == kind]
    assert len(objects) == 1, f"{overlay}: {len(objects)} {kind} objects"
    return objects[0]


def settings_of(overlay: str) -> Any:
    """The buttress settings the rendered ConfigMap gives every replica."""
    config = one(overlay, "ConfigMap")["data"]["buttress.toml"]
    return _load_toml_settings(config)


def _load_toml_settings(text: str) -> Any:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "buttress.toml"
        path.write_text(text)
        return load_settings(path)


# --- Kubernetes ---------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_builtin_objects_validate_against_the_kubernetes_schemas(overlay: str) -> None:
    import kubernetes_validate

    builtin = [doc for doc in rendered(overlay) if "monitoring.coreos.com" not in doc["apiVersion"]]
    assert {doc["kind"] for doc in builtin} == {
        "ConfigMap", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Service"}
    for doc in builtin:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("kind", ["ServiceMonitor", "PrometheusRule"])
def test_prometheus_operator_objects_match_their_crd_schema(overlay: str, kind: str) -> None:
    schema = json.loads((CRDS / f"{kind.lower()}.json").read_text())
    jsonschema.validate(one(overlay, kind), schema)


def test_the_service_monitor_scrapes_the_service_port() -> None:
    monitor, service = one("overlays/two-zones", "ServiceMonitor"), one(
        "overlays/two-zones", "Service")
    labels = service["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ports = {port["name"] for port in service["spec"]["ports"]}
    assert {endpoint["port"] for endpoint in monitor["spec"]["endpoints"]} <= ports
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"


def test_alert_rules_use_metrics_buttress_exports_and_pass_promtool(tmp_path: Path) -> None:
    groups = one("overlays/two-zones", "PrometheusRule")["spec"]["groups"]
    exported = set(re.findall(r'"(buttress_[a-z_]+)"', (
        REPO / "src/buttress/observability/metrics.py").read_text()))
    for rule in (rule for group in groups for rule in group["rules"]):
        used = {re.sub(r"_(bucket|sum|count)$", "", name)
                for name in re.findall(r"buttress_[a-z_]+", rule["expr"])}
        assert used, rule["alert"]
        assert used <= exported, f"{rule['alert']} uses {used - exported}"
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (scripts/system-packages.sh installs it)")
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": groups}))
    result = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_replicas_spread_over_zones_and_nodes(overlay: str) -> None:
    pod = one(overlay, "Deployment")["spec"]["template"]
    constraints = {c["topologyKey"]: c for c in pod["spec"]["topologySpreadConstraints"]}
    zone = constraints["topology.kubernetes.io/zone"]
    assert (zone["maxSkew"], zone["whenUnsatisfiable"]) == (1, "DoNotSchedule")
    assert constraints["kubernetes.io/hostname"]["maxSkew"] == 1
    for constraint in constraints.values():  # they count this Deployment's pods
        assert constraint["labelSelector"]["matchLabels"].items() <= pod["metadata"][
            "labels"].items()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_a_disruption_budget_and_an_autoscaler_cover_the_pods(overlay: str) -> None:
    pod_labels = one(overlay, "Deployment")["spec"]["template"]["metadata"]["labels"]
    budget = one(overlay, "PodDisruptionBudget")["spec"]
    assert budget["selector"]["matchLabels"].items() <= pod_labels.items()
    assert budget["maxUnavailable"] == 1
    scaler = one(overlay, "HorizontalPodAutoscaler")["spec"]
    assert scaler["scaleTargetRef"]["name"] == one(overlay, "Deployment")["metadata"]["name"]
    assert scaler["minReplicas"] >= 4  # two zones x two replicas: a zone can still lose a node
    service = one(overlay, "Service")["spec"]
    assert service["selector"].items() <= pod_labels.items()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_secret_config_and_a_grace_period_that_covers_the_drain(overlay: str) -> None:
    pod = one(overlay, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert {"requests", "limits"} <= container["resources"].keys()
    token = {e["name"]: e for e in container["env"]}["BUTTRESS_ADMIN_TOKEN"]
    assert "secretKeyRef" in token["valueFrom"]

    settings = settings_of(overlay)
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] >= int(pre_stop[1]) + settings.drain_timeout
    # the ConfigMap is what the container reads
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    config_volume = next(v for v in pod["volumes"] if "configMap" in v)
    assert config_volume["configMap"]["name"] == one(overlay, "ConfigMap")["metadata"]["name"]
    assert f"{mounts[config_volume['name']]}/buttress.toml" in container["args"]
    port = {p["name"]: p["containerPort"] for p in container["ports"]}["http"]
    assert {e["name"]: e.get("value") for e in container["env"]}["BUTTRESS_PORT"] == str(port)


def test_the_two_zone_overlay_uses_redis_through_sentinel() -> None:
    url = parse_backend_url(settings_of("overlays/two-zones").backend)
    assert url.is_sentinel
    assert len(url.sentinels) == 3  # a majority survives either zone
    affinity = one("overlays/two-zones", "Deployment")["spec"]["template"]["spec"]["affinity"]
    (term,) = affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"]
    assert len(term["matchExpressions"][0]["values"]) == 2


def target_file(target: str) -> Path:
    """The source file of a ``module:attr`` or ``path/to/file.py:attr`` target."""
    where = target.split(":")[0]
    return REPO / (where if where.endswith(".py") else f"src/{where.replace('.', '/')}.py")


def test_the_deployment_serves_a_target_that_exists() -> None:
    (container,) = one("base", "Deployment")["spec"]["template"]["spec"]["containers"]
    assert target_file(container["args"][0]).is_file()


# --- Dockerfile -----------------------------------------------------------------------------


@cache
def dockerfile() -> DockerfileParser:
    parser = DockerfileParser(fileobj=(REPO / "Dockerfile").open("rb"))
    return parser


def instructions(name: str) -> list[str]:
    return [i["value"] for i in dockerfile().structure if i["instruction"] == name]


def ignored(path: str) -> bool:
    """Whether ``.dockerignore`` keeps ``path`` out of the build context (its simple patterns)."""
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    return any(Path(path).match(p.removeprefix("**/")) or path == p or path.startswith(f"{p}/")
               for p in patterns)


def test_the_image_is_a_slim_python_311_run_by_a_user_that_is_not_root() -> None:
    assert dockerfile().baseimage == "python:3.11-slim"
    (user,) = instructions("USER")
    assert user not in ("root", "0")
    assert re.search(rf"useradd .*--uid {user}\b", " ".join(instructions("RUN")))


def test_every_path_the_dockerfile_copies_exists_and_is_in_the_build_context() -> None:
    copied = [source for value in instructions("COPY") for source in value.split()[:-1]]
    assert copied
    for source in copied:
        assert (REPO / source).exists(), source
        assert not ignored(source), f"{source} is excluded by .dockerignore"


def test_the_image_runs_buttress_serve_and_checks_healthz() -> None:
    assert json.loads(instructions("ENTRYPOINT")[0]) == ["buttress", "serve"]
    (target,) = json.loads(instructions("CMD")[0])
    assert target_file(target).is_file()
    assert not ignored(str(target_file(target).relative_to(REPO)))
    (healthcheck,) = instructions("HEALTHCHECK")
    assert "/healthz" in healthcheck
    envs = dockerfile().envs
    assert envs["BUTTRESS_HOST"] == "0.0.0.0"
    assert instructions("EXPOSE") == [envs["BUTTRESS_PORT"]]
    # the package installed is this one, with the demo extra when pyproject.toml has one
    installs = [run for run in instructions("RUN") if "pip install" in run]
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"].get(
        "optional-dependencies", {})
    assert installs == (['pip install ".[demo]"'] if "demo" in extras else ["pip install ."])
