"""Dependencies the routes declare: settings, database, doorbell, the caller's tenant."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.waiting import JobWaiter
from shared.celery_app import Doorbell
from shared.config import Settings
from shared.db import Database
from shared.models import DEFAULT_TENANT_ID


def get_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def get_db(request: Request) -> Database:
    return request.app.state.db  # type: ignore[no-any-return]


def get_doorbell(request: Request) -> Doorbell:
    return request.app.state.doorbell  # type: ignore[no-any-return]


def get_waiter(request: Request) -> JobWaiter:
    return request.app.state.waiter  # type: ignore[no-any-return]


def get_tenant_id() -> str:
    """Return the caller's tenant (one default tenant until API keys arrive)."""
    return DEFAULT_TENANT_ID


SettingsDep = Annotated[Settings, Depends(get_settings)]
DatabaseDep = Annotated[Database, Depends(get_db)]
DoorbellDep = Annotated[Doorbell, Depends(get_doorbell)]
TenantDep = Annotated[str, Depends(get_tenant_id)]
WaiterDep = Annotated[JobWaiter, Depends(get_waiter)]
