"""Which doorbell queues need no ring now: one waits there already, or a drain is looking.

A doorbell only says "look in the database", and a drain claims every pending item of its
models, so while one ring waits in a queue, or a worker is draining that queue's models,
another ring adds nothing but a broker message and a drain that finds its work already
claimed. Under a stream of one-text jobs that was a publish in every submit and a Celery
task in the worker for about every job.

A queue is marked when a ring is published there, and by a drain while it works (`hold`).
A drain lets go of its queues (`release`) only when it has found no work, and then looks
once more before it ends. So a job whose ring was skipped, committed before the release,
is found by that last look, and a job committed after it finds no mark and rings: no job
is left without a ring or a look that comes after its commit. A mark expires after
`RING_MEMORY_S` in case its ring or its drain was lost with its process; the sweeper's
rings never look at it.

The marks live where the doorbells do: keys in the Redis broker, or files beside the
embedded broker's queue. A broker this code cannot mark (any other URL), or a mark store
that fails, rings every time, as before.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path

import redis

from shared.config import Settings

log = logging.getLogger(__name__)

# How long a mark stands for a ring nobody took, or a drain that stopped renewing it. A
# ring waiting in a queue longer (behind a long drain) costs one more ring after it, not a
# lost job; a mark left by a dead process delays new jobs' rings by at most this, and the
# sweeper rings within its interval anyway.
RING_MEMORY_S = 10.0
# Short, so a submit waits at most this long on a Redis that went away.
REDIS_TIMEOUT_S = 0.5


class UnansweredRings:
    """Marks, per broker queue, a ring not yet taken by a worker or a drain at work."""

    def __init__(self, settings: Settings) -> None:
        url = settings.resolved_broker_url
        self._key_prefix = f"{settings.queue_prefix}.unanswered-ring."
        self._redis: redis.Redis | None = None
        self._folder: Path | None = None
        if url.startswith(("redis://", "rediss://")):
            self._redis = redis.Redis.from_url(
                url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S
            )
        elif settings.is_embedded_broker:
            self._folder = settings.broker_dir / "unanswered"

    def mark(self, queue: str) -> bool:
        """Mark a ring of `queue` as waiting; return False if one already waits (skip this
        ring), True if the caller should publish (also when the mark cannot be read)."""
        try:
            if self._redis is not None:
                ttl_ms = int(RING_MEMORY_S * 1000)
                return bool(self._redis.set(self._key_prefix + queue, b"1", nx=True, px=ttl_ms))
            if self._folder is not None:
                return self._mark_file(self._folder / queue)
        except (OSError, redis.RedisError) as error:
            log.debug("cannot mark a ring of %s: %s", queue, error)
        return True

    def hold(self, queues: Iterable[str]) -> None:
        """Mark `queues` (anew, for `RING_MEMORY_S`) for a drain that will look again."""
        names = list(queues)
        try:
            if self._redis is not None and names:
                ttl_ms = int(RING_MEMORY_S * 1000)
                with self._redis.pipeline(transaction=False) as pipe:
                    for name in names:
                        pipe.set(self._key_prefix + name, b"1", px=ttl_ms)
                    pipe.execute()
            elif self._folder is not None:
                self._folder.mkdir(parents=True, exist_ok=True)
                for name in names:
                    (self._folder / name).touch()
        except (OSError, redis.RedisError) as error:  # rings are published meanwhile
            log.debug("cannot mark %s as drained: %s", names, error)

    def clear(self, queues: Iterable[str]) -> None:
        """Forget the marks of `queues`: a drain let go of them, or a ring never left."""
        names = list(queues)
        try:
            if self._redis is not None and names:
                self._redis.delete(*(self._key_prefix + name for name in names))
            elif self._folder is not None:
                for name in names:
                    (self._folder / name).unlink(missing_ok=True)
        except (OSError, redis.RedisError) as error:  # the mark expires on its own
            log.debug("cannot clear the ring marks of %s: %s", names, error)

    def _mark_file(self, path: Path) -> bool:
        for _ in range(2):
            try:
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
                return True
            except FileNotFoundError:
                path.parent.mkdir(parents=True, exist_ok=True)
            except FileExistsError:
                try:
                    if time.time() - path.stat().st_mtime < RING_MEMORY_S:
                        return False
                    path.unlink(missing_ok=True)  # a mark outlived its ring
                except FileNotFoundError:
                    pass  # cleared meanwhile: mark it anew
        return True
