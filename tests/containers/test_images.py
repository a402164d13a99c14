"""The service and train images, run for real: sizes and contents, the service through the container (non-root,
read-only root filesystem), a training job whose new version the running service hot-reloads, and clean stops on
SIGTERM. `make test-container` builds the images and runs these (skipped otherwise)."""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.containers.conftest import (
    LIVE_VERSION,
    NEXT_VERSION,
    RUNTIME_UID,
    SERVICE_IMAGE,
    TRAIN_IMAGE,
    Container,
    committed_models,
    container,
    container_logs,
    docker,
    owned_copy,
    owned_dir,
    run_training,
    wait_for,
)
from tests.e2e.server import free_port

GB = 1e9
CUDA_PACKAGES = re.compile(r"^(nvidia-|triton|onnxruntime-gpu|cupy)", re.IGNORECASE | re.MULTILINE)


def png_b64(pixels: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def image_size(image: str) -> int:
    return int(docker("image", "inspect", "--format", "{{.Size}}", image).stdout)


def installed(image: str) -> str:
    """`pip list --format=freeze` in the image's venv."""
    return docker("run", "--rm", "--network", "none", "--entrypoint", "pip", image, "list", "--format=freeze").stdout


def test_image_sizes_are_reported_and_the_service_image_stays_small() -> None:
    sizes = {image: image_size(image) for image in (SERVICE_IMAGE, TRAIN_IMAGE)}
    print(json.dumps({image: f"{size / GB:.2f} GB" for image, size in sizes.items()}))
    assert sizes[SERVICE_IMAGE] < 0.6 * GB  # 0.42 GB when measured: Debian + Python + onnxruntime (CPU) + the models
    # 2.54 GB when measured: + torch CPU (0.75 GB) and the Debian data packages (R and the text registers' packages,
    # r-cran-tokenizers and dict-gcide, among them); a CUDA build of torch alone would add more than 2 GB.
    assert sizes[TRAIN_IMAGE] < 2.8 * GB


@pytest.mark.parametrize("image", [SERVICE_IMAGE, TRAIN_IMAGE])
def test_cpu_images_hold_no_cuda_wheels(image: str) -> None:
    packages = installed(image)
    assert "onnxruntime==1.31.1" in packages.splitlines()
    assert CUDA_PACKAGES.findall(packages) == []


def test_the_train_image_has_the_cpu_build_of_torch() -> None:
    assert "torch==2.13.0+cpu" in installed(TRAIN_IMAGE).splitlines()
    probe = "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.is_available())"
    result = docker("run", "--rm", "--network", "none", "--entrypoint", "python", TRAIN_IMAGE, "-c", probe)
    assert result.stdout.split() == ["2.13.0+cpu", "None", "False"]


def apt_data_packages() -> list[str]:
    """The Debian data packages `make apt-data` installs (requirements/apt-data.txt)."""
    text = (Path(__file__).parents[2] / "requirements" / "apt-data.txt").read_text()
    return [package for line in text.splitlines() if not line.startswith("#") for package in line.split()]


def test_the_train_image_holds_every_debian_data_package_the_host_installs() -> None:
    # The text recipe reads WordNet (wordnet-base), the glyph pools their fonts: a training job in the image must find
    # what `make apt-data` gives a host.
    listed = apt_data_packages()
    assert "wordnet-base" in listed and "fonts-nanum" in listed
    query = ["--entrypoint", "dpkg-query", TRAIN_IMAGE, "-W", "-f", "${Package} ${db:Status-Status}\n", *listed]
    result = docker("run", "--rm", "--network", "none", *query, check=False)
    assert sorted(result.stdout.split("\n")[:-1]) == sorted(f"{package} installed" for package in listed), result.stderr


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Container, str, Path]]:
    """The service image on the host network with a read-only root filesystem, serving a copy of the committed
    models mounted at /app/models (rescanned every second); yields the container, its URL and the models dir."""
    models = owned_copy(committed_models(), tmp_path_factory.mktemp("served") / "models")
    port = free_port()
    run_args = [
        "--network", "host", "--read-only",
        "-v", f"{models}:/app/models",
        "-e", f"OEGATE_PORT={port}", "-e", "OEGATE_POLL_INTERVAL_S=1",
        SERVICE_IMAGE,
    ]  # fmt: skip
    with container("oegate-ctest-service", run_args) as service:
        url = f"http://127.0.0.1:{port}"
        ready = lambda: httpx.get(f"{url}/v2/health/ready").status_code == 200 or None  # noqa: E731
        wait_for(ready, 120, "the service", lambda: container_logs(service.name))
        yield service, url, models


def test_the_service_runs_as_the_unprivileged_user_on_a_read_only_root(
    served: tuple[Container, str, Path],
) -> None:
    service, _, _ = served
    config = json.loads(docker("inspect", "--format", "{{json .Config.User}} {{.HostConfig.ReadonlyRootfs}}",
                               service.name).stdout.split()[0])  # fmt: skip
    assert config == f"{RUNTIME_UID}:{RUNTIME_UID}"
    assert docker("exec", service.name, "id", "-u").stdout.strip() == str(RUNTIME_UID)
    write = docker("exec", service.name, "touch", "/app/service/x", check=False)
    assert write.returncode != 0 and "Read-only file system" in write.stderr


