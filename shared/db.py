"""One database engine per process, and the read and write session scopes built on it."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, exc, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 30_000

# A pooled connection idle for longer is pinged before use. One used more recently is taken
# to be alive: under load every checkout would otherwise cost a round trip (an eighth of a
# one-text job's statements went to pings). The accepted cost: should the server end
# connections within this long of their last use (a restart faster than this, a proxy's),
# a process's next statement fails once (the API answers 503, a worker retries) and the
# pool is replaced.
PING_AFTER_IDLE_S = 1.0


def _prepare_sqlite(engine: Engine) -> None:
    """Use WAL and let writers queue behind each other instead of failing with 'locked'."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Hand transaction control to SQLAlchemy so a write scope can say BEGIN IMMEDIATE.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # A write transaction takes the write lock up front: a deferred one that read first
        # could not upgrade once another writer committed, and would fail at once.
        immediate = connection.get_execution_options().get("textq_write", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def make_engine(url: str, *, application_name: str, pool_size: int = 5) -> Engine:
    """Create the engine for `url`, named in Postgres' activity view as `application_name`.

    Statement parameters stay out of SQL logs and error messages: they hold webhook
    secrets, key hashes and the tenants' texts. `pool_size` connections stay open (Postgres):
    a process serving N requests at once wants N, or it opens and closes a connection (a
    new server backend) for each request over the pool's size.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False}, hide_parameters=True)
        _prepare_sqlite(engine)
        return engine
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql":
        connect_args = {"application_name": application_name, "connect_timeout": 5}
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        connect_args=connect_args,
        hide_parameters=True,
    )
    _ping_idle_connections(engine)
    return engine


def _ping_idle_connections(engine: Engine) -> None:
    """Ping a pooled connection before use only when it sat idle over `PING_AFTER_IDLE_S`.

    SQLAlchemy's `pool_pre_ping` pings on every checkout. Here a `checkout` listener
    pings, and raises `DisconnectionError` to have the connection replaced (SQLAlchemy,
    `PoolEvents.checkout`), in its `InvalidatePoolError` form: as with `pool_pre_ping`,
    every connection the pool held before is replaced too, since a dead one most likely
    means the server restarted. A new connection (no `checkin` yet) is not pinged.
    """

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["textq_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("textq_idle_since")
        if idle_since is None or time.monotonic() - idle_since <= PING_AFTER_IDLE_S:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as error:
            # As pool_pre_ping: only a lost connection replaces the pool; other errors raise.
            if not engine.dialect.is_disconnect(error, dbapi_connection, None):
                raise
            raise exc.InvalidatePoolError(f"ping failed: {error}") from error


class Database:
    """The engine of this process and the session scopes every caller uses."""

    def __init__(self, url: str, *, application_name: str, pool_size: int = 5) -> None:
        self.url = url
        self.application_name = application_name
        self.engine = make_engine(url, application_name=application_name, pool_size=pool_size)
        self._pid = os.getpid()
        # Copied into every write session's `info`: what this process's after-commit
        # effects need (the doorbell its wake-ups ring, see shared/jobs/after_commit.py).
        self.session_info: dict[str, Any] = {}
        reading = self.engine
        if self.engine.dialect.name == "postgresql":
            # READ COMMITTED gives each statement its own snapshot, in a transaction or not:
            # outside one a read saves its BEGIN and ROLLBACK, two of its three round trips.
            reading = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self._reader = sessionmaker(reading, expire_on_commit=False)
        self._writer = sessionmaker(
            self.engine.execution_options(textq_write=True), expire_on_commit=False
        )

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def read(self) -> Iterator[Session]:
        """Open a session for reading; it never holds a write lock (on Postgres, nor a
        transaction: each statement commits on its own, as READ COMMITTED would see it).

        Closing (not rolling back) keeps loaded objects readable after the scope ends.
        """
        with self._reader() as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """Open a session that commits on success and rolls back on error."""
        with self._writer() as session, session.begin():
            session.info.update(self.session_info)
            yield session

    def ping(self) -> None:
        """Raise unless the database answers."""
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def dispose(self) -> None:
        """Close the pooled connections (in a forked child: forget the parent's)."""
        self.engine.dispose(close=os.getpid() == self._pid)
