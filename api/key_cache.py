"""Keys this API process verified a moment ago, so a client's every request does not cost a
database round trip (and a connection) before its route's own."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable

from cachetools import TTLCache

from shared.api_keys import Grant

MAX_KEYS = 10_000  # distinct keys remembered at once; the least recently verified go first


class VerifiedKeys:
    """Grants of keys verified within the last `ttl_s` seconds (0: verify every request).

    Only valid keys are remembered: an unknown or forged key is looked up every time, so a
    key made a moment ago works at once. A key's expiry is checked on every request; a key
    revoked (or changed by hand in the database) stops working within `ttl_s`.
    Thread-safe: the API's sync routes run on a thread pool.
    """

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._grants: TTLCache[str, Grant] | None = (
            TTLCache(maxsize=MAX_KEYS, ttl=ttl_s) if ttl_s > 0 else None
        )
        self._lock = threading.Lock()

    def remembered(self, key: str) -> Grant | None:
        """Return the key's grant if it was verified lately and has not expired, without
        looking it up (None: look it up with `grant_of`)."""
        if self._grants is None:
            return None
        with self._lock:
            grant = self._grants.get(_digest(key))
        return None if grant is None or grant.expired() else grant

    def grant_of(self, key: str, look_up: Callable[[str], Grant | None]) -> Grant | None:
        """Return the key's grant, from memory if it was verified lately, else `look_up(key)`."""
        if self._grants is None:
            return look_up(key)
        digest = _digest(key)
        with self._lock:
            grant = self._grants.get(digest)
        if grant is None:
            grant = look_up(key)
            if grant is not None:
                with self._lock:
                    self._grants[digest] = grant
        return None if grant is None or grant.expired() else grant

    def forget_all(self) -> None:
        """Drop every remembered key (after a revocation this process was told of)."""
        if self._grants is not None:
            with self._lock:
                self._grants.clear()


def _digest(key: str) -> str:
    # Remembered by hash: the secrets themselves are not kept in this process' memory.
    return hashlib.sha256(key.encode()).hexdigest()
