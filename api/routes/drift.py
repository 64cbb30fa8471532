"""`/v1/models/{name}/drift`: how a model's recent traffic differs from its reference window."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.deps import DatabaseDep, SettingsDep, TenantDep
from api.responses import API_KEY_SCHEMES, KEYED, problems
from shared.config import Settings
from shared.drift import PSI_HIGH, FeatureDrift, Window, pinned_reference
from shared.errors import ModelNotFound
from shared.jobs.drift_counts import tenant_drift
from shared.models import utcnow
from shared.states import Task

router = APIRouter(prefix="/v1/models", tags=["models"], dependencies=API_KEY_SCHEMES)


def model_source(settings: Settings, name: str) -> tuple[Task, str]:
    """Return the task and source (hub id or directory, as jobs record it) of a model name.

    A name is a task (`sentiment`, `summarize`: that task's configured model) or a
    configured model's source. Raises ModelNotFound naming what would be accepted.
    """
    for task in Task:
        if name in (task.value, settings.model_for(task)):
            return task, settings.model_for(task)
    accepted = ", ".join(f"{task.value!r} (or {settings.model_for(task)!r})" for task in Task)
    raise ModelNotFound(f"No model named {name!r}; this server knows {accepted}.")


class WindowRead(BaseModel):
    start: datetime
    end: datetime


class FeatureDriftRead(BaseModel):
    feature: str = Field(description="`label`, `confidence`, `input_tokens` or `compression`.")
    psi: float | None = Field(
        description=f"Population stability index; above {PSI_HIGH} the traffic has shifted "
        "significantly. Null when it cannot be measured yet (see `reason`)."
    )
    reason: str | None = Field(default=None, description="Why `psi` is null.")
    reference_items: int
    current_items: int
    reference: dict[str, float] = Field(description="Each bin's share in the reference window.")
    current: dict[str, float] = Field(description="Each bin's share in the last 24 hours.")


class ModelDriftRead(BaseModel):
    model: str = Field(description="The model's source: hub id or directory.")
    task: Task
    tenant: str
    reference: WindowRead | None = Field(
        description="The first 7 days of this tenant's traffic on the model, or the window "
        "TEXTQ_DRIFT_REFERENCE_START/END pin; null before any traffic."
    )
    reference_pinned: bool
    current: WindowRead = Field(description="The last 24 hours, by the hour.")
    features: list[FeatureDriftRead]


def _window(window: Window | None) -> WindowRead | None:
    return None if window is None else WindowRead(start=window.start, end=window.end)


def _feature(drift: FeatureDrift) -> FeatureDriftRead:
    return FeatureDriftRead(**asdict(drift))


@router.get(
    "/{name:path}/drift",
    response_model=ModelDriftRead,
    responses=problems(*KEYED, 404, s404="No model of this name."),
)
def get_model_drift(
    name: str, db: DatabaseDep, settings: SettingsDep, tenant_id: TenantDep
) -> ModelDriftRead:
    """Return the PSI of each feature of a model's last 24 hours against its reference window.

    Over the caller's tenant's texts; the distributions are the shares of each bin.
    """
    task, source = model_source(settings, name)
    pinned = pinned_reference(settings.drift_reference_start, settings.drift_reference_end)
    with db.read() as session:
        reference, current, features = tenant_drift(
            session, model=source, task=task, tenant=tenant_id, now=utcnow(), pinned=pinned
        )
    return ModelDriftRead(
        model=source,
        task=task,
        tenant=tenant_id,
        reference=_window(reference),
        reference_pinned=pinned is not None,
        current=WindowRead(start=current.start, end=current.end),
        features=[_feature(f) for f in features],
    )
