"""`/v1/models/{name}/shadow`: how a candidate compares with the default it shadows."""

from __future__ import annotations

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool

from api.deps import DatabaseDep, SettingsDep, TenantDep
from api.responses import API_KEY_SCHEMES, KEYED, problems
from shared.model_schemas import ShadowReport
from shared.shadow.reads import shadow_report

router = APIRouter(prefix="/v1/models", tags=["models"], dependencies=API_KEY_SCHEMES)


@router.get(
    "/{name}/shadow",
    response_model=ShadowReport,
    responses=problems(
        *KEYED,
        404,
        422,
        s404="The model neither has a shadow nor is one; the detail lists those that do.",
    ),
)
async def get_shadow_report(
    name: str,
    db: DatabaseDep,
    settings: SettingsDep,
    tenant: TenantDep,
    window_h: float = Query(
        default=24, gt=0, le=24 * 366, description="Hours back from now to compare over."
    ),
) -> ShadowReport:
    """Compare a default with its shadow candidate (`name`: either) on this tenant's texts."""

    def read() -> ShadowReport:
        with db.read() as session:
            return shadow_report(
                session, settings.catalogue, name, window_h=window_h, tenant_id=tenant
            )

    return await run_in_threadpool(read)
