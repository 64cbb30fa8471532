"""Queue a share of a default model's finished items for its shadow candidate, as a job.

A default with `shadow = "candidate"` and `shadow_fraction = f` in the catalogue has about
`f` of its finished texts copied into a shadow job on the candidate, in the transaction that
records them. The job is ordinary work for the workers serving the candidate, at a priority
below every user's, and textq's own: hidden from the tenant's lists, counts and metrics.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from shared.catalogue import Catalogue, CatalogueModel
from shared.config import Settings
from shared.jobs.after_commit import wake_workers
from shared.jobs.rows import INSERT_SLICE_ROWS, slices
from shared.jobs.submit import add_job
from shared.jobs.work import Outcome
from shared.models import Job, JobItem
from shared.states import ItemStatus
from shared.worker_registry import live_workers_serving

# Below every priority a user may ask for (0-9): a claim takes the highest priority that has
# work, so a candidate's worker reaches shadow items only when no user work waits for it.
SHADOW_PRIORITY = -1

# Options that add work beside the model (category embeddings, insights' summaries): the
# comparison is of the models alone, so a shadow job runs without them.
_NOT_COMPARED_OPTIONS = ("categories", "insights")


def is_shadowed(item_id: int, fraction: float) -> bool:
    """Say whether the item with this id is among the `fraction` (0 < f <= 1) shadowed.

    A hash of the id alone decides, so every worker, retry and test agrees on the set.
    """
    digest = hashlib.sha256(str(item_id).encode()).digest()
    return int.from_bytes(digest[:8], "big") < fraction * 2**64


def shadow_of(catalogue: Catalogue, model_name: str) -> CatalogueModel | None:
    """Return the candidate shadowing the default model `model_name`, or None."""
    model = catalogue.by_name.get(model_name)
    if model is None or not model.default or model.shadow is None:
        return None
    return catalogue.by_name.get(model.shadow)


def queue_shadow_work(
    session: Session,
    *,
    settings: Settings,
    model_name: str | None,
    claim_token: uuid.UUID,
    outcomes: Sequence[Outcome],
) -> list[uuid.UUID]:
    """Copy the shadowed share of these just-recorded outcomes into shadow jobs; return
    their ids (one per tenant and options; none when the model has no shadow).

    Only texts finished in one pass are copied: a long text's result is made from its
    chunks' later on, and is not among a claim's outcomes. Items are taken only while a
    live worker serves the candidate, so shadow work never piles up for nobody.
    """
    if model_name is None:  # a model from before the catalogue has no shadow
        return []
    default = settings.catalogue.by_name.get(model_name)
    candidate = shadow_of(settings.catalogue, model_name)
    if default is None or candidate is None or default.shadow_fraction is None:
        return []
    fraction = default.shadow_fraction
    picked = [
        o.item_id
        for o in outcomes
        if o.chunks is None and o.error is None and is_shadowed(o.item_id, fraction)
    ]
    if not picked:
        return []
    served = live_workers_serving(
        session,
        task=candidate.task.value,
        model=candidate.source,
        sweep_interval_s=settings.sweep_interval_s,
    )
    if not served:
        return []
    rows = session.execute(
        select(
            JobItem.id,
            JobItem.input_text,
            Job.tenant_id,
            Job.options,
            Job.expires_after_s,
        )
        .join(Job, Job.id == JobItem.job_id)
        .where(
            JobItem.id.in_(picked),
            JobItem.claim_token == claim_token,  # stored by this claim, not another's
            JobItem.status == ItemStatus.DONE.value,
            JobItem.parent_id.is_(None),
            Job.model_name == default.name,
            Job.shadow.is_(False),
        )
        .order_by(JobItem.id)
    ).all()
    groups: dict[tuple[str, str], list[Any]] = {}
    for row in rows:
        options = _compared_options(row.options)
        groups.setdefault((row.tenant_id, repr(sorted(options.items()))), []).append(row)
    created = [_add_shadow_job(session, candidate, group) for group in groups.values()]
    if created:
        wake_workers(session, candidate.task, model_name=candidate.name)
    return created


def _compared_options(options: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (options or {}).items() if k not in _NOT_COMPARED_OPTIONS}


def _add_shadow_job(session: Session, candidate: CatalogueModel, rows: list[Any]) -> uuid.UUID:
    """Add one shadow job on the candidate with a copy of each row's text."""
    expiries = [row.expires_after_s for row in rows if row.expires_after_s is not None]
    job = add_job(
        session,
        tenant_id=rows[0].tenant_id,
        task=candidate.task,
        model=candidate.source,
        model_name=candidate.name,
        options=_compared_options(rows[0].options),
        total_items=len(rows),
        input_kind="texts",
        priority=SHADOW_PRIORITY,
        # A copy of a user's text is purged no later than the user asked for the original.
        expires_after_s=min(expiries) if expiries else None,
    )
    job.shadow = True
    session.flush()
    items = (
        {
            "job_id": job.id,
            "idx": position,
            "task": candidate.task.value,
            "status": ItemStatus.PENDING.value,
            "input_text": row.input_text,
            "char_count": len(row.input_text),
            "shadow_of": row.id,
            "attempts": 0,
        }
        for position, row in enumerate(rows)
    )
    for rows_slice in slices(items, INSERT_SLICE_ROWS):
        session.execute(insert(JobItem), rows_slice)
    return job.id
