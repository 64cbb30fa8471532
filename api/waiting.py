"""Wait for a job to finish without hammering the database.

On Postgres, workers `NOTIFY` when a job finishes and one listener thread per API process wakes
the requests waiting for it; a slow re-check covers notifications lost while the listener
reconnects. On SQLite (no notifications) waiting falls back to polling with backoff.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import TypeVar

import anyio
import psycopg
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.engine import make_url

from shared.db import Database
from shared.jobs.after_commit import JOB_FINISHED_CHANNEL

log = logging.getLogger(__name__)

T = TypeVar("T")

FIRST_POLL_S = 0.02
MAX_POLL_S = 0.25
# With notifications a waiter re-reads the job this often anyway, in case one was missed.
NOTIFIED_RECHECK_S = 2.0
LISTEN_TIMEOUT_S = 0.25
RECONNECT_DELAY_S = 1.0


class JobWaiter:
    """Lets requests wait for jobs to finish; one per API process."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._events: dict[uuid.UUID, set[asyncio.Event]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = threading.Event()
        self._listening = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start listening for finished jobs (Postgres only); call from the event loop."""
        self._loop = asyncio.get_running_loop()
        if self.db.engine.dialect.name == "postgresql":
            self._thread = threading.Thread(target=self._listen, name="textq-listen", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=LISTEN_TIMEOUT_S * 3)

    async def wait(
        self, job_id: uuid.UUID, check: Callable[[], T | None], timeout_s: float
    ) -> T | None:
        """Return `check()`'s first non-None answer, or None once `timeout_s` has passed.

        `check` reads the job (it runs in a worker thread) and answers None while it is not
        finished.
        """
        event = asyncio.Event()
        self._events.setdefault(job_id, set()).add(event)
        deadline = time.monotonic() + timeout_s
        delay = FIRST_POLL_S
        try:
            while True:
                answer = await run_in_threadpool(check)
                remaining = deadline - time.monotonic()
                if answer is not None or remaining <= 0:
                    return answer
                pause = NOTIFIED_RECHECK_S if self._listening.is_set() else delay
                with anyio.move_on_after(min(pause, remaining)):
                    await event.wait()
                event.clear()
                delay = min(delay * 2, MAX_POLL_S)
        finally:
            waiting = self._events.get(job_id, set())
            waiting.discard(event)
            if not waiting:
                self._events.pop(job_id, None)

    def _wake(self, job_id: uuid.UUID) -> None:
        for event in self._events.get(job_id, ()):
            event.set()

    def _listen(self) -> None:
        conninfo = make_url(self.db.url).set(drivername="postgresql")
        while not self._stopping.is_set():
            try:
                with psycopg.connect(
                    conninfo.render_as_string(hide_password=False),
                    autocommit=True,
                    connect_timeout=5,
                    application_name="textq-api-listen",
                ) as connection:
                    connection.execute(f"LISTEN {JOB_FINISHED_CHANNEL}")
                    self._listening.set()
                    while not self._stopping.is_set():
                        for notify in connection.notifies(timeout=LISTEN_TIMEOUT_S):
                            self._dispatch(notify.payload)
            except Exception as error:  # a dropped connection: fall back to polling, retry
                self._listening.clear()
                log.warning("job listener reconnecting: %s", error, extra={"action": "listen"})
                self._stopping.wait(RECONNECT_DELAY_S)
        self._listening.clear()

    def _dispatch(self, payload: str) -> None:
        try:
            job_id = uuid.UUID(payload)
        except ValueError:
            return
        if self._loop is not None and job_id in self._events:
            self._loop.call_soon_threadsafe(self._wake, job_id)
