"""A job's live events as a Server-Sent Events stream: progress, result batches, the end.

Each event's `id` says where the client is: the progress it last saw and the last result
index it was sent (`done.errored.chunks_done.chunks_total.last_index.status`, or `...end`
for `finished`). A client reconnecting with that id in `Last-Event-ID` gets only what
changed since: a progress event only if the figures moved, results only after that index.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Any

import anyio
from fastapi.concurrency import run_in_threadpool

from api.waiting import JobWatch
from shared.errors import InvalidCursor, JobNotFound
from shared.states import JobStatus

# A comment line this often on an idle stream keeps proxies from closing it.
KEEP_ALIVE_S = 15.0
# A stream reads the job at most this often, however often workers announce progress.
MIN_READ_INTERVAL_S = 0.5
# With no announcement, a stream re-reads the job this often anyway (Postgres).
RECHECK_S = 2.0
# What EventSource waits before reconnecting a dropped stream (the `retry:` field), in ms.
RECONNECT_MS = 2000
RESULT_BATCH_ROWS = 1000
END = "end"
MAX_ID_CHARS = 200


@dataclass(frozen=True)
class Position:
    """What a client has been sent: the progress figures, the last result index, the end."""

    done: int = -1
    errored: int = -1
    chunks_done: int = -1
    chunks_total: int = -1
    last_index: int = -1
    status: str = ""

    @property
    def ended(self) -> bool:
        return self.status == END

    def event_id(self) -> str:
        """Return this position as an event id."""
        figures = (self.done, self.errored, self.chunks_done, self.chunks_total, self.last_index)
        return ".".join([*map(str, figures), self.status])

    @classmethod
    def parse(cls, event_id: str) -> Position:
        """Return the position an event id of this stream names; raise InvalidCursor if none."""
        *figures, status = event_id.strip().split(".") if len(event_id) <= MAX_ID_CHARS else [""]
        try:
            numbers = [int(figure) for figure in figures]
        except ValueError:
            numbers = []
        valid_status = status == END or status in {s.value for s in JobStatus}
        if len(numbers) != 5 or not valid_status or min(numbers) < -1:
            raise InvalidCursor(
                f"Last-Event-ID {event_id[:80]!r} is not an id this stream sent; send the id "
                "of the last event received (like 10.0.0.0.9.running), or none to start over."
            )
        done, errored, chunks_done, chunks_total, last_index = numbers
        return cls(done, errored, chunks_done, chunks_total, last_index, status)


@dataclass(frozen=True)
class Snapshot:
    """A job read once: its figures, the progress event's data, the results finished after
    the position's index (entries as JSON, and the last index among them)."""

    status: JobStatus
    done: int
    errored: int
    chunks_done: int
    chunks_total: int
    progress: dict[str, Any]
    results: list[dict[str, Any]]
    last_index: int
    more_results: bool

    @property
    def ended(self) -> bool:
        return self.status not in {JobStatus.QUEUED, JobStatus.RUNNING}

    def progress_of(self, position: Position) -> Position:
        """Return `position` with this snapshot's figures."""
        return replace(
            position,
            done=self.done,
            errored=self.errored,
            chunks_done=self.chunks_done,
            chunks_total=self.chunks_total,
            status=self.status.value,
        )


# Read the job (in a worker thread) given the last result index sent and whether results
# are wanted; raises JobNotFound once the job is gone.
SnapshotReader = Callable[[int, bool], Snapshot]


def event(name: str, data: Any, position: Position) -> bytes:
    """Return one event: its name, id and data (JSON, on one line)."""
    body = json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=str)
    return f"event: {name}\nid: {position.event_id()}\ndata: {body}\n\n".encode()


async def stream_events(
    read: SnapshotReader,
    watch: JobWatch,
    *,
    start: Position,
    results: bool,
    first: Snapshot,
    keep_alive_s: float = KEEP_ALIVE_S,
) -> AsyncIterator[bytes]:
    """Yield the job's events from `start` until `finished` (`first` was read by the route,
    so that an unknown job is a 404 before the stream begins).

    Between reads it sleeps until the job is announced changed (see api/waiting.py), and
    reads at most every `MIN_READ_INTERVAL_S` unless results are waiting to be sent.
    """
    position = start
    yield f"retry: {RECONNECT_MS}\n\n".encode()
    snapshot = first
    last_sent = read_at = time.monotonic()
    while True:
        events, position = _events_of(snapshot, position)
        for chunk in events:
            yield chunk
        if position.ended:
            return
        now = time.monotonic()
        if events:
            last_sent = now
        elif now - last_sent >= keep_alive_s:
            yield b": keep-alive\n\n"
            last_sent = now
        if not snapshot.more_results:
            await watch.changed(min(RECHECK_S, keep_alive_s))
            if (pause := MIN_READ_INTERVAL_S - (time.monotonic() - read_at)) > 0:
                await anyio.sleep(pause)
        read_at = time.monotonic()
        try:
            snapshot = await run_in_threadpool(read, position.last_index, results)
        except JobNotFound:  # deleted while followed: a reconnect will say 404
            return


def _events_of(snapshot: Snapshot, position: Position) -> tuple[list[bytes], Position]:
    """Return the events a snapshot adds to what the client has, and where that leaves it."""
    events = []
    # Progress first: every id then names a status, so any of them can be resumed from.
    moved = snapshot.progress_of(position)
    if moved != position:
        position = moved
        events.append(event("progress", snapshot.progress, position))
    if snapshot.results:
        position = replace(position, last_index=snapshot.last_index)
        events.append(event("result", {"items": snapshot.results}, position))
    if snapshot.ended and not snapshot.more_results:
        position = replace(position, status=END)
        events.append(event("finished", snapshot.progress, position))
    return events, position
