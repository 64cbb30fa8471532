"""A token bucket per API key: in Redis when the broker is Redis (shared by every API
process), else in this process (the embedded mode has one API process).

While Redis does not answer, each API process limits on its own: a broker outage must
not turn every request into an error, and jobs it accepts meanwhile are safe in the
database."""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass

import redis
import redis.asyncio

log = logging.getLogger(__name__)

# Short, so a request waits at most this long on a Redis that went away.
REDIS_TIMEOUT_S = 0.5

# KEYS[1]: the bucket; ARGV: rate per second, burst, now (s). Returns allowed, tokens left,
# seconds until a token is back. One script call, so concurrent API processes cannot both
# spend the last token.
_TAKE = """
local rate, burst, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + (now - at) * rate)
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', now)
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 1)
return {allowed, tostring(tokens), tostring((1 - math.min(tokens, 1)) / rate)}
"""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    retry_after_s: float

    def headers(self) -> dict[str, str]:
        """Return the RateLimit-* headers (and Retry-After when refused)."""
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(math.ceil(self.retry_after_s)),
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after_s)))
        return headers


class RateLimiter:
    """Allows `rate_per_s` requests per key on average, in bursts of up to `burst`."""

    def __init__(self, *, rate_per_s: float, burst: int, redis_url: str | None, prefix: str):
        self.rate_per_s, self.burst, self.prefix = rate_per_s, burst, prefix
        self._redis = (
            redis.asyncio.Redis.from_url(
                redis_url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S
            )
            if redis_url
            else None
        )
        self._script = self._redis.register_script(_TAKE) if self._redis else None
        self._local: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    async def take(self, key: str) -> Decision:
        """Spend a token of `key`'s bucket if it has one (one Redis call, on the event loop)."""
        now = time.time()
        if self._script is not None:
            try:
                allowed, tokens, wait_s = await self._script(
                    keys=[f"{self.prefix}:ratelimit:{key}"],
                    args=[self.rate_per_s, self.burst, now],
                )
            except redis.RedisError as error:
                log.warning(
                    "rate limit store unreachable, limiting in this process: %s",
                    error,
                    extra={"action": "ratelimit_local"},
                )
            else:
                return self._decision(bool(allowed), float(tokens), float(wait_s))
        return self._take_locally(key, now)

    async def close(self) -> None:
        """Close the connections to Redis."""
        if self._redis is not None:
            await self._redis.aclose()

    def _take_locally(self, key: str, now: float) -> Decision:
        with self._lock:
            tokens, at = self._local.get(key, (float(self.burst), now))
            tokens = min(self.burst, tokens + (now - at) * self.rate_per_s)
            allowed = tokens >= 1
            tokens -= 1 if allowed else 0
            self._local[key] = (tokens, now)
        return self._decision(allowed, tokens, (1 - min(tokens, 1)) / self.rate_per_s)

    def _decision(self, allowed: bool, tokens: float, wait_s: float) -> Decision:
        return Decision(allowed, self.burst, int(tokens), wait_s if not allowed else 0.0)
