"""SQL helpers the job queries share: status lists written out, rows inserted in slices."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import BigInteger, any_, bindparam
from sqlalchemy.dialects.postgresql import ARRAY

from shared.states import ItemStatus, JobStatus

# Rows go into one INSERT in slices this big.
INSERT_SLICE_ROWS = 1000


def literal_in(column: Any, statuses: Iterable[JobStatus | ItemStatus]) -> Any:
    """Return `column IN (...)` with the values written out, as a partial index's WHERE is.

    With bound values, a plan Postgres caches for a prepared statement cannot use the index.
    """
    values = status_values(statuses)
    return column.in_(bindparam("statuses", values, expanding=True, literal_execute=True))


def ids_bound(column: Any, name: str, *, postgres: bool) -> Any:
    """Return `column IN :name` for a column of bigint ids (a claim's thousand items), the
    list bound by name at execution, for a statement built once.

    On Postgres it is `column = ANY(:name)`, one array parameter: written out as `IN`, each
    id is a placeholder SQLAlchemy renders and psycopg parses in Python, about 4 ms of CPU
    for a thousand (measured against 1.5 ms for the array, per claim).
    """
    if postgres:
        return column == any_(bindparam(name, type_=ARRAY(BigInteger)))
    return column.in_(bindparam(name, expanding=True))


def status_values(statuses: Iterable[JobStatus | ItemStatus]) -> list[str]:
    return sorted(status.value for status in statuses)


def slices(rows: Iterable[dict[str, Any]], size: int) -> Iterable[list[dict[str, Any]]]:
    """Yield the rows in lists of `size` (the last one shorter), for one INSERT each."""
    rows_slice: list[dict[str, Any]] = []
    for row in rows:
        rows_slice.append(row)
        if len(rows_slice) == size:
            yield rows_slice
            rows_slice = []
    if rows_slice:
        yield rows_slice
