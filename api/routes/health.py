"""Liveness and readiness probes."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from api.deps import DatabaseDep, DoorbellDep

router = APIRouter(tags=["health"])


class Readiness(BaseModel):
    """Whether each backing service answers: `ok`, or why not."""

    status: Literal["ready", "unavailable"]
    checks: dict[str, str]


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """Say the process is alive."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={
        503: {"model": Readiness, "description": "The database or the broker does not answer."}
    },
)
async def readyz(db: DatabaseDep, doorbell: DoorbellDep) -> JSONResponse:
    """Say whether the database and the broker answer; 503 when either does not."""
    checks: dict[str, str] = {}
    for name, check in (("database", db.ping), ("broker", doorbell.check)):
        try:
            await run_in_threadpool(check)
            checks[name] = "ok"
        except Exception as error:
            checks[name] = f"unavailable: {type(error).__name__}: {error}"[:300]
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", "checks": checks},
        status_code=200 if ready else 503,
        headers=None if ready else {"Retry-After": "5"},
    )
