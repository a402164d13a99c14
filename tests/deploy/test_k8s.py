"""deploy/k8s: every manifest validates against the Kubernetes schemas (offline, strict: unknown fields fail), and
the pieces agree with each other and with the service: selectors, ports, probe paths the app answers, settings the
service accepts, the image's user, the alert rules of deploy/prometheus, the capture component (capture/) and the
flywheel's Jobs, whose arguments the training CLI itself parses."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from service.settings import Settings
from tests.deploy.conftest import K8S_DIR, PROMETHEUS_DIR, dockerfile_stages, image_repository, load_yaml, run
from tests.e2e.server import REPO
from tests.service.conftest import clone_artifact, make_settings, running
from training.cli import build_parser
from training.config import load_config

CAPTURE_DIR = K8S_DIR / "capture"
# The serving stack, the Jobs and the review pod, and the capture component's PVC (its patch is no object).
MANIFEST_PATHS = [
    *sorted(path for path in K8S_DIR.glob("*.yaml") if path.name != "kustomization.yaml"),
    CAPTURE_DIR / "pvc-captures.yaml",
]
# Started with `kubectl create -f`, never applied with the stack (a Job would rerun on every apply).
RUNS = ("job-train.yaml", "job-retrain.yaml", "job-promote.yaml", "pod-review.yaml")
# Oldest and newest Kubernetes release whose schemas kubernetes-validate bundles.
K8S_VERSIONS = (kubernetes_validate.utils.all_versions()[0], kubernetes_validate.latest_version())
# Prometheus Operator kinds: no bundled schema, checked structurally below.
OPERATOR_API = "monitoring.coreos.com/v1"
QUANTITY = re.compile(r"\d+(\.\d+)?(m|k|Ki|M|Mi|G|Gi|T|Ti)?")


def manifests() -> dict[str, dict[str, Any]]:
    """kind -> the one manifest of that kind in the serving stack (kustomization.yaml; each file holds one object)."""
    by_kind: dict[str, dict[str, Any]] = {}
    for name in load_yaml(K8S_DIR / "kustomization.yaml")["resources"]:
        manifest = load_yaml(K8S_DIR / name)
        assert manifest["kind"] not in by_kind, f"two {manifest['kind']} manifests"
        by_kind[manifest["kind"]] = manifest
    return by_kind


@pytest.fixture(scope="module")
def k8s() -> dict[str, dict[str, Any]]:
    return manifests()


@pytest.fixture(scope="module")
def runs() -> dict[str, dict[str, Any]]:
    """file name -> manifest of the Jobs and the review pod."""
    return {name: load_yaml(K8S_DIR / name) for name in RUNS}


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    """The pod spec of a Pod, or of a Deployment's or Job's template."""
    return workload["spec"] if workload["kind"] == "Pod" else workload["spec"]["template"]["spec"]


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    return (
        workload["metadata"]["labels"]
        if workload["kind"] == "Pod"
        else workload["spec"]["template"]["metadata"]["labels"]
    )


def pod_containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    pod = pod_spec(workload)
    return [*pod.get("initContainers", []), *pod["containers"]]


def claimed(workload: dict[str, Any]) -> dict[str, str]:
    """volume name -> claim name."""
    volumes = pod_spec(workload)["volumes"]
    return {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in volumes if "persistentVolumeClaim" in v}


def mounts(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """volume name -> the container's mount of it."""
    return {m["name"]: m for m in container.get("volumeMounts", [])}


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
        "Job",
        "Job",
        "PersistentVolumeClaim",
        "PersistentVolumeClaim",
        "Pod",
        "Service",
    ]


def test_kustomization_lists_the_serving_stack_and_leaves_training_runs_out(runs: dict[str, dict[str, Any]]) -> None:
    kustomization = load_yaml(K8S_DIR / "kustomization.yaml")
    assert kustomization["kind"] == "Kustomization"
    top_level = [p.name for p in MANIFEST_PATHS if p.parent == K8S_DIR]
    assert sorted(kustomization["resources"]) == sorted(name for name in top_level if name not in RUNS)
    assert "components" not in kustomization  # capture is off unless capture/ is added
    # Started with `kubectl create -f` once per run, so each run gets a fresh name.
    for name in ("job-train.yaml", "job-retrain.yaml", "job-promote.yaml"):
        metadata = runs[name]["metadata"]
        assert "name" not in metadata and metadata["generateName"] == f"oegate-{name.removeprefix('job-')[:-5]}-"


