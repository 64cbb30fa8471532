"""Opaque page cursors: what the last page ended on, base64url-encoded."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import datetime
from typing import Any

from shared.errors import InvalidCursor


def _encode(payload: dict[str, Any]) -> str:
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


MAX_CURSOR_CHARS = 512
MAX_INDEX = 2**31 - 1


def _decode(cursor: str, kind: str) -> dict[str, Any]:
    if len(cursor) > MAX_CURSOR_CHARS:
        raise InvalidCursor()
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        payload = json.loads(raw)
    except (ValueError, RecursionError):
        raise InvalidCursor() from None
    if not isinstance(payload, dict) or payload.get("k") != kind:
        raise InvalidCursor()
    return payload


def job_cursor(created_at: datetime, job_id: uuid.UUID) -> str:
    """Return the cursor after a job in the newest-first listing."""
    return _encode({"k": "jobs", "t": created_at.isoformat(), "id": str(job_id)})


def read_job_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """Return the (created_at, id) a jobs cursor points after."""
    payload = _decode(cursor, "jobs")
    created, job_id = payload.get("t"), payload.get("id")
    if not isinstance(created, str) or not isinstance(job_id, str):
        raise InvalidCursor()
    try:
        moment = datetime.fromisoformat(created)
        parsed = uuid.UUID(job_id)
    except ValueError:
        raise InvalidCursor() from None
    if moment.tzinfo is None:
        raise InvalidCursor()
    return moment, parsed


def result_cursor(index: int) -> str:
    """Return the cursor after the result with this index."""
    return _encode({"k": "results", "i": index})


def read_result_cursor(cursor: str) -> int:
    """Return the item index a results cursor points after."""
    index = _decode(cursor, "results").get("i")
    if not isinstance(index, int) or isinstance(index, bool) or not -1 <= index <= MAX_INDEX:
        raise InvalidCursor()
    return index
