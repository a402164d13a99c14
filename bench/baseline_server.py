"""The plain baseline: FastAPI + onnxruntime, one session run per request, no batching, no validation beyond shapes.

`python -m bench.baseline_server --model-dir models/mnist-oe/1 --port 8100` serves the artifact's model.onnx on the
same two routes and bodies as oegate (`/v1/models/{name}/predict` with one `array` instance, `/v2/models/{name}/infer`
with an FP32 tensor) and answers the same fields, so wrk can load it with the same bodies. It is what a minimal
hand-written endpoint costs: the floor oegate's extra work (validation, batching, metrics, logs) is measured against.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import uvicorn
from fastapi import FastAPI, Request


def create_app(model_dir: Path) -> FastAPI:
    card = json.loads((model_dir / "card.json").read_text())
    name, labels, threshold = card["name"], card["labels"], card["threshold"]["value"]
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1  # the server is pinned to one core
    session = ort.InferenceSession(str(model_dir / "model.onnx"), options, providers=["CPUExecutionProvider"])
    app = FastAPI()

    def run(images: np.ndarray) -> dict[str, Any]:
        probs, kl_uniform, anomaly_score, confidence = session.run(
            ["probs", "kl_uniform", "anomaly_score", "confidence"], {"input": images.astype(np.float32)}
        )
        return {
            "label_index": int(np.argmax(probs[0])),
            "confidence": float(confidence[0]),
            "anomaly_score": float(anomaly_score[0]),
            "kl_uniform": float(kl_uniform[0]),
            "reject": bool(anomaly_score[0] >= threshold),
            "probs": probs[0].tolist(),
        }

    @app.post(f"/v1/models/{name}/predict")
    async def predict(request: Request) -> dict[str, Any]:
        result = run(np.asarray([json.loads(await request.body())["instances"][0]["array"]]))
        top = np.argsort(result["probs"])[::-1][:3]
        prediction = {key: value for key, value in result.items() if key != "probs"}
        prediction |= {"label": labels[result["label_index"]]}
        prediction["top_k"] = [{"label": labels[i], "probability": result["probs"][i]} for i in top]
        return {"model": name, "version": str(card["version"]), "threshold": threshold, "predictions": [prediction]}

    @app.post(f"/v2/models/{name}/infer")
    async def infer(request: Request) -> dict[str, Any]:
        tensor = json.loads(await request.body())["inputs"][0]
        result = run(np.asarray(tensor["data"]).reshape(tensor["shape"]))
        types = {"label_index": "INT64", "reject": "BOOL"}
        outputs = [
            {
                "name": key,
                "datatype": types.get(key, "FP32"),
                "shape": [1, len(value)] if key == "probs" else [1],
                "data": value if key == "probs" else [value],
            }
            for key, value in result.items()
        ]
        return {"model_name": name, "model_version": str(card["version"]), "outputs": outputs}

    @app.get("/v2/health/ready")
    async def ready() -> dict[str, bool]:
        return {"ready": True}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True, help="artifact directory: model.onnx + card.json")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    args = parser.parse_args()
    uvicorn.run(create_app(args.model_dir), host=args.host, port=args.port, workers=1, access_log=False)


if __name__ == "__main__":
    main()
