"""API keys: made once and shown once, stored as a SHA-256 hash, found by their prefix.

A key is `tq_<prefix>_<secret>`; the prefix (not secret) names it in lists and logs. Keys
are random 32-byte secrets, so a fast hash is safe to store: there is nothing to guess.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from shared.models import ApiKey, Tenant, utcnow

KEY_PREFIX = "tq_"


@dataclass(frozen=True)
class NewKey:
    key: str
    prefix: str
    tenant_id: str
    expires_at: datetime | None


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(
    session: Session, *, tenant_id: str, name: str = "", expires_in_days: float | None = None
) -> NewKey:
    """Make a key for a tenant (creating the tenant if new); the key itself is never stored."""
    if session.get(Tenant, tenant_id) is None:
        session.add(Tenant(id=tenant_id, name=tenant_id))
        session.flush()  # the key's row refers to it
    prefix = secrets.token_hex(6)
    key = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    expires_at = utcnow() + timedelta(days=expires_in_days) if expires_in_days else None
    session.add(
        ApiKey(
            prefix=prefix,
            tenant_id=tenant_id,
            key_hash=_hash(key),
            name=name,
            expires_at=expires_at,
        )
    )
    session.flush()
    return NewKey(key=key, prefix=prefix, tenant_id=tenant_id, expires_at=expires_at)


def prefix_of(key: str) -> str | None:
    """Return the prefix that names a key, or None if it does not look like one of ours."""
    parts = key.split("_")
    return parts[1] if len(parts) >= 3 and key.startswith(KEY_PREFIX) else None


@dataclass(frozen=True)
class Grant:
    """What a valid key grants: acting for a tenant, until `expires_at` (None: no end)."""

    tenant_id: str
    expires_at: datetime | None

    def expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= utcnow()


def grant_of(session: Session, key: str) -> Grant | None:
    """Return what a valid key grants; None if it is unknown, revoked or expired."""
    prefix = prefix_of(key)
    if prefix is None:
        return None
    row = session.get(ApiKey, prefix)
    if row is None or not hmac.compare_digest(row.key_hash, _hash(key)):
        return None
    grant = Grant(row.tenant_id, row.expires_at)
    return None if row.revoked_at is not None or grant.expired() else grant


def tenant_of(session: Session, key: str) -> str | None:
    """Return the tenant of a valid key; None if unknown, revoked or expired."""
    grant = grant_of(session, key)
    return grant.tenant_id if grant is not None else None


def list_keys(session: Session, *, tenant_id: str | None = None) -> list[ApiKey]:
    """Return keys (prefixes and dates only), newest first."""
    query = select(ApiKey).order_by(ApiKey.created_at.desc())
    if tenant_id is not None:
        query = query.where(ApiKey.tenant_id == tenant_id)
    return list(session.scalars(query))


def revoke_key(session: Session, prefix: str) -> bool:
    """Revoke a key by its prefix; return False if there is no such active key."""
    result = session.execute(
        update(ApiKey)
        .where(ApiKey.prefix == prefix, ApiKey.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
