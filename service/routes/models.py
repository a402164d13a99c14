"""`GET /v1/models`: what is served, on which provider, with a summary of each card."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from service.deps import RegistryDep, require_inference_token
from service.registry import ModelVersion
from service.schemas.native import ErrorBody, ModelList, ModelSummary

router = APIRouter(tags=["models"], dependencies=[Depends(require_inference_token)])


def summarize(model: ModelVersion) -> ModelSummary:
    return ModelSummary(name=model.name, version=model.version, provider=model.provider, **model.card.summary())


@router.get("/v1/models", response_model=ModelList)
async def list_models(registry: RegistryDep) -> ModelList:
    return ModelList(models=[summarize(model) for _, model in sorted(registry.models.items())])


@router.get("/v1/models/{name}", response_model=ModelSummary, responses={404: {"model": ErrorBody}})
async def get_model(name: str, registry: RegistryDep) -> ModelSummary:
    return summarize(registry.get(name))
