"""`HotRoutes` (service/hot_routes.py): predict/infer served past the framework's router, with the same routes,
path parameters, route labels and error rendering; everything else still goes to the app."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry
from starlette.types import Receive, Scope, Send

from service.app import hot_routes
from service.errors import InvalidInputError, ServiceError, install_error_handlers
from service.hot_routes import HotRoutes
from service.metrics import Metrics
from tests.service.conftest import digit_like

pytestmark = pytest.mark.anyio

TOY = APIRouter()


class UnhandledError(Exception):
    """An exception no handler is registered for."""


@TOY.post("/toy/{name}/run")
async def run(name: str, request: Request) -> Response:
    body = await request.body()
    if name == "invalid":
        raise InvalidInputError("instances[0]: bad")
    if name == "boom":
        raise UnhandledError("unhandled")
    route = request.scope["route"].path
    return JSONResponse({"name": name, "body": body.decode(), "route": route})


@TOY.post("/toy/{name}/versions/{version}/run")
async def run_version(name: str, version: str, request: Request) -> Response:
    return JSONResponse({"name": name, "version": version})


class Recorder:
    """The app behind `HotRoutes`: records the paths it was asked for and answers 299."""

    def __init__(self) -> None:
        self.paths: list[tuple[str, str]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.paths.append((scope["method"], scope["path"]))
        await JSONResponse({"inner": True}, status_code=299)(scope, receive, send)


@contextlib.asynccontextmanager
async def toy_client(recorder: Recorder, metrics: Metrics) -> Any:
    app = FastAPI()
    install_error_handlers(app, metrics)
    hot = HotRoutes(recorder, routes=TOY.routes, handlers=app.exception_handlers)  # type: ignore[arg-type]

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = app
        await hot(scope, receive, send)

    transport = httpx.ASGITransport(app=asgi)
    async with httpx.AsyncClient(transport=transport, base_url="http://toy.test") as client:
        yield client


async def test_post_to_a_hot_route_calls_its_endpoint_with_path_parameters_and_route() -> None:
    recorder = Recorder()
    async with toy_client(recorder, Metrics(CollectorRegistry())) as client:
        one = await client.post("/toy/alpha/run", content=b"payload")
        two = await client.post("/toy/alpha/versions/7/run")
    assert one.status_code == 200
    assert one.json() == {"name": "alpha", "body": "payload", "route": "/toy/{name}/run"}
    assert two.status_code == 200 and two.json() == {"name": "alpha", "version": "7"}
    assert recorder.paths == []


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/toy/alpha/run"),  # another method on a hot path: the app answers (405 in the service)
        ("POST", "/toy/alpha/run/extra"),  # the path must match whole
        ("POST", "/toy/a/b/run"),  # a path parameter is one segment
        ("POST", "/other"),
    ],
)
async def test_everything_else_goes_to_the_app(method: str, path: str) -> None:
    recorder = Recorder()
    async with toy_client(recorder, Metrics(CollectorRegistry())) as client:
        response = await client.request(method, path)
    assert response.status_code == 299
    assert recorder.paths == [(method, path)]


async def test_a_service_error_is_rendered_by_the_apps_handler_and_counted() -> None:
    metrics = Metrics(CollectorRegistry())
    async with toy_client(Recorder(), metrics) as client:
        response = await client.post("/toy/invalid/run")
    assert response.status_code == InvalidInputError.status_code == 422
    assert response.json() == {"error": "instances[0]: bad"}
    counted = metrics.registry.get_sample_value(
        "oegate_request_errors_total", {"reason": "invalid_input", "model": "none"}
    )
    assert counted == 1


async def test_an_exception_without_a_handler_propagates() -> None:
    async with toy_client(Recorder(), Metrics(CollectorRegistry())) as client:
        with pytest.raises(UnhandledError):
            await client.post("/toy/boom/run")


async def test_handlers_are_found_by_exception_class_and_sync_handlers_work() -> None:
    class SpecialError(InvalidInputError):
        pass

    seen: list[str] = []

    def sync_handler(request: Request, exc: Exception) -> Response:
        seen.append(type(exc).__name__)
        return JSONResponse({"special": True}, status_code=418)

    async def raising(name: str, request: Request) -> Response:
        raise SpecialError("x")

    router = APIRouter()
    router.add_api_route("/s/{name}", raising, methods=["POST"])
    handlers: dict[Any, Callable[..., Any]] = {Exception: sync_handler, 500: sync_handler, ServiceError: sync_handler}
    hot = HotRoutes(Recorder(), routes=router.routes, handlers=handlers)  # type: ignore[arg-type]
    assert set(hot.handlers) == {ServiceError}  # the catch-all and status-code handlers are not its to use
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=hot), base_url="http://toy.test") as client:
        response = await client.post("/s/x")
    assert response.status_code == 418 and seen == ["SpecialError"]


def test_the_service_serves_predict_and_infer_directly() -> None:
    routes = {(route.path, frozenset(route.methods or ())) for route in hot_routes()}
    assert routes == {
        ("/v1/models/{name}/predict", frozenset({"POST"})),
        ("/v1/models/{name}/versions/{version}/predict", frozenset({"POST"})),
        ("/v2/models/{name}/infer", frozenset({"POST"})),
        ("/v2/models/{name}/versions/{version}/infer", frozenset({"POST"})),
    }


async def test_predict_and_infer_do_not_pass_through_the_router(
    serve: Callable[..., Any], model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serve() as (app, client):
        routed: list[str] = []
        inner = app.router.__class__.__call__

        async def counting(self: Any, scope: Scope, receive: Receive, send: Send) -> None:
            routed.append(scope["path"])
            await inner(self, scope, receive, send)

        monkeypatch.setattr(app.router.__class__, "__call__", counting)
        pixels = (digit_like(0) / 255.0).astype(np.float32)[None].tolist()  # [1, 28, 28]
        native = await client.post("/v1/models/tiny/predict", json={"instances": [{"array": pixels}]})
        v2 = await client.post(
            "/v2/models/tiny/versions/1/infer",
            json={"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 28, 28], "data": [pixels]}]},
        )
        missing = await client.post("/v1/models/nope/predict", json={"instances": [{"array": pixels}]})
        metadata = await client.get("/v2/models/tiny")
        wrong_method = await client.get("/v1/models/tiny/predict")
    assert native.status_code == 200 and v2.status_code == 200, (native.text, v2.text)
    assert missing.status_code == 404 and "nope" in missing.json()["error"]
    assert metadata.status_code == 200
    assert wrong_method.status_code == 405
    assert routed == ["/v2/models/tiny", "/v1/models/tiny/predict"]
