"""Which workers run and what each serves: registered at start, seen at each sweep."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from shared.model_limits import ModelLimits, narrowest
from shared.models import Worker, utcnow


def register_worker(
    session: Session,
    *,
    name: str,
    device: str,
    dtype: str,
    models: dict[str, Any],
    served: list[dict[str, Any]] | None = None,
) -> None:
    """Record a worker that just started, or what it serves and has loaded since.

    `models`: the task defaults, `{task: {"model", "revision", "limits"}}`; `served`: every
    catalogue model it serves (see `Worker.served`).
    """
    now = utcnow()
    existing = session.get(Worker, name)
    if existing is not None and served is not None and existing.served is not None:
        # The same worker listing a model it loaded since: it keeps its start.
        existing.models, existing.served, existing.last_seen_at = models, served, now
        existing.device, existing.dtype = device, dtype
        return
    session.merge(
        Worker(
            name=name,
            device=device,
            dtype=dtype,
            models=models,
            served=served,
            started_at=now,
            last_seen_at=now,
        )
    )


def worker_seen(session: Session, name: str) -> None:
    session.execute(update(Worker).where(Worker.name == name).values(last_seen_at=utcnow()))


def forget_worker(session: Session, name: str) -> None:
    session.execute(delete(Worker).where(Worker.name == name))


def forget_workers_unseen_since(session: Session, cutoff: datetime) -> int:
    """Drop workers that died without saying so; return how many."""
    result = session.execute(delete(Worker).where(Worker.last_seen_at < cutoff))
    return int(result.rowcount)  # type: ignore[attr-defined]


def list_workers(session: Session) -> list[Worker]:
    return list(session.scalars(select(Worker).order_by(Worker.name)))


def live_workers_serving(
    session: Session,
    *,
    task: str,
    model: str,
    sweep_interval_s: float,
    model_name: str | None = None,
) -> int:
    """Count the live workers that claim `task` items of `model` (see `live_workers_of`)."""
    return len(
        live_workers_of(
            session,
            task=task,
            model=model,
            sweep_interval_s=sweep_interval_s,
            model_name=model_name,
        )
    )


def live_workers_of(
    session: Session,
    *,
    task: str,
    model: str,
    sweep_interval_s: float,
    model_name: str | None = None,
) -> list[Worker]:
    """Return the live workers that claim `task` items of `model` (the source jobs name).

    With `model_name` (the job's catalogue model), only those serving that catalogue model
    count, as only they claim its items; a worker from before the catalogue (entries named
    by nothing) claims by source, so it counts. A worker that could not load the model
    (its entry has an `error`: missing files, larger than its memory budget) runs none of
    its items, so it does not count.
    """
    return [
        worker
        for worker in list_workers(session)
        if is_live(worker, sweep_interval_s=sweep_interval_s)
        and any(
            entry.get("task") == task
            and entry.get("model") == model
            and (model_name is None or entry.get("name") in (None, model_name))
            and not entry.get("error")
            for entry in served_entries(worker)
        )
    ]


def limits_of_live_workers(
    session: Session, *, task: str, model: str, sweep_interval_s: float
) -> ModelLimits | None:
    """Return what every live worker serving `task` items of `model` can honour (the
    narrowest of their recorded limits), or None while none has recorded any."""
    entries = _live_entries(session, task=task, model=model, sweep_interval_s=sweep_interval_s)
    found = [ModelLimits.from_json(entry.get("limits")) for entry in entries]
    return narrowest(limits for limits in found if limits is not None)


def served_entries(worker: Worker) -> list[dict[str, Any]]:
    """Return every model a worker serves, as `Worker.served` lists them (a worker from
    before the catalogue: its `models[task]` entries, named by nothing, all loaded)."""
    if worker.served is not None:
        return list(worker.served)
    return [
        {"name": None, "task": task, "loaded": True, **entry}
        for task, entry in (worker.models or {}).items()
    ]


def _live_entries(
    session: Session, *, task: str, model: str, sweep_interval_s: float
) -> list[dict[str, Any]]:
    """Return the entries of the live workers' models of `task` whose source is `model`."""
    return [
        entry
        for worker in list_workers(session)
        if is_live(worker, sweep_interval_s=sweep_interval_s)
        for entry in served_entries(worker)
        if entry.get("task") == task and entry.get("model") == model
    ]


def is_live(worker: Worker, *, sweep_interval_s: float, now: datetime | None = None) -> bool:
    """Say whether a worker was seen recently enough to be running (three sweeps' grace)."""
    grace = timedelta(seconds=3 * sweep_interval_s + 30)
    return (now or utcnow()) - worker.last_seen_at <= grace