def test_selectors_tie_the_deployment_service_and_servicemonitor_together(
    k8s: dict[str, dict[str, Any]], runs: dict[str, dict[str, Any]]
) -> None:
    deployment, service, monitor = k8s["Deployment"], k8s["Service"], k8s["ServiceMonitor"]
    labels = pod_labels(deployment)
    assert subset(deployment["spec"]["selector"]["matchLabels"], labels)
    assert subset(service["spec"]["selector"], labels)
    assert subset(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    # The Service must not send traffic to training, promotion or review pods.
    for name, run_manifest in runs.items():
        assert not subset(service["spec"]["selector"], pod_labels(run_manifest)), name


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


def test_models_come_from_one_pvc_that_the_training_job_writes(
    k8s: dict[str, dict[str, Any]], runs: dict[str, dict[str, Any]]
) -> None:
    claim = k8s["PersistentVolumeClaim"]
    assert "ReadWriteMany" in claim["spec"]["accessModes"]  # replicas and the Job on different nodes
    train_job = runs["job-train.yaml"]
    assert claimed(k8s["Deployment"]) == claimed(train_job) == {"models": claim["metadata"]["name"]}
    (train,) = pod_spec(train_job)["containers"]
    train_mount = mounts(train)["models"]
    # Training publishes into models/ under the train image's WORKDIR.
    (workdir,) = dockerfile_stages()[0].arguments("WORKDIR")
    assert train_mount["mountPath"] == f"{workdir}/models" and not train_mount.get("readOnly", False)
    assert (REPO / train["args"][train["args"].index("--config") + 1]).is_file()
    for name in ("job-train.yaml", "job-retrain.yaml", "job-promote.yaml"):
        assert pod_spec(runs[name])["restartPolicy"] in ("Never", "OnFailure"), name


@pytest.mark.parametrize("name", ["deployment.yaml", *RUNS])
def test_pods_run_as_the_images_user_with_a_read_only_root(name: str) -> None:
    stages = {stage.name: stage for stage in dockerfile_stages()}
    workload = load_yaml(K8S_DIR / name)
    uid, gid = stages["service" if workload["kind"] == "Deployment" else "train"].user()
    pod = pod_spec(workload)
    security = pod["securityContext"]
    assert (security["runAsNonRoot"], security["runAsUser"], security["runAsGroup"]) == (True, uid, gid)
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    volumes = {v["name"]: v for v in pod["volumes"]}
    for container in pod_containers(workload):
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


def test_images_are_the_ones_compose_builds(k8s: dict[str, dict[str, Any]], runs: dict[str, dict[str, Any]]) -> None:
    compose = load_yaml(REPO / "docker-compose.yml")["services"]
    for container in pod_containers(k8s["Deployment"]):
        assert image_repository(container["image"]) == image_repository(compose["service"]["image"])
    for run_manifest in runs.values():
        for container in pod_containers(run_manifest):
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


def json_patch(document: Any, operations: list[dict[str, Any]]) -> Any:
    """RFC 6902 `add` operations (all the capture component uses) applied to a copy of `document`."""
    result = json.loads(json.dumps(document))
    for operation in operations:
        assert operation["op"] == "add", operation
        *parents, last = [part.replace("~1", "/").replace("~0", "~") for part in operation["path"].split("/")[1:]]
        target = result
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if isinstance(target, list):
            target.insert(len(target) if last == "-" else int(last), operation["value"])
        else:
            target[last] = operation["value"]
    return result


def expand(value: str, defined: dict[str, str]) -> str:
    """Kubernetes' expansion of `$(NAME)` in an env value: names defined earlier in the list; others stay as is."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: defined.get(m.group(1), m.group(0)), value)


@pytest.fixture(scope="module")
def captured_deployment(k8s: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The Deployment with the capture component's patch applied."""
    component = load_yaml(CAPTURE_DIR / "kustomization.yaml")
    (patch,) = component["patches"]
    assert patch["target"] == {"group": "apps", "version": "v1", "kind": "Deployment", "name": "oegate"}
    assert k8s["Deployment"]["metadata"]["name"] == "oegate"
    return json_patch(k8s["Deployment"], load_yaml(CAPTURE_DIR / patch["path"]))


def test_capture_is_off_by_default(k8s: dict[str, dict[str, Any]]) -> None:
    assert not any(key.startswith("OEGATE_CAPTURE") for key in k8s["ConfigMap"]["data"])
    container = service_container(k8s)
    assert "env" not in container  # the component adds it whole (a JSON patch `add` would replace one)
    assert "captures" not in claimed(k8s["Deployment"])


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_the_capture_component_yields_a_valid_deployment(captured_deployment: dict[str, Any], version: str) -> None:
    component = load_yaml(CAPTURE_DIR / "kustomization.yaml")
    assert (component["apiVersion"], component["kind"]) == ("kustomize.config.k8s.io/v1alpha1", "Component")
    assert component["resources"] == ["pvc-captures.yaml"]
    try:
        kubernetes_validate.validate(captured_deployment, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        pytest.fail(f"deployment.yaml + capture/ (Kubernetes {version}): {e.message}")


def test_capture_on_gives_each_replica_its_own_store_on_the_captures_pvc(
    k8s: dict[str, dict[str, Any]], captured_deployment: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    (container,) = pod_spec(captured_deployment)["containers"]
    env = container["env"]
    names = [item["name"] for item in env]
    # $(POD_NAME) expands only to a variable defined earlier in the list.
    assert names.index("POD_NAME") < names.index("OEGATE_CAPTURE_DIR")
    pod_name = {item["name"]: item for item in env}["POD_NAME"]
    assert pod_name["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    claim = load_yaml(CAPTURE_DIR / "pvc-captures.yaml")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]  # every replica, and the retrain Job, mount it
    assert claimed(captured_deployment) == {"models": "oegate-models", "captures": claim["metadata"]["name"]}
    captures_mount = mounts(container)["captures"]
    assert not captures_mount.get("readOnly", False)
    # What one replica's container reads: the ConfigMap, then env (which wins), with $(VAR) expanded.
    for key in [key for key in os.environ if key.startswith("OEGATE_")]:
        monkeypatch.delenv(key)
    for key, value in k8s["ConfigMap"]["data"].items():
        monkeypatch.setenv(key, value)
    defined = {"POD_NAME": "oegate-7c9d5b6f4-x2x8q"}
    for item in env:
        if "value" in item:
            defined[item["name"]] = expand(item["value"], defined)
            monkeypatch.setenv(item["name"], defined[item["name"]])
    settings = Settings()
    assert settings.capture_dir == Path(captures_mount["mountPath"]) / "oegate-7c9d5b6f4-x2x8q"
    assert settings.workers == 1  # the store has one writer process
    # Room for every replica's store at its cap, twice over (a replaced pod's store stays until pruned).
    storage = claim["spec"]["resources"]["requests"]["storage"]
    assert storage.endswith("Gi")
    most_replicas = k8s["HorizontalPodAutoscaler"]["spec"]["maxReplicas"]
    assert int(storage.removesuffix("Gi")) * 2**30 >= 2 * most_replicas * settings.capture_max_bytes


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (its built-in kustomize) is not installed")
def test_kustomize_renders_the_capture_component_as_patched_here(
    captured_deployment: dict[str, Any], tmp_path: Path
) -> None:
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n  - {os.path.relpath(K8S_DIR, overlay)}\n"
        f"components:\n  - {os.path.relpath(CAPTURE_DIR, overlay)}\n"
    )
    result = run(["kubectl", "kustomize", str(overlay)])
    assert result.returncode == 0, result.stderr
    rendered = {(doc["kind"], doc["metadata"]["name"]): doc for doc in yaml.safe_load_all(result.stdout)}
    assert rendered[("Deployment", "oegate")] == captured_deployment
    assert rendered[("PersistentVolumeClaim", "oegate-captures")] == load_yaml(CAPTURE_DIR / "pvc-captures.yaml")


def training_args(workload: dict[str, Any]) -> Any:
    """The main container's args, parsed by the training CLI's own parser (exits on one it refuses)."""
    container = pod_spec(workload)["containers"][0]
    return build_parser().parse_args(container["args"])


def test_every_claim_is_a_pvc_of_deploy_k8s(runs: dict[str, dict[str, Any]]) -> None:
    claims = {
        load_yaml(path)["metadata"]["name"]
        for path in MANIFEST_PATHS
        if load_yaml(path)["kind"] == "PersistentVolumeClaim"
    }
    assert claims == {"oegate-models", "oegate-captures"}
    for name, workload in runs.items():
        assert set(claimed(workload).values()) <= claims, name
        volumes = {v["name"] for v in pod_spec(workload)["volumes"]}
        for container in pod_containers(workload):
            assert set(mounts(container)) <= volumes, (name, container["name"])


def test_the_retrain_job_reads_every_store_read_only_and_publishes_to_hidden_staging(
    runs: dict[str, dict[str, Any]],
) -> None:
    job = runs["job-retrain.yaml"]
    (workdir,) = dockerfile_stages()[0].arguments("WORKDIR")
    args = training_args(job)
    assert (args.command, args.config, args.resume) == ("pipeline", Path("configs/mnist-oe.toml"), False)
    assert (REPO / args.config).is_file()
    container = pod_spec(job)["containers"][0]
    volume_mounts = mounts(container)
    volumes = {v["name"]: v for v in pod_spec(job)["volumes"]}
    # The captures volume: every replica's store, read-only (mount and claim).
    captures = volume_mounts["captures"]
    assert Path(captures["mountPath"]) == args.with_captures and captures["readOnly"] is True
    assert volumes["captures"]["persistentVolumeClaim"] == {"claimName": "oegate-captures", "readOnly": True}
    # The labels file from a ConfigMap.
    labels = volume_mounts["labels"]
    assert args.labels.parent == Path(labels["mountPath"]) and labels["readOnly"] is True
    assert volumes["labels"]["configMap"]["name"] == "oegate-capture-labels"
    # The live version from the served models; the candidate to a hidden directory beside them (never served).
    models = volume_mounts["models"]
    assert Path(workdir) / args.served_models == Path(models["mountPath"]) and not models.get("readOnly", False)
    cfg = load_config(REPO / args.config, args.overrides)  # the --set values the config accepts
    staging = cfg.export.models_dir
    assert staging.parent == args.served_models and staging.name.startswith(".")
    assert cfg.export.name == "mnist-oe" and args.live is None  # the newest served mnist-oe is the live one
    newest_baked = max(int(p.name) for p in (REPO / "models" / cfg.export.name).iterdir() if p.name.isdigit())
    assert cfg.export.version is not None and cfg.export.version > newest_baked
    # The pool the config trains on is built first, into the cache the pipeline reads.
    (build_pool,) = pod_spec(job)["initContainers"]
    assert build_pool["args"][:2] == ["data", "build-pool"]
    assert mounts(build_pool)["data-cache"]["mountPath"] == volume_mounts["data-cache"]["mountPath"]


def test_the_promote_job_promotes_what_the_retrain_job_staged(runs: dict[str, dict[str, Any]]) -> None:
    retrain_args, promote_args = training_args(runs["job-retrain.yaml"]), training_args(runs["job-promote.yaml"])
    cfg = load_config(REPO / retrain_args.config, retrain_args.overrides)
    assert promote_args.command == "promote" and promote_args.force is False
    assert (promote_args.name, promote_args.version) == (cfg.export.name, cfg.export.version)
    assert (promote_args.staging, promote_args.models) == (cfg.export.models_dir, retrain_args.served_models)
    promote_mounts = mounts(pod_spec(runs["job-promote.yaml"])["containers"][0])
    retrain_mounts = mounts(pod_spec(runs["job-retrain.yaml"])["containers"][0])
    assert promote_mounts["models"]["mountPath"] == retrain_mounts["models"]["mountPath"]
    assert claimed(runs["job-promote.yaml"]) == {"models": "oegate-models"}


def test_the_review_pod_reads_the_captures_read_only(runs: dict[str, dict[str, Any]]) -> None:
    pod = runs["pod-review.yaml"]
    (container,) = pod_spec(pod)["containers"]
    assert mounts(container)["captures"]["readOnly"] is True
    captures = {v["name"]: v for v in pod_spec(pod)["volumes"]}["captures"]
    assert captures["persistentVolumeClaim"] == {"claimName": "oegate-captures", "readOnly": True}
    assert "emptyDir" in {v["name"]: v for v in pod_spec(pod)["volumes"]}[mounts(container)["review"]["name"]]
