"""`/v1/models`: the catalogue's models, and which live workers serve each."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool

from api.deps import DatabaseDep, SettingsDep, TenantDep
from api.responses import API_KEY_SCHEMES, KEYED, problems
from shared.catalogue_status import describe_models
from shared.model_schemas import ModelList

router = APIRouter(prefix="/v1/models", tags=["models"], dependencies=API_KEY_SCHEMES)


@router.get("", response_model=ModelList, responses=problems(*KEYED))
async def list_models(db: DatabaseDep, settings: SettingsDep, _tenant: TenantDep) -> ModelList:
    """List the models jobs may choose (`model`), each with the live workers serving it."""

    def read() -> ModelList:
        with db.read() as session:
            return ModelList(
                models=describe_models(
                    session, settings.catalogue, sweep_interval_s=settings.sweep_interval_s
                )
            )

    return await run_in_threadpool(read)
