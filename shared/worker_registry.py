"""Which workers run and what each serves: registered at start, seen at each sweep."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from shared.models import Worker, utcnow


def register_worker(
    session: Session, *, name: str, device: str, dtype: str, models: dict[str, Any]
) -> None:
    """Record a worker that just started (replacing a row of an earlier one of the name)."""
    now = utcnow()
    session.merge(
        Worker(
            name=name, device=device, dtype=dtype, models=models, started_at=now, last_seen_at=now
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
    session: Session, *, task: str, model: str, sweep_interval_s: float
) -> int:
    """Count the live workers that claim `task` items of `model` (as jobs name it)."""
    return sum(
        1
        for worker in list_workers(session)
        if (worker.models.get(task) or {}).get("model") == model
        and is_live(worker, sweep_interval_s=sweep_interval_s)
    )


def is_live(worker: Worker, *, sweep_interval_s: float, now: datetime | None = None) -> bool:
    """Say whether a worker was seen recently enough to be running (three sweeps' grace)."""
    grace = timedelta(seconds=3 * sweep_interval_s + 30)
    return (now or utcnow()) - worker.last_seen_at <= grace
