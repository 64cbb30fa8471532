"""The Idempotency-Key header: what it may hold, and the fingerprint of a request it keys."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, BinaryIO

from fastapi import Request

from shared.errors import InvalidRequest

HEADER = "Idempotency-Key"
TTL_S = 24 * 3600
_KEY = re.compile(r"[\x21-\x7e]{1,255}")  # printable ASCII, as the IETF draft's examples


@dataclass(frozen=True)
class Idempotency:
    """A request's key and the fingerprint of what it asks."""

    key: str
    request_hash: str


def key_of(request: Request) -> str | None:
    """Return the request's Idempotency-Key, or raise if it is not one this server takes."""
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not _KEY.fullmatch(key):
        raise InvalidRequest(
            f"{HEADER} must be 1 to 255 printable ASCII characters without spaces.",
            errors=[{"field": HEADER, "message": "invalid"}],
        )
    return key


def fingerprint(*parts: Any, file: BinaryIO | None = None) -> str:
    """Return a hash of the request's parts (and an uploaded file's bytes, read in blocks)."""
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode())
    if file is not None:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
        file.seek(0)
    return digest.hexdigest()


def for_request(request: Request, *parts: Any, file: BinaryIO | None = None) -> Idempotency | None:
    """Return the request's key with its fingerprint, or None when it has no key."""
    key = key_of(request)
    if key is None:
        return None
    return Idempotency(key=key, request_hash=fingerprint(request.url.path, *parts, file=file))
