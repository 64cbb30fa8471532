"""Wait for a job to finish, or to change, without hammering the database.

On Postgres, workers `NOTIFY` when a job finishes and when its outcomes are stored, and one
listener thread per API process wakes the requests waiting for it (long polls wait for the
end, event streams and followed exports for any change); a slow re-check covers
notifications lost while the listener reconnects. On SQLite (no notifications) waiting falls
back to polling with backoff.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import anyio
import psycopg
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.engine import make_url

from shared.db import Database
from shared.jobs.after_commit import JOB_FINISHED_CHANNEL, JOB_PROGRESS_CHANNEL

log = logging.getLogger(__name__)

T = TypeVar("T")

FIRST_POLL_S = 0.02
MAX_POLL_S = 0.25
# With notifications a waiter re-reads the job this often anyway, in case one was missed.
NOTIFIED_RECHECK_S = 2.0
LISTEN_TIMEOUT_S = 0.25
RECONNECT_DELAY_S = 1.0


class JobWatch:
    """One request's watch on one job: `changed` returns when the job may have changed."""

    def __init__(self, event: asyncio.Event, listening: threading.Event) -> None:
        self._event = event
        self._listening = listening
        self._delay_s = FIRST_POLL_S

    async def changed(self, timeout_s: float) -> None:
        """Return once the job is announced changed, or a pause has passed, at most `timeout_s`.

        The pause is the slow re-check while notifications arrive (Postgres), otherwise a
        backoff from 20 ms to 250 ms, as the long poll's. The caller re-reads the job after.
        """
        pause = NOTIFIED_RECHECK_S if self._listening.is_set() else self._delay_s
        with anyio.move_on_after(max(min(pause, timeout_s), 0)):
            await self._event.wait()
        self._event.clear()
        self._delay_s = min(self._delay_s * 2, MAX_POLL_S)


class JobWaiter:
    """Lets requests wait for jobs to finish or to change; one per API process."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._events: dict[uuid.UUID, set[asyncio.Event]] = {}
        self._watchers: dict[uuid.UUID, set[asyncio.Event]] = {}
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

    @contextmanager
    def watch(self, job_id: uuid.UUID) -> Iterator[JobWatch]:
        """Watch a job for as long as the block runs: its progress and its end (call on the
        event loop)."""
        event = asyncio.Event()
        self._watchers.setdefault(job_id, set()).add(event)
        try:
            yield JobWatch(event, self._listening)
        finally:
            watching = self._watchers.get(job_id, set())
            watching.discard(event)
            if not watching:
                self._watchers.pop(job_id, None)

    def _wake(self, job_id: uuid.UUID, *, finished: bool) -> None:
        for event in (
            *self._watchers.get(job_id, ()),
            *(self._events.get(job_id, ()) if finished else ()),
        ):
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
                    connection.execute(f"LISTEN {JOB_PROGRESS_CHANNEL}")
                    self._listening.set()
                    while not self._stopping.is_set():
                        for notify in connection.notifies(timeout=LISTEN_TIMEOUT_S):
                            self._dispatch(notify.channel, notify.payload)
            except Exception as error:  # a dropped connection: fall back to polling, retry
                self._listening.clear()
                log.warning("job listener reconnecting: %s", error, extra={"action": "listen"})
                self._stopping.wait(RECONNECT_DELAY_S)
        self._listening.clear()

    def _dispatch(self, channel: str, payload: str) -> None:
        try:
            job_id = uuid.UUID(payload)
        except ValueError:
            return
        finished = channel == JOB_FINISHED_CHANNEL
        if self._loop is not None and (
            job_id in self._watchers or (finished and job_id in self._events)
        ):
            self._loop.call_soon_threadsafe(
                functools.partial(self._wake, job_id, finished=finished)
            )
