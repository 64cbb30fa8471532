"""Reach the real Postgres and Redis the tests run against, one database per test run."""

from __future__ import annotations

import os
import uuid

import psycopg
import pytest
import redis
from sqlalchemy.engine import make_url

POSTGRES_ADMIN_URL = os.environ.get(
    "TEXTQ_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("TEXTQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def require_service(name: str, error: Exception) -> None:
    """Fail in CI (real-service tests never skip there); skip on a laptop without the service."""
    message = f"{name} is not reachable ({error}); start it or see .ci/run"
    if os.environ.get("CI") or os.environ.get("TEXTQ_TEST_REQUIRE_SERVICES"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _admin_conninfo() -> str:
    url = make_url(POSTGRES_ADMIN_URL)
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def create_postgres_database(prefix: str = "textq_test") -> str:
    """Create an empty database of this run's own and return its SQLAlchemy URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(_admin_conninfo(), autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as error:
        require_service("PostgreSQL", error)
    return make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def drop_postgres_database(url: str) -> None:
    name = make_url(url).database
    with psycopg.connect(_admin_conninfo(), autocommit=True, connect_timeout=3) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def redis_client() -> redis.Redis:
    """Return a client of the test Redis, failing or skipping if it does not answer."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as error:
        require_service("Redis", error)
    return client
