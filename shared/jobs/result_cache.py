"""The result cache: results looked up and stored by key, old entries dropped."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from shared.jobs.rows import INSERT_SLICE_ROWS, slices
from shared.models import CachedResult, utcnow


def cached_results(session: Session, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Return the cached results among `keys`."""
    wanted = sorted(set(keys))
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(wanted), INSERT_SLICE_ROWS):
        rows = session.execute(
            select(CachedResult.key, CachedResult.result).where(
                CachedResult.key.in_(wanted[start : start + INSERT_SLICE_ROWS])
            )
        ).all()
        found.update({key: result for key, result in rows})
    return found


def remember_results(session: Session, entries: dict[str, dict[str, Any]]) -> None:
    """Cache results by key; a key already cached keeps its first result."""
    dialect = session.get_bind().dialect.name
    insert_into = postgresql_insert if dialect == "postgresql" else sqlite_insert
    now = utcnow()
    rows = [{"key": key, "result": result, "created_at": now} for key, result in entries.items()]
    for rows_slice in slices(rows, INSERT_SLICE_ROWS):
        session.execute(insert_into(CachedResult).on_conflict_do_nothing(), rows_slice)


def forget_results_before(session: Session, moment: datetime) -> int:
    """Drop cache entries created before `moment`; return how many."""
    result = session.execute(delete(CachedResult).where(CachedResult.created_at < moment))
    return int(result.rowcount)  # type: ignore[attr-defined]
