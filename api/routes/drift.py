"""`/v1/models/{name}/drift`: how a model's recent traffic differs from its reference window."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.deps import DatabaseDep, SettingsDep, TenantDep
from api.responses import API_KEY_SCHEMES, KEYED, problems
from shared.catalogue import CatalogueModel
from shared.config import Settings
from shared.drift import PSI_HIGH, FeatureDrift, Window, pinned_reference
from shared.errors import ModelNotFound
from shared.jobs.drift_counts import tenant_drift
from shared.models import utcnow
from shared.states import Task

router = APIRouter(prefix="/v1/models", tags=["models"], dependencies=API_KEY_SCHEMES)


def catalogue_model(settings: Settings, name: str) -> CatalogueModel:
    """Return the catalogue model of this name; a task's name (`sentiment`, `summarize`)
    stands for its default. Raises ModelNotFound naming what would be accepted."""
    catalogue = settings.catalogue
    found = catalogue.by_name.get(name)
    if found is None and name in {task.value for task in Task}:
        found = catalogue.default(Task(name))
    if found is None:
        accepted = ", ".join(repr(model.name) for model in catalogue.models)
        raise ModelNotFound(
            f"No model named {name!r}; the catalogue's models are {accepted} "
            "(or a task's name for its default)."
        )
    return found


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
    model: str = Field(description="The model's name in the catalogue.")
    source: str = Field(description="The model's source: hub id or directory.")
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
    "/{name}/drift",
    response_model=ModelDriftRead,
    responses=problems(*KEYED, 404, s404="No model of this name."),
)
def get_model_drift(
    name: str, db: DatabaseDep, settings: SettingsDep, tenant_id: TenantDep
) -> ModelDriftRead:
    """Return the PSI of each feature of a model's last 24 hours against its reference window.

    Over the caller's tenant's texts; the distributions are the shares of each bin.
    """
    model = catalogue_model(settings, name)
    pinned = pinned_reference(settings.drift_reference_start, settings.drift_reference_end)
    with db.read() as session:
        reference, current, features = tenant_drift(
            session,
            model=model.name,
            task=model.task,
            tenant=tenant_id,
            now=utcnow(),
            pinned=pinned,
        )
    return ModelDriftRead(
        model=model.name,
        source=model.source,
        task=model.task,
        tenant=tenant_id,
        reference=_window(reference),
        reference_pinned=pinned is not None,
        current=WindowRead(start=current.start, end=current.end),
        features=[_feature(f) for f in features],
    )
