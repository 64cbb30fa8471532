"""The rate limiter: leases of a key's tokens from Redis, and answers while Redis is down."""

import asyncio
import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from api import ratelimit
from api.ratelimit import RateLimiter
from tests import services
from tests.e2e.processes import free_port

T = TypeVar("T")


def test_a_limiter_whose_redis_is_down_limits_in_this_process():
    closed = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    limiter = RateLimiter(rate_per_s=1, burst=2, redis_url=closed, prefix="down")
    decisions = [asyncio.run(limiter.take("key")) for _ in range(3)]
    assert [d.allowed for d in decisions] == [True, True, False]
    assert decisions[-1].headers()["Retry-After"] == "1"


def bucket_tokens(prefix: str, key: str) -> float:
    return float(services.redis_client().hget(f"{prefix}:ratelimit:{key}", "tokens"))


def slow_limiter(prefix: str, burst: int) -> RateLimiter:
    """A limiter on the test Redis that refills so slowly its bucket stays as spent."""
    return RateLimiter(rate_per_s=0.001, burst=burst, redis_url=services.REDIS_URL, prefix=prefix)


def on_fresh_bucket(body: Callable[[str], Awaitable[T]]) -> T:
    """Run `body(prefix)` on an event loop with a bucket prefix of its own, then delete it."""
    prefix = f"lease-{uuid.uuid4().hex[:8]}"
    try:
        return asyncio.run(body(prefix))
    finally:
        services.redis_client().delete(f"{prefix}:ratelimit:key")


def test_a_busy_key_takes_its_tokens_from_redis_a_lease_at_a_time():
    async def main(prefix: str) -> None:
        limiter = slow_limiter(prefix, burst=50)
        assert limiter.lease_size == 5
        try:
            first = [await limiter.take("key")]
            # One lease of five taken from Redis, one spent; the next four spent here.
            assert bucket_tokens(prefix, "key") == pytest.approx(45, abs=0.01)
            first += [await limiter.take("key") for _ in range(4)]
            assert all(d.allowed for d in first)
            assert bucket_tokens(prefix, "key") == pytest.approx(45, abs=0.01)
            assert [d.remaining for d in first] == [49, 48, 47, 46, 45]
            assert (await limiter.take("key")).allowed
            assert bucket_tokens(prefix, "key") == pytest.approx(40, abs=0.01)
            rest = [await limiter.take("key") for _ in range(50)]
            # The burst, no more: 50 in all, then refused with a Retry-After.
            assert sum(d.allowed for d in first + rest) + 1 == 50
            assert not rest[-1].allowed and int(rest[-1].headers()["Retry-After"]) >= 1
        finally:
            await limiter.close()

    on_fresh_bucket(main)


def test_requests_that_find_the_lease_spent_together_share_the_next_one():
    async def main(prefix: str) -> list[bool]:
        limiter = slow_limiter(prefix, burst=50)
        try:
            # All at once, as a busy key's requests arrive when its lease runs out.
            together = await asyncio.gather(*[limiter.take("key") for _ in range(50)])
            return [d.allowed for d in together] + [(await limiter.take("key")).allowed]
        finally:
            await limiter.close()

    assert on_fresh_bucket(main) == [True] * 50 + [False]


def test_processes_sharing_a_key_never_pass_its_burst_between_them():
    async def main(prefix: str) -> tuple[int, int]:
        limiters = [slow_limiter(prefix, burst=40) for _ in range(3)]
        try:
            allowed = [
                (await limiter.take("key")).allowed for _ in range(30) for limiter in limiters
            ]
            return sum(allowed), limiters[0].lease_size
        finally:
            for limiter in limiters:
                await limiter.close()

    allowed, lease = on_fresh_bucket(main)
    # At most the burst; at least the burst less what the other two hold unspent.
    assert 40 - 2 * (lease - 1) <= allowed <= 40


def test_a_lapsed_lease_gives_its_unspent_tokens_back(monkeypatch):
    monkeypatch.setattr(ratelimit, "LEASE_S", 0.05)

    async def main(prefix: str) -> None:
        limiter = slow_limiter(prefix, burst=50)
        try:
            assert (await limiter.take("key")).allowed  # a lease of 5, one spent
            await asyncio.sleep(0.1)
            assert (await limiter.take("key")).allowed  # 4 back, a new lease of 5
            assert bucket_tokens(prefix, "key") == pytest.approx(44, abs=0.01)
        finally:
            await limiter.close()

    on_fresh_bucket(main)


def test_requests_waiting_for_a_lease_do_not_each_wait_for_a_redis_that_hangs():
    # A server that accepts connections and never answers.
    silent = socket.create_server(("127.0.0.1", 0))
    silent.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        silent.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                held.append(silent.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"

    async def main() -> tuple[list[bool], float]:
        limiter = RateLimiter(rate_per_s=1, burst=50, redis_url=url, prefix="hangs")
        started = time.monotonic()
        together = await asyncio.gather(*[limiter.take("key") for _ in range(10)])
        return [d.allowed for d in together], time.monotonic() - started

    try:
        allowed, elapsed = asyncio.run(main())
    finally:
        stop.set()
        thread.join()
        for connection in [*held, silent]:
            connection.close()
    # Limited in this process once the first ask timed out (0.5 s), not ten timeouts in turn.
    assert allowed == [True] * 10
    assert elapsed < 0.5 * 4
