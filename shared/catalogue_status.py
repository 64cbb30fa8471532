"""What each catalogue model is and where it runs now: `GET /v1/models`, `textq models list`.

The catalogue says what a model is (this process's TEXTQ_MODELS_FILE or model settings);
the `workers` table says which live workers serve it, whether they loaded it, at which
revision, on which device and dtype, and what they learned from loading it (labels, window).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from shared import worker_registry
from shared.catalogue import Catalogue, CatalogueModel
from shared.model_schemas import ModelRead, ModelWorker
from shared.models import utcnow
from shared.states import Task


def describe_models(
    session: Session, catalogue: Catalogue, *, sweep_interval_s: float
) -> list[ModelRead]:
    """Return every catalogue model, the defaults first, with what live workers say of it."""
    now = utcnow()
    live = [
        worker
        for worker in worker_registry.list_workers(session)
        if worker_registry.is_live(worker, sweep_interval_s=sweep_interval_s, now=now)
    ]
    described = []
    for task in Task:
        for model in catalogue.of_task(task):
            serving = [
                (worker, entry)
                for worker in live
                for entry in worker_registry.served_entries(worker)
                if _is_entry_of(entry, model)
            ]
            described.append(_describe(model, serving))
    return described


def _is_entry_of(entry: dict[str, Any], model: CatalogueModel) -> bool:
    """Say whether a worker's entry is this model (an unnamed entry: by task and source)."""
    if entry.get("task") != model.task.value or entry.get("model") != model.source:
        return False
    return entry.get("name") in (None, model.name)


def _describe(model: CatalogueModel, serving: list[tuple[Any, dict[str, Any]]]) -> ModelRead:
    loaded = [entry for _, entry in serving if entry.get("loaded")]
    labels = next((entry["labels"] for entry in loaded if entry.get("labels")), None)
    windows = [
        entry["limits"]["max_input_tokens"]
        for entry in loaded
        if (entry.get("limits") or {}).get("max_input_tokens")
    ]
    return ModelRead(
        name=model.name,
        task=model.task,
        source=model.source,
        revision=model.revision,
        default=model.default,
        shadow=model.shadow,
        shadow_fraction=model.shadow_fraction,
        loaded_revisions=sorted({str(entry["revision"]) for entry in loaded}),
        labels=labels,
        window_tokens=min(windows) if windows else None,
        workers=[
            ModelWorker(
                name=worker.name,
                device=worker.device,
                dtype=worker.dtype,
                loaded=bool(entry.get("loaded")),
                revision=entry.get("revision"),
                error=entry.get("error"),
            )
            for worker, entry in serving
        ],
    )