def test_a_digit_is_accepted_and_noise_rejected_through_the_container(
    served: tuple[Container, str, Path], digit_and_noise: tuple[np.ndarray, int, np.ndarray]
) -> None:
    _, url, _ = served
    digit, label, noise = digit_and_noise
    body = {"instances": [{"image_b64": png_b64(digit)}, {"image_b64": png_b64(noise)}]}
    response = httpx.post(f"{url}/v1/models/mnist-oe/predict", json=body, timeout=30)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["model"], answer["version"]) == ("mnist-oe", LIVE_VERSION)
    accepted, rejected = answer["predictions"]
    assert (label, accepted["label"], accepted["reject"]) == (7, "7", False)
    assert rejected["reject"] is True and rejected["anomaly_score"] >= answer["threshold"]
    # The same two through the Open Inference Protocol (FP32 tensor in [0, 1]).
    tensor = (np.stack([digit, noise])[:, None] / 255.0).astype(np.float32)
    v2 = {"inputs": [{"name": "input", "shape": list(tensor.shape), "datatype": "FP32",
                      "data": tensor.ravel().tolist()}]}  # fmt: skip
    response = httpx.post(f"{url}/v2/models/mnist-oe/infer", json=v2, timeout=30)
    assert response.status_code == 200, response.text
    outputs = {output["name"]: output["data"] for output in response.json()["outputs"]}
    assert outputs["reject"] == [False, True]


def test_metrics_count_the_predictions_made_through_the_container(served: tuple[Container, str, Path]) -> None:
    _, url, _ = served
    before = httpx.get(f"{url}/metrics").text
    noise = np.full((28, 28), 128, np.uint8)
    body = {"instances": [{"image_b64": png_b64(noise)}] * 3}
    assert httpx.post(f"{url}/v1/models/mnist-baseline/predict", json=body, timeout=30).status_code == 200
    after = httpx.get(f"{url}/metrics").text
    pattern = re.compile(
        r'^oegate_predictions_total\{model="mnist-baseline",outcome="(\w+)",version="' + LIVE_VERSION + r'"\} (\S+)$',
        re.MULTILINE,
    )
    counts_before = {outcome: float(value) for outcome, value in pattern.findall(before)}
    counts_after = {outcome: float(value) for outcome, value in pattern.findall(after)}
    added = sum(counts_after.values()) - sum(counts_before.values())
    assert added == 3
    assert (
        f'oegate_model_info{{model="mnist-oe",provider="CPUExecutionProvider",version="{LIVE_VERSION}"}} 1.0' in after
    )


@pytest.mark.slow
def test_a_training_job_in_the_train_image_is_hot_reloaded_by_the_running_service(
    served: tuple[Container, str, Path],
    pool_volume: str,
    tmp_path: Path,
    digit_and_noise: tuple[np.ndarray, int, np.ndarray],
) -> None:
    _, url, models = served
    staging, runs = owned_dir(tmp_path / "staging"), owned_dir(tmp_path / "runs")
    mounts = [f"{pool_volume}:/app/data-cache", f"{staging}:/app/staging", f"{runs}:/app/runs", f"{models}:/app/models"]
    run_training(
        [
            "pipeline", "--config", "configs/mnist5k-quick.toml",
            "--set", "export.name='mnist-oe'", "--set", "export.baseline_name='mnist-baseline'",
            "--set", f"export.version={NEXT_VERSION}", "--set", "export.models_dir='/app/staging'",
            "--set", "run.run_dir='/app/runs/mnist5k-quick'",
        ],
        mounts,
    )  # fmt: skip
    assert sorted(path.name for path in (staging / "mnist-oe").iterdir()) == [NEXT_VERSION]
    assert (runs / "mnist5k-quick" / "metrics.jsonl").is_file()
    # Staged, not live: the service still serves the committed version until `promote`.
    assert httpx.get(f"{url}/v1/models/mnist-oe").json()["version"] == LIVE_VERSION
    run_training(["promote", "mnist-oe", NEXT_VERSION, "--staging", "/app/staging", "--models", "/app/models"], mounts)

    def served_version() -> str | None:
        version: str = httpx.get(f"{url}/v1/models/mnist-oe").json()["version"]
        return version if version == NEXT_VERSION else None

    wait_for(served_version, 60, f"the service to load mnist-oe version {NEXT_VERSION}")
    digit, _, noise = digit_and_noise
    body = {"instances": [{"image_b64": png_b64(digit)}, {"image_b64": png_b64(noise)}]}
    answer = httpx.post(f"{url}/v1/models/mnist-oe/predict", json=body, timeout=30).json()
    assert answer["version"] == NEXT_VERSION
    accepted, rejected = answer["predictions"]
    assert (accepted["label"], accepted["reject"], rejected["reject"]) == ("7", False, True)


def test_the_service_stops_cleanly_on_sigterm(served: tuple[Container, str, Path]) -> None:
    service, _, _ = served
    # `docker stop` sends SIGTERM and only after 30 s SIGKILL (exit code 137); uvicorn drains and exits 0.
    docker("stop", "--time", "30", service.name, timeout_s=60)
    state = service.state()
    assert (state["Status"], state["ExitCode"], state["OOMKilled"]) == ("exited", 0, False)
    assert "Finished server process" in service.logs()


def test_a_training_job_stops_on_sigterm_like_ctrl_c(pool_volume: str) -> None:
    # PID 1 in the container is `python -m training`: without its SIGTERM handler the kernel would drop the signal
    # and `docker stop` would end in SIGKILL (137) after the grace period.
    args = ["--network", "none", "-v", f"{pool_volume}:/app/data-cache", TRAIN_IMAGE,
            "pipeline", "--config", "configs/mnist5k-quick.toml"]  # fmt: skip
    with container("oegate-ctest-train", args) as train:
        wait_for(lambda: " INFO " in train.logs() or None, 120, "the training job to log")
        docker("stop", "--time", "30", train.name, timeout_s=60)
        state = train.state()
        assert (state["Status"], state["ExitCode"]) == ("exited", 130)
        assert "interrupted: rerun the same command with --resume" in train.logs()
