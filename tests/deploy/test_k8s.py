"""deploy/k8s: every manifest validates against the Kubernetes schemas (offline, strict: unknown fields fail), and
the pieces agree with each other and with the service: selectors, ports, probe paths the app answers, settings the
service accepts, the image's user, and the alert rules of deploy/prometheus."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from service.settings import Settings
from tests.deploy.conftest import K8S_DIR, PROMETHEUS_DIR, dockerfile_stages, image_repository, load_yaml, run
from tests.e2e.server import REPO
from tests.service.conftest import clone_artifact, make_settings, running

MANIFEST_PATHS = sorted(path for path in K8S_DIR.glob("*.yaml") if path.name != "kustomization.yaml")
# Oldest and newest Kubernetes release whose schemas kubernetes-validate bundles.
K8S_VERSIONS = (kubernetes_validate.utils.all_versions()[0], kubernetes_validate.latest_version())
# Prometheus Operator kinds: no bundled schema, checked structurally below.
OPERATOR_API = "monitoring.coreos.com/v1"
QUANTITY = re.compile(r"\d+(\.\d+)?(m|k|Ki|M|Mi|G|Gi|T|Ti)?")


def manifests() -> dict[str, dict[str, Any]]:
    """kind -> the one manifest of that kind (each file holds one object)."""
    by_kind: dict[str, dict[str, Any]] = {}
    for path in MANIFEST_PATHS:
        manifest = load_yaml(path)
        assert manifest["kind"] not in by_kind, f"two {manifest['kind']} manifests"
        by_kind[manifest["kind"]] = manifest
    return by_kind


@pytest.fixture(scope="module")
def k8s() -> dict[str, dict[str, Any]]:
    return manifests()


def pod_containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    pod = workload["spec"]["template"]["spec"]
    return [*pod.get("initContainers", []), *pod["containers"]]


def service_container(k8s: dict[str, dict[str, Any]]) -> dict[str, Any]:
    (container,) = k8s["Deployment"]["spec"]["template"]["spec"]["containers"]
    return container


def container_port(container: dict[str, Any], port: int | str) -> int:
    """A probe's or Service's port (a number, or a container port's name) as the container port number."""
    numbers = {p["name"]: p["containerPort"] for p in container["ports"]}
    number = numbers[port] if isinstance(port, str) else port
    assert number in numbers.values(), f"port {port} is not a port of container {container['name']}"
    return number


def subset(small: dict[str, str], large: dict[str, str]) -> bool:
    return small.items() <= large.items()


@pytest.mark.parametrize("path", MANIFEST_PATHS, ids=lambda path: path.name)
def test_every_manifest_is_one_named_kubernetes_object(path: Path) -> None:
    documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    assert len(documents) == 1
    (manifest,) = documents
    assert manifest["apiVersion"] and manifest["kind"]
    metadata = manifest["metadata"]
    assert metadata.get("name") or metadata.get("generateName")
    assert metadata["labels"]["app.kubernetes.io/name"] == "oegate"


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_core_manifests_validate_strictly_against_the_kubernetes_schemas(version: str) -> None:
    validated = []
    for path in MANIFEST_PATHS:
        manifest = load_yaml(path)
        if manifest["apiVersion"] == OPERATOR_API:
            continue
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{path.name} (Kubernetes {version}): {e.message}")
        validated.append(manifest["kind"])
    assert sorted(validated) == [
        "ConfigMap",
        "Deployment",
        "HorizontalPodAutoscaler",
        "Job",
        "PersistentVolumeClaim",
        "Service",
    ]


def test_kustomization_lists_the_serving_stack_and_leaves_training_runs_out(k8s: dict[str, dict[str, Any]]) -> None:
    kustomization = load_yaml(K8S_DIR / "kustomization.yaml")
    assert kustomization["kind"] == "Kustomization"
    assert sorted(kustomization["resources"]) == sorted(p.name for p in MANIFEST_PATHS if p.name != "job-train.yaml")
    # Started with `kubectl create -f` once per run, so each run gets a fresh name.
    assert "name" not in k8s["Job"]["metadata"] and k8s["Job"]["metadata"]["generateName"] == "oegate-train-"


def test_selectors_tie_the_deployment_service_and_servicemonitor_together(k8s: dict[str, dict[str, Any]]) -> None:
    deployment, service, monitor = k8s["Deployment"], k8s["Service"], k8s["ServiceMonitor"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert subset(deployment["spec"]["selector"]["matchLabels"], pod_labels)
    assert subset(service["spec"]["selector"], pod_labels)
    assert subset(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    # The Service must not send traffic to training pods.
    assert not subset(service["spec"]["selector"], k8s["Job"]["spec"]["template"]["metadata"]["labels"])


def test_ports_line_up_from_the_settings_to_the_servicemonitor(k8s: dict[str, dict[str, Any]]) -> None:
    container = service_container(k8s)
    (port,) = k8s["Service"]["spec"]["ports"]
    assert port["name"] == "http"
    assert container_port(container, port["targetPort"]) == port["port"] == 8000
    assert int(k8s["ConfigMap"]["data"]["OEGATE_PORT"]) == container_port(container, "http")
    (endpoint,) = k8s["ServiceMonitor"]["spec"]["endpoints"]
    assert endpoint["port"] == port["name"]


def test_the_hpa_scales_the_deployment_on_cpu(k8s: dict[str, dict[str, Any]]) -> None:
    hpa, deployment = k8s["HorizontalPodAutoscaler"], k8s["Deployment"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        "apps/v1",
        "Deployment",
        deployment["metadata"]["name"],
    )
    (metric,) = hpa["spec"]["metrics"]
    assert (metric["type"], metric["resource"]["name"], metric["resource"]["target"]["type"]) == (
        "Resource",
        "cpu",
        "Utilization",
    )
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    assert "replicas" not in deployment["spec"]  # the HPA owns it
    # Utilization is measured against the request, so the container must make one.
    assert "cpu" in service_container(k8s)["resources"]["requests"]


@pytest.mark.anyio
async def test_probes_and_the_scrape_path_are_paths_the_service_answers(
    k8s: dict[str, dict[str, Any]], model_dir: Path
) -> None:
    container = service_container(k8s)
    probes = {kind: container[kind]["httpGet"] for kind in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert probes["readinessProbe"]["path"] == "/v2/health/ready"
    assert probes["livenessProbe"]["path"] == "/v2/health/live"
    assert all(container_port(container, probe["port"]) == 8000 for probe in probes.values())
    (endpoint,) = k8s["ServiceMonitor"]["spec"]["endpoints"]
    paths = {probe["path"] for probe in probes.values()} | {endpoint["path"]}
    async with running(make_settings(model_dir)) as (_, client):
        statuses = {path: (await client.get(path)).status_code for path in sorted(paths)}
    assert statuses == dict.fromkeys(sorted(paths), 200)


def test_the_configmap_holds_settings_the_service_accepts(
    k8s: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    data: dict[str, str] = k8s["ConfigMap"]["data"]
    for key in data:
        assert key.startswith("OEGATE_") and key.removeprefix("OEGATE_").lower() in Settings.model_fields, key
    assert service_container(k8s)["envFrom"] == [{"configMapRef": {"name": k8s["ConfigMap"]["metadata"]["name"]}}]
    for key in [key for key in os.environ if key.startswith("OEGATE_")]:
        monkeypatch.delenv(key)
    for key, value in data.items():
        monkeypatch.setenv(key, value)
    settings = Settings()  # what the container reads: fails on a value the service refuses
    assert settings.host == "0.0.0.0" and settings.providers == ["CPUExecutionProvider"]
    # onnxruntime threads match the CPU limit (its default, one per node core, would oversubscribe the quota).
    assert settings.intra_op_threads == int(service_container(k8s)["resources"]["limits"]["cpu"])
    models_mount = {m["mountPath"]: m for m in service_container(k8s)["volumeMounts"]}[str(settings.model_dir)]
    assert models_mount["readOnly"] is True
    # Multipart uploads spool to /tmp: its emptyDir must hold at least one maximal request body.
    volumes = {v["name"]: v for v in k8s["Deployment"]["spec"]["template"]["spec"]["volumes"]}
    tmp_size = volumes["tmp"]["emptyDir"]["sizeLimit"]
    assert tmp_size.endswith("Mi") and int(tmp_size.removesuffix("Mi")) * 2**20 >= settings.max_body_bytes


def test_models_come_from_one_pvc_that_the_training_job_writes(k8s: dict[str, dict[str, Any]]) -> None:
    claim = k8s["PersistentVolumeClaim"]
    assert "ReadWriteMany" in claim["spec"]["accessModes"]  # replicas and the Job on different nodes

    def claimed(workload: dict[str, Any]) -> dict[str, str]:
        """volume name -> claim name."""
        volumes = workload["spec"]["template"]["spec"]["volumes"]
        return {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in volumes if "persistentVolumeClaim" in v}

    assert claimed(k8s["Deployment"]) == claimed(k8s["Job"]) == {"models": claim["metadata"]["name"]}
    (train,) = k8s["Job"]["spec"]["template"]["spec"]["containers"]
    train_mount = {m["name"]: m for m in train["volumeMounts"]}["models"]
    # Training publishes into models/ under the train image's WORKDIR.
    (workdir,) = dockerfile_stages()[0].arguments("WORKDIR")
    assert train_mount["mountPath"] == f"{workdir}/models" and not train_mount.get("readOnly", False)
    assert (REPO / train["args"][train["args"].index("--config") + 1]).is_file()
    assert k8s["Job"]["spec"]["template"]["spec"]["restartPolicy"] in ("Never", "OnFailure")


@pytest.mark.parametrize("kind", ["Deployment", "Job"])
def test_pods_run_as_the_images_user_with_a_read_only_root(k8s: dict[str, dict[str, Any]], kind: str) -> None:
    stages = {stage.name: stage for stage in dockerfile_stages()}
    uid, gid = stages["service" if kind == "Deployment" else "train"].user()
    pod = k8s[kind]["spec"]["template"]["spec"]
    security = pod["securityContext"]
    assert (security["runAsNonRoot"], security["runAsUser"], security["runAsGroup"]) == (True, uid, gid)
    assert pod["automountServiceAccountToken"] is False
    volumes = {v["name"]: v for v in pod["volumes"]}
    for container in pod_containers(k8s[kind]):
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True, container["name"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert context["capabilities"]["drop"] == ["ALL"], container["name"]
        for section in ("requests", "limits"):
            for quantity in container["resources"][section].values():
                assert QUANTITY.fullmatch(str(quantity)), f"{container['name']}: {quantity!r} is no quantity"
        assert "memory" in container["resources"]["limits"], container["name"]
    # Writable scratch space despite the read-only root.
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


def test_images_are_the_ones_compose_builds(k8s: dict[str, dict[str, Any]]) -> None:
    compose = load_yaml(REPO / "docker-compose.yml")["services"]
    for container in pod_containers(k8s["Deployment"]):
        assert image_repository(container["image"]) == image_repository(compose["service"]["image"])
    for container in pod_containers(k8s["Job"]):
        assert image_repository(container["image"]) == image_repository(compose["train"]["image"])


def prometheus_rule_text() -> str:
    """prometheusrule.yaml as generated: its header down to `spec:`, then alerts.yml indented by two spaces."""
    current = (K8S_DIR / "prometheusrule.yaml").read_text()
    header = current[: current.index("\nspec:\n") + len("\nspec:\n")]
    alerts = (PROMETHEUS_DIR / "alerts.yml").read_text()
    # Like `sed 's/^./  &/'`: every line with at least one character gets two spaces.
    return header + "".join(f"  {line}" if line.rstrip("\n") else line for line in alerts.splitlines(keepends=True))


def test_the_prometheusrule_is_alerts_yml(k8s: dict[str, dict[str, Any]]) -> None:
    rule = k8s["PrometheusRule"]
    assert rule["apiVersion"] == OPERATOR_API
    assert rule["spec"] == load_yaml(PROMETHEUS_DIR / "alerts.yml")
    regenerate = (
        "{ sed '/^spec:$/q' deploy/k8s/prometheusrule.yaml; sed 's/^./  &/' deploy/prometheus/alerts.yml; } "
        "> rule.tmp && mv rule.tmp deploy/k8s/prometheusrule.yaml"
    )
    assert (K8S_DIR / "prometheusrule.yaml").read_text() == prometheus_rule_text(), f"regenerate: {regenerate}"


def test_the_servicemonitor_scrapes_metrics(k8s: dict[str, dict[str, Any]]) -> None:
    monitor = k8s["ServiceMonitor"]
    assert monitor["apiVersion"] == OPERATOR_API
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == load_yaml(PROMETHEUS_DIR / "prometheus.yml")["scrape_configs"][0]["metrics_path"]
    assert re.fullmatch(r"\d+s", endpoint["interval"])


def test_the_seed_init_container_copies_missing_versions_atomically(
    k8s: dict[str, dict[str, Any]], tmp_path: Path, tiny_artifact: Path
) -> None:
    (seed,) = k8s["Deployment"]["spec"]["template"]["spec"]["initContainers"]
    shell, flags, script = seed["command"]
    assert (shell, flags) == ("sh", "-euc")
    (mount,) = seed["volumeMounts"]
    assert mount["mountPath"] == "/models" and not mount.get("readOnly", False)
    image, volume = tmp_path / "image-models", tmp_path / "volume"
    clone_artifact(tiny_artifact, image, "tiny", 1)
    clone_artifact(tiny_artifact, image, "tiny", 2)
    clone_artifact(tiny_artifact, volume, "tiny", 1, threshold=0.5)  # already published: must stay as it is
    local = script.replace("/app/models/", f"{image}/").replace('"/models/', f'"{volume}/')
    assert "/app/models" not in local and '"/models' not in local
    for _ in range(2):  # a restarted pod seeds again: nothing changes
        result = run(["sh", flags, local], env={"HOSTNAME": "oegate-abc", "PATH": os.environ["PATH"]})
        assert result.returncode == 0, result.stderr
    assert sorted(p.relative_to(volume).as_posix() for p in volume.glob("*/*")) == ["tiny/1", "tiny/2"]
    assert json.loads((volume / "tiny/1/card.json").read_text())["threshold"]["value"] == 0.5
    for file in (image / "tiny/2").iterdir():
        assert (volume / "tiny/2" / file.name).read_bytes() == file.read_bytes()
