"""Typed FastAPI dependencies: the app's components, and bearer-token checks.

Every dependency is `async def` although none awaits: FastAPI runs a plain `def` dependency in its thread pool,
which costs a thread hand-off per dependency per request on the hot path.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from pydantic import SecretStr

from service.capture import Capture
from service.errors import NotFoundError, UnauthorizedError
from service.inference import Predictor
from service.limits import WorkLimits
from service.metrics import Metrics
from service.registry import Registry
from service.settings import Settings


@dataclass(frozen=True)
class Components:
    """Everything `create_app` builds, kept on `app.state.components` for the dependencies below."""

    settings: Settings
    metrics: Metrics
    registry: Registry
    predictor: Predictor
    limits: WorkLimits
    capture: Capture


async def get_components(request: Request) -> Components:
    components: Components = request.app.state.components
    return components


ComponentsDep = Annotated[Components, Depends(get_components)]


async def get_settings(components: ComponentsDep) -> Settings:
    return components.settings


async def get_registry(components: ComponentsDep) -> Registry:
    return components.registry


async def get_predictor(components: ComponentsDep) -> Predictor:
    return components.predictor


async def get_limits(components: ComponentsDep) -> WorkLimits:
    return components.limits


async def get_capture(components: ComponentsDep) -> Capture:
    return components.capture


SettingsDep = Annotated[Settings, Depends(get_settings)]
LimitsDep = Annotated[WorkLimits, Depends(get_limits)]
RegistryDep = Annotated[Registry, Depends(get_registry)]
PredictorDep = Annotated[Predictor, Depends(get_predictor)]
CaptureDep = Annotated[Capture, Depends(get_capture)]


def _check_bearer(request: Request, expected: SecretStr, what: str) -> None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise UnauthorizedError(f"{what} requires an 'Authorization: Bearer <token>' header")
    if not hmac.compare_digest(token.strip().encode(), expected.get_secret_value().encode()):
        raise UnauthorizedError(f"invalid bearer token for {what}")


async def require_inference_token(request: Request, settings: SettingsDep) -> None:
    """Inference and model metadata need `inference_token` when one is configured."""
    check_inference_token(request, settings)


def check_inference_token(request: Request, settings: Settings) -> None:
    """The same check, called by the predict/infer routes themselves: they take no dependencies, because solving
    them (three, with the components and settings they need) cost about a tenth of the event loop's time per
    request under load (py-spy, BENCHMARKS.md section 1)."""
    if settings.inference_token is not None:
        _check_bearer(request, settings.inference_token, "this endpoint")


def components_of(request: Request) -> Components:
    """The app's components, for routes that take no dependencies (see `check_inference_token`)."""
    components: Components = request.app.state.components
    return components


async def require_admin_token(request: Request, settings: SettingsDep) -> None:
    """The admin API exists only when `admin_token` is configured."""
    if settings.admin_token is None:
        raise NotFoundError("the admin API is disabled (no admin token is configured)")
    _check_bearer(request, settings.admin_token, "the admin API")
