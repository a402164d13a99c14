"""Runs in the KServe venv (`make kserve-client`), never in the main one: KServe's Python SDK as a real V2 client.

`python kserve_client_checks.py BASE_URL REQUEST_FILE` reads the inputs the test prepared (JSON), drives the server
at BASE_URL with `kserve.InferenceRESTClient` (protocol v2) and prints one JSON object: readiness answers, the
decoded outputs of each inference (lists, with the dtype KServe gave them) and the status and message of each
error. The test (`test_kserve_client.py`) asserts on that object.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from typing import Any

import httpx
import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

OUTPUTS = ("label_index", "confidence", "anomaly_score", "kl_uniform", "reject", "probs")


def decoded(response: Any) -> dict[str, Any]:
    out = {}
    for name in OUTPUTS:
        array = response.get_output_by_name(name).as_numpy()
        out[name] = {"dtype": str(array.dtype), "shape": list(array.shape), "data": array.tolist()}
    return out


async def error_of(client: InferenceRESTClient, base_url: str, request: InferRequest) -> dict[str, Any]:
    try:
        await client.infer(base_url, request, model_name=request.model_name)
    except httpx.HTTPStatusError as error:
        return {"status": error.response.status_code, "body": error.response.json()}
    return {"status": None, "body": None}


async def main(base_url: str, spec: dict[str, Any]) -> dict[str, Any]:
    client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=30))
    result: dict[str, Any] = {
        "server_live": await client.is_server_live(base_url),
        "server_ready": await client.is_server_ready(base_url),
        "tiny_ready": await client.is_model_ready(base_url, "tiny"),
        "words_ready": await client.is_model_ready(base_url, "words"),
        "nope_ready": await client.is_model_ready(base_url, "nope"),
    }
    images = np.asarray(spec["images"], dtype=np.float32)
    fp32 = InferInput("input", list(images.shape), "FP32", data=images)
    response = await client.infer(base_url, InferRequest("tiny", [fp32], request_id="kserve-1"), model_name="tiny")
    result["fp32"] = decoded(response)
    result["fp32_id"] = response.id
    pngs = [base64.b64decode(p) for p in spec["pngs_base64"]]
    encoded = InferInput("input", [len(pngs)], "BYTES", data=[base64.b64encode(p).decode() for p in pngs])
    result["png"] = decoded(await client.infer(base_url, InferRequest("tiny", [encoded]), model_name="tiny"))
    texts = InferInput("text", [len(spec["texts"])], "BYTES", data=spec["texts"])
    result["texts"] = decoded(await client.infer(base_url, InferRequest("words", [texts]), model_name="words"))
    wrong_shape = InferInput("input", [1, 1, 27, 28], "FP32", data=images[:1, :, :27])
    result["error_shape"] = await error_of(client, base_url, InferRequest("tiny", [wrong_shape]))
    result["error_model"] = await error_of(client, base_url, InferRequest("nope", [fp32]))
    result["error_input"] = await error_of(client, base_url, InferRequest("words", [fp32]))
    await client.close()
    return result


if __name__ == "__main__":
    with open(sys.argv[2], encoding="utf-8") as handle:
        request_spec = json.load(handle)
    print(json.dumps(asyncio.run(main(sys.argv[1], request_spec))))
