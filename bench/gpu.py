"""`make gpu-check` (= `python -m bench.gpu`): everything a GPU machine should tell us, in one run of a few minutes.

python -m bench.gpu                                        # the full check (about 2-4 minutes with a GPU)
python -m bench.gpu --seconds 1 --epoch-steps 2 --batch-sizes 1,8 --out /tmp/gpu.md   # smoke (tests/bench)

1. Environment: onnxruntime's providers and whether CUDA actually starts (service/runtime.py's probe), torch's
   CUDA, the GPU's name. Without CUDA the report (and stdout) says "CUDA unavailable" with the reason, the CUDA
   parts are skipped, and the run still ends with status 0: what a CPU machine can do is still done.
2. Parity, per default model (models/, each model's newest version): CPU outputs on 64 fixed inputs (MNIST test
   digits, or 64 fixed texts of 24 words for text models), then the same on the CUDA provider: the largest
   absolute difference of every output and the share of equal labels. Fails (status 1) beyond `--tolerance`
   (1e-3 by default: cuDNN may use TF32 and other convolution algorithms than the CPU's).
3. The in-process limit: onnxruntime called directly on pre-built batches of each size in `--batch-sizes`, for
   `--seconds` each, on each provider that works: instances/s, and the best batch size.
4. Service throughput: `python -m service` (`--workers`, default 1) with CUDA first in `OEGATE_PROVIDERS` (and
   with the CPU provider alone, for comparison), loaded for `--seconds` by `--clients` client processes of
   `--connections` keep-alive connections each, one digit per V2 JSON request to mnist-oe; the provider actually
   used is read back from `oegate_model_info`.
5. One OE fine-tune epoch of configs/mnist5k-quick.toml (its net, batch sizes, outlier batch ratio, loss and SGD
   settings) on each torch device available, timed with the device synchronised: training/train.py has no
   device option, so this runs its step (`outlier_exposure_loss`, one forward pass over in + out) on the device
   here. The outlier pool is the config's when built (`make data`), else uniform noise of the same size (the
   epoch's cost does not depend on the pixels; the report says which). `--epoch-steps` cuts the epoch short.
Writes `--out` (default bench/results/<stamp>-gpu.md).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import math
import multiprocessing
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort

from bench import inputs
from bench.processes import service_tree
from bench.servers import REPO, metric_value, results_path, write_report
from service.batching import ModelInputs
from service.card import ImageInputSpec, TextInputSpec, read_verified_card
from service.codecs.text import TextEncoder
from service.registry import scan_versions
from service.runtime import Runtime, _library_error, provider_works

logger = logging.getLogger(__name__)

CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"
QUICK_CONFIG = REPO / "configs" / "mnist5k-quick.toml"
PARITY_INSTANCES = 64
SERVICE_MODEL = "mnist-oe"
WORDS = [
    "market",
    "team",
    "election",
    "river",
    "software",
    "vaccine",
    "guitar",
    "orbit",
    "harvest",
    "league",
    "court",
    "budget",
]


@dataclass
class ModelCase:
    name: str
    version: int
    path: Path
    make: Callable[[int], ModelInputs]  # batch size -> model inputs (the same first instances every time)


def cuda_status() -> tuple[bool, str]:
    """(onnxruntime's CUDA provider starts here, why not)."""
    if CUDA not in ort.get_available_providers():
        return False, f"this onnxruntime build ({ort.__version__}) has no {CUDA} (install onnxruntime-gpu)"
    if not provider_works(CUDA):
        return False, _library_error(CUDA) or "onnxruntime could not start a session on it (no GPU visible?)"
    return True, ""


def torch_devices() -> tuple[list[str], str]:
    """(torch devices to time the epoch on, why CUDA is not among them)."""
    try:
        import torch
    except ImportError:
        return [], "torch is not installed (pip install -e '.[train]')"
    if torch.cuda.is_available():
        return ["cuda", "cpu"], ""
    return ["cpu"], f"torch {torch.__version__} sees no CUDA device (a +cpu build, or no GPU visible)"


def model_cases(model_root: Path) -> list[ModelCase]:
    """The newest version of every model in `model_root`, with its input maker."""
    cases = []
    digits = _digits(PARITY_INSTANCES)
    for name, versions in sorted((scan_versions(model_root) or {}).items()):
        version, path = versions[0]
        card = read_verified_card(path, name, version)
        spec = card.input
        if isinstance(spec, TextInputSpec):
            encoder = TextEncoder.load(path, spec)
            # 24 words each (a few more or fewer tokens): batches of every size cost the same per text.
            texts = [" ".join(WORDS[(i + j * (1 + i % 5)) % len(WORDS)] for j in range(24)) for i in range(4096)]
            cases.append(ModelCase(name, version, path, functools.partial(_texts, encoder, texts)))
        elif isinstance(spec, ImageInputSpec):
            shape = (spec.channels, spec.height, spec.width)
            pool = digits if shape == digits.shape[1:] else _noise(PARITY_INSTANCES, shape)
            cases.append(ModelCase(name, version, path, functools.partial(_tile, pool)))
    return cases


def _texts(encoder: TextEncoder, texts: list[str], count: int) -> ModelInputs:
    return encoder.encode(texts[:count], max_chars=1_000_000)


def _digits(count: int) -> np.ndarray:
    return np.concatenate([inputs.load_test_digit(i).values for i in range(count)])


def _noise(count: int, shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(0).random((count, *shape), dtype=np.float32)


def _tile(pool: np.ndarray, count: int) -> np.ndarray:
    return np.ascontiguousarray(pool[np.arange(count) % len(pool)])


def _runtime(case: ModelCase, provider: str) -> Runtime:
    card = read_verified_card(case.path, case.name, case.version)
    return Runtime(case.path / "model.onnx", card, [provider], 0, 0)


def parity(case: ModelCase, cuda: bool, tolerance: float) -> dict[str, Any]:
    """CPU outputs, and with CUDA the largest difference per output and the share of equal labels."""
    batch = case.make(PARITY_INSTANCES)
    cpu = _runtime(case, CPU).run(batch)
    row: dict[str, Any] = {"model": f"{case.name}/{case.version}", "instances": PARITY_INSTANCES, "cpu": "computed"}
    if not cuda:
        return row | {"cuda": "skipped (CUDA unavailable)", "passed": None}
    runtime = _runtime(case, CUDA)
    gpu = runtime.run(batch)
    differences = {name: float(np.max(np.abs(gpu[name].astype(np.float64) - cpu[name]))) for name in cpu}
    labels = float(np.mean(np.argmax(gpu["probs"], 1) == np.argmax(cpu["probs"], 1)))
    passed = runtime.provider == CUDA and max(differences.values()) <= tolerance and labels == 1.0
    return row | {"cuda": runtime.provider, "max_abs_difference": differences, "equal_labels": labels, "passed": passed}


def in_process_limit(case: ModelCase, provider: str, sizes: list[int], seconds: float) -> list[tuple[int, float]]:
    """(batch size, instances/s) of onnxruntime called directly on a pre-built batch, `seconds` per size."""
    runtime = _runtime(case, provider)
    rates = []
    for size in sizes:
        batch = case.make(size)
        runtime.run(batch)  # warm-up: kernels chosen, memory allocated
        runs, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds:
            runtime.run(batch)
            runs += 1
        rates.append((size, runs * size / elapsed))
    return rates


async def _client(url: str, body: bytes, connections: int, seconds: float) -> tuple[int, int]:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    ok = failed = 0
    async with httpx.AsyncClient(limits=limits, timeout=60.0) as client:
        deadline = time.monotonic() + seconds

        async def loop() -> None:
            nonlocal ok, failed
            while time.monotonic() < deadline:
                response = await client.post(url, content=body, headers={"content-type": "application/json"})
                if response.status_code == 200:
                    ok += 1
                else:
                    failed += 1

        await asyncio.gather(*(loop() for _ in range(connections)))
    return ok, failed


def _client_process(url: str, body: bytes, connections: int, seconds: float, results: Any) -> None:
    results.put(asyncio.run(_client(url, body, connections, seconds)))


def service_throughput(
    providers: list[str], workers: int, clients: int, connections: int, seconds: float, work: Path
) -> dict[str, Any]:
    """Requests/s of `python -m service` on one digit per V2 JSON request, and the provider it reports."""
    body = inputs.request_body("v2", _digits(1))
    settings = {"OEGATE_PROVIDERS": json.dumps(providers)}
    with service_tree(workers, work / f"service-{providers[0]}.log", None, settings) as tree:
        text = httpx.get(f"{tree.base_url}/metrics", timeout=30.0).text
        used = [p for p in (CUDA, CPU) if metric_value(text, "oegate_model_info", model=SERVICE_MODEL, provider=p)]
        url = f"{tree.base_url}/v2/models/{SERVICE_MODEL}/infer"
        context = multiprocessing.get_context("spawn")
        results = context.Queue()
        processes = [
            context.Process(target=_client_process, args=(url, body, connections, seconds, results))
            for _ in range(clients)
        ]
        for process in processes:
            process.start()
        counts = [results.get(timeout=seconds + 120) for _ in processes]
        for process in processes:
            process.join(timeout=60)
    ok, failed = sum(c[0] for c in counts), sum(c[1] for c in counts)
    return {"providers": providers, "provider_used": used[0] if used else "?", "requests_per_s": ok / seconds,
            "errors": failed, "connections": clients * connections, "workers": workers}  # fmt: skip


def oe_epoch(device: str, steps_limit: int | None) -> dict[str, Any]:
    """One OE fine-tune epoch of the quick config on `device` (see the module doc, point 5)."""
    import torch

    from training.config import load_config
    from training.data.registry import load_in_distribution, load_outlier_pool
    from training.image.nets import build_net
    from training.losses import outlier_exposure_loss
    from training.train import Normalizer

    cfg = load_config(QUICK_CONFIG)
    data = load_in_distribution(cfg.data.in_distribution, seed=cfg.run.seed, val_fraction=cfg.data.val_fraction)
    try:
        pool = load_outlier_pool(
            cfg.data.outlier_pool, data.shape, seed=cfg.run.seed, limit=cfg.data.outlier_pool_limit
        )
        pool_source = cfg.data.outlier_pool
    except Exception as e:  # the pool is built by `make data`; its absence must not stop the timing
        count = cfg.data.outlier_pool_limit or 5000
        pool = np.random.default_rng(0).integers(0, 256, (count, *data.shape), dtype=np.uint8)
        pool_source = f"uniform noise ({cfg.data.outlier_pool} unavailable: {type(e).__name__})"
    assert data.train.labels is not None
    torch.manual_seed(cfg.run.seed)
    c, h, w = data.shape
    net = build_net(cfg.net, c, data.num_classes, h, w).to(device)
    normalize = Normalizer.fit(data.train.images) if cfg.net.standardize else Normalizer.identity(c)
    mean = torch.tensor(normalize.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(normalize.std, device=device).view(1, -1, 1, 1)
    oe = cfg.oe
    optimizer = torch.optim.SGD(
        net.parameters(), lr=oe.lr, momentum=oe.momentum, nesterov=oe.nesterov, weight_decay=oe.weight_decay or 0.0
    )
    images = torch.from_numpy(data.train.images).to(device)
    labels = torch.from_numpy(data.train.labels.astype(np.int64)).to(device)
    outliers = torch.from_numpy(pool).to(device)
    out_batch = round(oe.batch_size * oe.outlier_batch_ratio)
    steps = math.ceil(len(images) / oe.batch_size)
    steps = min(steps, steps_limit) if steps_limit else steps
    order = torch.randperm(len(images), device=device)
    out_order = torch.randperm(len(outliers), device=device)
    net.train()

    def synchronize() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    synchronize()
    started, seen = time.perf_counter(), 0
    for step in range(steps):
        index = order[step * oe.batch_size : (step + 1) * oe.batch_size]
        out_index = out_order[torch.arange(step * out_batch, (step + 1) * out_batch, device=device) % len(outliers)]
        x = torch.cat([images[index], outliers[out_index]]).float() / 255.0
        logits = net((x - mean) / std)
        loss = outlier_exposure_loss(logits, labels[index], oe.weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(x)
    synchronize()
    seconds = time.perf_counter() - started
    return {"device": device, "steps": steps, "images": seen, "seconds": seconds, "images_per_s": seen / seconds,
            "in_batch": oe.batch_size, "out_batch": out_batch, "pool": pool_source}  # fmt: skip


def _gpu_name() -> str:
    try:
        completed = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return "none (no nvidia-smi)"
    return completed.stdout.strip() or "none"


def render(facts: dict[str, str], sections: dict[str, list[str]]) -> str:
    lines = ["# oegate GPU check", ""] + [f"- {key}: {value}" for key, value in facts.items()]
    for title, body in sections.items():
        lines += ["", f"## {title}", "", *body]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.gpu", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--seconds", type=float, default=5.0, help="seconds per in-process batch size and per service load")
    add("--batch-sizes", type=lambda t: [int(p) for p in t.split(",")], default=[1, 8, 32, 64, 128, 256, 512, 1024])
    add("--tolerance", type=float, default=1e-3, help="largest CUDA-CPU output difference that passes")
    add("--workers", type=int, default=1, help="OEGATE_WORKERS for the service throughput")
    add("--clients", type=int, default=4, help="client processes for the service throughput")
    add("--connections", type=int, default=16, help="connections per client process")
    add("--epoch-steps", type=int, default=0, help="cut the OE epoch after this many steps (0: the whole epoch)")
    add("--model-root", type=Path, default=REPO / "models")
    add("--out", type=Path, default=results_path("gpu"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)

    cuda, cuda_reason = cuda_status()
    devices, torch_reason = torch_devices()
    providers = [CUDA, CPU] if cuda else [CPU]
    if not cuda or "cuda" not in devices:
        print(f"CUDA unavailable: onnxruntime: {cuda_reason or 'ok'}; torch: {torch_reason or 'ok'}. "
              "Running the CPU parts only.", flush=True)  # fmt: skip
    facts = {
        "command": f"`{shlex.join(['python', '-m', 'bench.gpu', *(sys.argv[1:] if argv is None else argv)])}`",
        "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} CPUs, Linux {platform.release()}, Python {platform.python_version()}",
        "GPU": _gpu_name(),
        "onnxruntime": f"{ort.__version__}, providers built: {', '.join(ort.get_available_providers())}",
        "onnxruntime CUDA": "usable" if cuda else f"CUDA unavailable: {cuda_reason}",
        "torch CUDA": "usable" if "cuda" in devices else f"CUDA unavailable: {torch_reason}",
    }
    sections: dict[str, list[str]] = {}
    cases = model_cases(args.model_root)

    table = ["| model | CPU outputs | CUDA provider | max abs difference per output | equal labels | passed |"]
    table.append("|---|---|---|---|---:|---|")
    failures = 0
    for case in cases:
        row = parity(case, cuda, args.tolerance)
        logger.info("parity %s", row)
        failures += row["passed"] is False
        diffs = ", ".join(f"{k} {v:.2e}" for k, v in row.get("max_abs_difference", {}).items()) or "-"
        labels = f"{row['equal_labels']:.3f}" if "equal_labels" in row else "-"
        table.append(f"| {row['model']} | {row['cpu']} | {row['cuda']} | {diffs} | {labels} | {row['passed']} |")
    sections[f"Parity: CUDA vs CPU outputs, {PARITY_INSTANCES} inputs per model, tolerance {args.tolerance:g}"] = table

    limit = ["| model | provider | " + " | ".join(f"batch {n}" for n in args.batch_sizes) + " | best batch |"]
    limit.append("|---|---|" + "---:|" * (len(args.batch_sizes) + 1))
    for case in [c for c in cases if c.name in (SERVICE_MODEL, "topics-oe")]:
        for provider in providers:
            rates = in_process_limit(case, provider, args.batch_sizes, args.seconds)
            best = max(rates, key=lambda rate: rate[1])
            cells = " | ".join(f"{rate:,.0f}" for _, rate in rates)
            limit.append(f"| {case.name} | {provider} | {cells} | {best[0]} ({best[1]:,.0f}/s) |")
            logger.info("in-process limit %s %s: %s", case.name, provider, rates)
    sections[f"In-process limit: instances/s of onnxruntime on pre-built batches, {args.seconds:g} s per size"] = limit

    service = [
        "| OEGATE_PROVIDERS | provider used | workers | connections | req/s | errors |",
        "|---|---|---:|---:|---:|---:|",
    ]
    with tempfile.TemporaryDirectory(prefix="oegate-gpu-check-") as work:
        for chosen in ([CUDA, CPU], [CPU]) if cuda else ([CPU],):
            result = service_throughput(chosen, args.workers, args.clients, args.connections, args.seconds, Path(work))
            logger.info("service %s", result)
            service.append(
                f"| {','.join(chosen)} | {result['provider_used']} | {result['workers']} | {result['connections']} | "
                f"{result['requests_per_s']:,.0f} | {result['errors']} |"
            )
    if not cuda:
        service.append("\nWith CUDA: skipped (CUDA unavailable).")
    sections[f"Service throughput: one digit per V2 JSON request to {SERVICE_MODEL}, {args.seconds:g} s"] = service

    epoch = ["| device | steps | images (in + out) | seconds | images/s | pool |", "|---|---:|---:|---:|---:|---|"]
    for device in devices:
        result = oe_epoch(device, args.epoch_steps or None)
        logger.info("OE epoch %s", result)
        epoch.append(
            f"| {device} | {result['steps']} | {result['images']:,} | {result['seconds']:.2f} | "
            f"{result['images_per_s']:,.0f} | {result['pool']} |"
        )
    if "cuda" not in devices:
        epoch.append("\nOn CUDA: skipped (CUDA unavailable).")
    sections[f"One OE fine-tune epoch of {QUICK_CONFIG.name}"] = epoch

    text = render(facts, sections)
    write_report(args.out, text)
    print(text, flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
