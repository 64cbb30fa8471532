"""A token bucket per API key: in Redis when the broker is Redis (shared by every API
process), else in this process (the embedded mode has one API process).

An API process takes a key's tokens from Redis a few at a time (a lease: a tenth of the
burst) and spends them itself for up to a second, so a busy key costs one Redis call per
lease instead of one per request; what a lapsed lease left unspent goes back with the next
take. The price: tokens one process holds unspent are not there for another, so with
several API processes a key may be refused up to a lease's worth of tokens early per
process, and `RateLimit-Remaining` is as of the last lease.

While Redis does not answer, each API process limits on its own: a broker outage must
not turn every request into an error, and jobs it accepts meanwhile are safe in the
database."""

from __future__ import annotations

import asyncio
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

# Of a key's burst, the most one process takes from Redis at once; and how long it may
# spend them, so that a process whose clients went quiet does not sit on them.
LEASE_SHARE = 0.1
LEASE_S = 1.0
# After Redis failed to answer, requests limit in this process this long before asking again.
STORE_RETRY_S = 1.0

# KEYS[1]: the bucket; ARGV: rate per second, burst, now (s), tokens wanted, tokens given
# back (a lapsed lease's unspent ones). Takes as many whole tokens as it has, up to those
# wanted; returns how many it took, the tokens left and the seconds until a token is back.
# One script call, so concurrent API processes cannot both spend the last token.
_TAKE = """
local rate, burst, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local wanted, returned = tonumber(ARGV[4]), tonumber(ARGV[5])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + (now - at) * rate + returned)
local taken = math.max(0, math.min(wanted, math.floor(tokens)))
tokens = tokens - taken
redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', now)
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 1)
return {taken, tostring(tokens), tostring((1 - math.min(tokens, 1)) / rate)}
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


@dataclass
class _Lease:
    """Tokens of a key this process took from Redis and has not spent, until `until`
    (epoch seconds); `left_in_store`: the tokens Redis had left when they were taken."""

    tokens: int
    left_in_store: float
    until: float


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
        self.lease_size = max(1, int(burst * LEASE_SHARE))
        self._leases: dict[str, _Lease] = {}
        self._leasing: dict[str, asyncio.Lock] = {}
        self._store_down_until = 0.0

    async def take(self, key: str) -> Decision:
        """Spend a token of `key`'s bucket if it has one: from this process's lease while it
        lasts, else from Redis (one call, on the event loop, that leases the next ones)."""
        if self._script is None or time.time() < self._store_down_until:
            return self._take_locally(key, time.time())
        if (spent := self._spend_leased(key)) is not None:
            return spent
        if self.lease_size == 1:  # nothing to share: each request asks Redis, as ever
            return await self._lease(key)
        # One lease at a time per key: requests that find it spent wait for the one that
        # asks Redis, then spend what it got; each asking at once would take a lease, all
        # the burst between them, and the rest would be refused.
        async with self._leasing.setdefault(key, asyncio.Lock()):
            if time.time() < self._store_down_until:  # the one before found Redis down
                return self._take_locally(key, time.time())
            if (spent := self._spend_leased(key)) is not None:
                return spent
            return await self._lease(key)

    def _spend_leased(self, key: str) -> Decision | None:
        """Spend a token of this process's lease of `key`; None when it has none left."""
        lease = self._leases.get(key)
        if lease is None or lease.tokens <= 0 or time.time() >= lease.until:
            return None
        lease.tokens -= 1
        return self._decision(True, lease.tokens + lease.left_in_store, 0.0)

    async def _lease(self, key: str) -> Decision:
        """Take the next lease of `key`'s tokens from Redis and spend one of them."""
        assert self._script is not None
        now = time.time()
        lapsed = self._leases.pop(key, None)  # spent, or lapsed with tokens to give back
        try:
            taken, tokens, wait_s = await self._script(
                keys=[f"{self.prefix}:ratelimit:{key}"],
                args=[
                    self.rate_per_s,
                    self.burst,
                    now,
                    self.lease_size,
                    lapsed.tokens if lapsed is not None else 0,
                ],
            )
        except redis.RedisError as error:
            log.warning(
                "rate limit store unreachable, limiting in this process: %s",
                error,
                extra={"action": "ratelimit_local"},
            )
            # Until then the requests waiting for this lease, and those after, do not each
            # wait out the timeout in turn.
            self._store_down_until = now + STORE_RETRY_S
            return self._take_locally(key, now)
        if int(taken) == 0:
            return self._decision(False, float(tokens), float(wait_s))
        lease = self._leases[key] = _Lease(int(taken) - 1, float(tokens), now + LEASE_S)
        return self._decision(True, lease.tokens + lease.left_in_store, 0.0)

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
