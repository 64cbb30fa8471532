"""Dependencies the routes declare: settings, database, doorbell, the caller's tenant."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Response
from fastapi.concurrency import run_in_threadpool

from api.key_cache import VerifiedKeys
from api.ratelimit import RateLimiter
from api.waiting import JobWaiter
from shared import api_keys
from shared.broker import Doorbell
from shared.config import Settings
from shared.db import Database
from shared.errors import TooManyRequests, Unauthorized
from shared.logs import bind
from shared.models import DEFAULT_TENANT_ID


# The app-state getters are `async def` on purpose: FastAPI runs a plain `def` dependency on
# its thread pool, and a hop to a thread and back costs more than the read itself (a job
# read took five hops, each contended for the interpreter lock under load).
async def get_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


async def get_db(request: Request) -> Database:
    return request.app.state.db  # type: ignore[no-any-return]


async def get_doorbell(request: Request) -> Doorbell:
    return request.app.state.doorbell  # type: ignore[no-any-return]


async def get_waiter(request: Request) -> JobWaiter:
    return request.app.state.waiter  # type: ignore[no-any-return]


async def get_tenant_id(request: Request, response: Response) -> str:
    """Return the tenant of the request's API key (the default tenant when auth is off).

    Async, as the key was usually verified a moment ago and the rate limit is one Redis
    call: only a key not remembered costs a hop to the thread pool for its lookup.
    """
    settings: Settings = request.app.state.settings
    if not settings.requires_api_key:
        bind(tenant=DEFAULT_TENANT_ID)
        return DEFAULT_TENANT_ID
    authorization = request.headers.get("authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    key = credentials.strip() if scheme.lower() == "bearer" else ""
    key = key or request.headers.get("x-api-key", "").strip()
    if not key:
        raise Unauthorized()

    def look_up(key: str) -> api_keys.Grant | None:
        with request.app.state.db.read() as session:
            return api_keys.grant_of(session, key)

    verified: VerifiedKeys = request.app.state.verified_keys
    grant = verified.remembered(key) or await run_in_threadpool(verified.grant_of, key, look_up)
    if grant is None:
        raise Unauthorized("The API key is unknown, revoked or expired.")
    tenant = grant.tenant_id
    limiter: RateLimiter | None = request.app.state.rate_limiter
    if limiter is not None:
        decision = await limiter.take(api_keys.prefix_of(key) or key)
        if not decision.allowed:
            raise TooManyRequests(
                f"This API key is over its limit of {limiter.rate_per_s:g} requests per second "
                f"(bursts of {limiter.burst}); retry in {decision.headers()['Retry-After']} s.",
                headers=decision.headers(),
            )
        response.headers.update(decision.headers())
    bind(tenant=tenant)
    return tenant


SettingsDep = Annotated[Settings, Depends(get_settings)]
DatabaseDep = Annotated[Database, Depends(get_db)]
DoorbellDep = Annotated[Doorbell, Depends(get_doorbell)]
TenantDep = Annotated[str, Depends(get_tenant_id)]
WaiterDep = Annotated[JobWaiter, Depends(get_waiter)]
