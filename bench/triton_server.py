"""The peer: NVIDIA Triton, through PyTriton, serving an artifact's model.onnx with Triton's dynamic batcher (V2 HTTP).

Runs under the Python 3.12 venv PyTriton needs (bench/servers.py makes it and sets LD_LIBRARY_PATH for
libpython3.12), so it imports nothing from this repository:

    VENV/bin/python bench/triton_server.py --model-dir models/mnist-oe/1 --http-port 8200 --metrics-port 8202

It answers the same V2 outputs as oegate (label_index, confidence, anomaly_score, kl_uniform, reject, probs), with
`reject = anomaly_score >= card threshold`. Stop it with SIGINT.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True, help="artifact directory: model.onnx + card.json")
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--max-queue-delay-us", type=int, default=2000)
    args = parser.parse_args()

    card = json.loads((args.model_dir / "card.json").read_text())
    threshold = np.float32(card["threshold"]["value"])
    channels, height, width = (card["input"][key] for key in ("channels", "height", "width"))
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1  # the server is pinned to one core
    session = ort.InferenceSession(str(args.model_dir / "model.onnx"), options, providers=["CPUExecutionProvider"])

    @batch
    def infer(input: np.ndarray) -> dict[str, np.ndarray]:  # named as the model input
        probs, kl_uniform, anomaly_score, confidence = session.run(
            ["probs", "kl_uniform", "anomaly_score", "confidence"], {"input": input}
        )
        return {
            "label_index": np.argmax(probs, axis=1).astype(np.int64)[:, None],
            "confidence": confidence[:, None],
            "anomaly_score": anomaly_score[:, None],
            "kl_uniform": kl_uniform[:, None],
            "reject": (anomaly_score >= threshold)[:, None],
            "probs": probs,
        }

    config = TritonConfig(
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        allow_gpu_metrics=False,
        allow_cpu_metrics=False,
        log_verbose=0,
    )
    with Triton(config=config) as triton:
        triton.bind(
            model_name=card["name"],
            infer_func=infer,
            inputs=[Tensor(name="input", dtype=np.float32, shape=(channels, height, width))],
            outputs=[
                Tensor(name="label_index", dtype=np.int64, shape=(1,)),
                Tensor(name="confidence", dtype=np.float32, shape=(1,)),
                Tensor(name="anomaly_score", dtype=np.float32, shape=(1,)),
                Tensor(name="kl_uniform", dtype=np.float32, shape=(1,)),
                Tensor(name="reject", dtype=np.bool_, shape=(1,)),
                Tensor(name="probs", dtype=np.float32, shape=(card["num_classes"],)),
            ],
            config=ModelConfig(
                max_batch_size=args.max_batch_size,
                batcher=DynamicBatcher(max_queue_delay_microseconds=args.max_queue_delay_us),
            ),
            strict=True,
        )
        triton.serve()


if __name__ == "__main__":
    main()
