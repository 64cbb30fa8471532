"""Read the pairs of results a shadow comparison is made of, and report on a window."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from shared.catalogue import Catalogue, CatalogueModel
from shared.errors import TextqError
from shared.model_schemas import ShadowReport
from shared.models import Job, JobItem, utcnow
from shared.shadow.compare import Pair, compare
from shared.states import ItemStatus

# The newest pairs of a window a report compares: ROUGE-L is pure Python, and a report is
# a sample's statistics, not an audit.
MAX_PAIRS = 2000


class NoShadowComparison(TextqError):
    """This model neither shadows a default nor is shadowed (`shadow` in the catalogue)."""

    status_code = 404
    problem_type = "no-shadow-comparison"
    title = "No shadow comparison"


def shadowing(catalogue: Catalogue, name: str) -> tuple[CatalogueModel, CatalogueModel]:
    """Return (default, candidate) of the comparison `name` takes part in, as either.

    Raises NoShadowComparison saying which models do take part.
    """
    model = catalogue.by_name.get(name)
    if model is not None and model.default and model.shadow is not None:
        return model, catalogue.by_name[model.shadow]
    for default in catalogue.models:
        if default.default and default.shadow == name:
            return default, catalogue.by_name[name]
    pairs = [f"{m.name} (shadow: {m.shadow})" for m in catalogue.models if m.default and m.shadow]
    what = "has no shadow and shadows no default" if model else "is not in the catalogue"
    raise NoShadowComparison(
        f"Model {name!r} {what}; the defaults with a shadow are: "
        f"{', '.join(pairs) or 'none (set shadow and shadow_fraction on a default)'}."
    )


def shadow_pairs(
    session: Session,
    *,
    default: CatalogueModel,
    candidate: CatalogueModel,
    since: datetime,
    tenant_id: str | None,
    limit: int = MAX_PAIRS,
) -> list[Pair]:
    """Return (default's result, candidate's result) of texts whose shadow finished since
    `since`, newest first, of one tenant (None: all)."""
    original, original_job = aliased(JobItem), aliased(Job)
    query = (
        select(original.result, JobItem.result)
        .join(Job, Job.id == JobItem.job_id)
        .join(original, original.id == JobItem.shadow_of)
        .join(original_job, original_job.id == original.job_id)
        .where(
            JobItem.task == candidate.task.value,
            JobItem.finished_at >= since,
            JobItem.status == ItemStatus.DONE.value,
            JobItem.shadow_of.is_not(None),
            Job.shadow.is_(True),
            Job.model_name == candidate.name,
            original.status == ItemStatus.DONE.value,
            original_job.model_name == default.name,
        )
        .order_by(JobItem.finished_at.desc(), JobItem.id.desc())
        .limit(limit)
    )
    if tenant_id is not None:
        query = query.where(Job.tenant_id == tenant_id)
    return [(row[0], row[1]) for row in session.execute(query)]


def shadow_report(
    session: Session, catalogue: Catalogue, name: str, *, window_h: float, tenant_id: str | None
) -> ShadowReport:
    """Return how the comparison `name` takes part in went over the last `window_h` hours
    (one tenant's texts, or all's with None). Raises NoShadowComparison."""
    default, candidate = shadowing(catalogue, name)
    pairs = shadow_pairs(
        session,
        default=default,
        candidate=candidate,
        since=utcnow() - timedelta(hours=window_h),
        tenant_id=tenant_id,
    )
    found = compare(default.task, pairs)
    return ShadowReport(
        task=default.task,
        default=default.name,
        candidate=candidate.name,
        shadow_fraction=default.shadow_fraction or 0.0,
        window_h=window_h,
        items_compared=found.items,
        limited=found.items >= MAX_PAIRS,
        label_agreement=found.label_agreement,
        labels=found.labels,
        confusion=found.confusion,
        mean_abs_delta_score=found.mean_abs_delta_score,
        max_abs_delta_score=found.max_abs_delta_score,
        mean_rouge_l_f=found.mean_rouge_l_f,
        mean_length_ratio=found.mean_length_ratio,
    )
