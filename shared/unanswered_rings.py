"""Which doorbell queues hold a ring no worker has taken yet: a second ring there is skipped.

A doorbell only says "look in the database", and a drain claims every pending item of its
models, so while one ring waits in a queue, another adds nothing but a broker message and a
drain that finds its work already claimed. Under a stream of one-text jobs that was a
publish in every submit and a Celery task in the worker for every job.

The mark is set when a ring is published and cleared by the worker when it takes a ring,
before its drain claims anything. So a job committed before the clear is seen by that
drain, and a job committed after it finds no mark and rings again: no job is left without
a ring that comes after its commit. The mark expires after `RING_MEMORY_S` in case the
ring it stands for was lost with its publisher; the sweeper's rings never look at it.

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

# How long a mark stands for a ring nobody took. A ring waiting in a queue longer (behind
# a long drain) costs one more ring after it, not a lost job; a ring lost with its marker
# delays new jobs' rings by at most this, and the sweeper rings within its interval anyway.
RING_MEMORY_S = 10.0
# Short, so a submit waits at most this long on a Redis that went away.
REDIS_TIMEOUT_S = 0.5


class UnansweredRings:
    """Marks, per broker queue, a ring published and not yet taken by a worker."""

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

    def clear(self, queues: Iterable[str]) -> None:
        """Forget the marks of `queues`: their rings were taken, or never published."""
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
