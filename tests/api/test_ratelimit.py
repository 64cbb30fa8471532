"""The rate limiter keeps answering while its Redis is down."""

import asyncio

from api.ratelimit import RateLimiter
from tests.e2e.processes import free_port


def test_a_limiter_whose_redis_is_down_limits_in_this_process():
    closed = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    limiter = RateLimiter(rate_per_s=1, burst=2, redis_url=closed, prefix="down")
    decisions = [asyncio.run(limiter.take("key")) for _ in range(3)]
    assert [d.allowed for d in decisions] == [True, True, False]
    assert decisions[-1].headers()["Retry-After"] == "1"
