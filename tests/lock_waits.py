"""Wait, in a test, until transactions of its Postgres database wait on row locks."""

import time
from collections.abc import Callable

from sqlalchemy import text

from shared.db import Database

_WAITING = text(
    "SELECT count(*) FROM pg_stat_activity"
    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
)


def wait_for_lock_waits(
    db: Database,
    count: int = 1,
    *,
    timeout_s: float = 30.0,
    unless: Callable[[], bool] = lambda: False,
) -> bool:
    """Return True once `count` transactions of `db`'s database wait on a lock; False as
    soon as `unless()` is true first. Raise AssertionError after `timeout_s` seconds."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if unless():
            return False
        with db.read() as session:
            if (session.scalar(_WAITING) or 0) >= count:
                return True
        time.sleep(0.02)
    raise AssertionError(f"fewer than {count} transactions came to wait on a lock")
