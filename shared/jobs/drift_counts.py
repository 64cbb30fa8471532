"""Hourly drift counts: added as a batch's outcomes are recorded, read back per window."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from shared.drift import (
    FEATURES,
    FeatureDrift,
    Window,
    compare,
    current_window,
    features_of,
    hour_of,
    reference_window,
)
from shared.jobs.work import Outcome
from shared.models import DriftCount, Job
from shared.states import Task

CountKey = tuple[str, str, datetime, str, str]  # model, tenant, hour, feature, bin


def count_drift(
    session: Session, measured: Sequence[tuple[uuid.UUID, Outcome]], *, now: datetime
) -> None:
    """Add outcomes of texts (with their job ids) to this hour's counts in one upsert.

    Counted in Python first, so the database gets one row per model, tenant, feature and
    bin whatever the batch's size. Rows go in key order: two recorders upserting the same
    counts lock them in the same order and cannot deadlock.
    """
    if not measured:
        return
    # Keyed by the catalogue name (jobs from before the catalogue: by their source). Shadow
    # jobs copy a default's texts onto its candidate: not traffic of the candidate's own.
    jobs = {
        row.id: (row.model_name or row.model, row.tenant_id, Task(row.task))
        for row in session.execute(
            _JOBS_MEASURED, {"job_ids": sorted({job_id for job_id, _ in measured})}
        )
    }
    hour = hour_of(now)
    counts: Counter[CountKey] = Counter()
    for job_id, outcome in measured:
        if job_id not in jobs:
            continue
        model, tenant, task = jobs[job_id]
        for feature, name in features_of(task, outcome):
            counts[(model, tenant, hour, feature, name)] += 1
    if not counts:
        return
    rows = [
        {"model": m, "tenant_id": t, "hour": h, "feature": f, "bin": b, "item_count": n}
        for (m, t, h, f, b), n in sorted(counts.items())
    ]
    # An executemany of one statement built once (psycopg pipelines the rows, in order, in
    # one round trip): a multi-row VALUES was compiled anew for each count of rows.
    session.connection().execute(_UPSERT[session.get_bind().dialect.name], rows)


def _upsert(dialect: str) -> Any:
    """Return the upsert of one count row: added to the row of its key if there is one."""
    insert_into = postgresql_insert if dialect == "postgresql" else sqlite_insert
    upsert = insert_into(cast(Table, DriftCount.__table__))
    return upsert.on_conflict_do_update(
        index_elements=["model", "tenant_id", "hour", "feature", "bin"],
        set_={"item_count": DriftCount.item_count + upsert.excluded.item_count},
    )


_UPSERT = {dialect: _upsert(dialect) for dialect in ("postgresql", "sqlite")}


_JOBS_MEASURED = select(Job.id, Job.model, Job.model_name, Job.tenant_id, Job.task).where(
    Job.id.in_(bindparam("job_ids", expanding=True)), Job.shadow.is_(False)
)


def first_hours(session: Session, *, model: str | None = None) -> dict[tuple[str, str], datetime]:
    """Return the first counted hour of each (model, tenant), of one model or of all."""
    query = select(DriftCount.model, DriftCount.tenant_id, func.min(DriftCount.hour)).group_by(
        DriftCount.model, DriftCount.tenant_id
    )
    if model is not None:
        query = query.where(DriftCount.model == model)
    return {(m, t): first for m, t, first in session.execute(query)}


def window_counts(
    session: Session, window: Window, *, model: str | None = None, tenant: str | None = None
) -> dict[tuple[str, str, str], Counter[str]]:
    """Return the counts per bin of each (model, tenant, feature) over a window."""
    query = (
        select(
            DriftCount.model,
            DriftCount.tenant_id,
            DriftCount.feature,
            DriftCount.bin,
            func.sum(DriftCount.item_count),
        )
        .where(DriftCount.hour >= window.start, DriftCount.hour < window.end)
        .group_by(DriftCount.model, DriftCount.tenant_id, DriftCount.feature, DriftCount.bin)
    )
    if model is not None:
        query = query.where(DriftCount.model == model)
    if tenant is not None:
        query = query.where(DriftCount.tenant_id == tenant)
    counts: dict[tuple[str, str, str], Counter[str]] = {}
    for m, t, feature, name, items in session.execute(query):
        counts.setdefault((m, t, feature), Counter())[name] = int(items)
    return counts


def tenant_drift(
    session: Session,
    *,
    model: str,
    task: Task,
    tenant: str,
    now: datetime,
    pinned: Window | None,
) -> tuple[Window | None, Window, list[FeatureDrift]]:
    """Return a model's reference and current windows for a tenant, and each feature's drift."""
    current = current_window(now)
    first = first_hours(session, model=model).get((model, tenant))
    reference = reference_window(first, pinned)
    ref_counts = window_counts(session, reference, model=model, tenant=tenant) if reference else {}
    cur_counts = window_counts(session, current, model=model, tenant=tenant)
    features = [
        compare(
            feature,
            ref_counts.get((model, tenant, feature), Counter()),
            cur_counts.get((model, tenant, feature), Counter()),
            reference=reference,
            current=current,
        )
        for feature in FEATURES[task]
    ]
    return reference, current, features


def all_drift(
    session: Session, *, now: datetime, pinned: Window | None
) -> list[tuple[str, str, FeatureDrift]]:
    """Return the drift of every (model, tenant, feature) counted in the last 24 hours.

    One query for the last 24 hours of all; one per (model, tenant) for its own reference
    window once that is over (one in all when the operator pinned it).
    """
    current = current_window(now)
    cur_counts = window_counts(session, current)
    pinned_counts = window_counts(session, pinned) if pinned else None
    firsts = first_hours(session)
    found = []
    for model, tenant in sorted({(m, t) for m, t, _ in cur_counts}):
        reference = reference_window(firsts.get((model, tenant)), pinned)
        if pinned_counts is not None:
            ref_counts = pinned_counts
        elif reference is not None and current.start >= reference.end:
            ref_counts = window_counts(session, reference, model=model, tenant=tenant)
        else:
            ref_counts = {}  # compare says why there is no PSI without reading any
        features = {f for m, t, f in cur_counts if (m, t) == (model, tenant)}
        features |= {f for m, t, f in ref_counts if (m, t) == (model, tenant)}
        for feature in sorted(features):
            found.append(
                (
                    model,
                    tenant,
                    compare(
                        feature,
                        ref_counts.get((model, tenant, feature), Counter()),
                        cur_counts.get((model, tenant, feature), Counter()),
                        reference=reference,
                        current=current,
                    ),
                )
            )
    return found
