"""The engine and session scopes on Postgres: reads run outside a transaction, and a pooled
connection is pinged before use only after sitting idle (a dead one is then replaced with
every other connection the pool held, as after a server restart)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import event, exc, text

from shared import db as db_module
from shared.db import Database


@pytest.fixture
def database(postgres_url: str) -> Iterator[Database]:
    database = Database(postgres_url, application_name="textq-ping-test", pool_size=2)
    yield database
    database.dispose()


def _idle_after(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Ping connections idle over `seconds` (0: any that went back to the pool; a minute:
    none, however slow this machine is between two checkouts)."""
    monkeypatch.setattr(db_module, "PING_AFTER_IDLE_S", seconds)


def _backend_pid(database: Database) -> int:
    with database.read() as session:
        return int(session.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _terminate(postgres_url: str, pids: list[int]) -> None:
    """End these server backends, as a Postgres restart ends every connection."""
    plain = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as admin:
        for pid in pids:
            admin.execute("SELECT pg_terminate_backend(%s)", [pid])
        deadline = time.monotonic() + 5
        while admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", [pids]
        ).fetchone() != (0,):
            assert time.monotonic() < deadline, "backends still alive"
            time.sleep(0.02)


def _pings(database: Database) -> list[Any]:
    """Record each ping the dialect sends through this engine."""
    pings: list[Any] = []
    dialect = database.engine.dialect
    ping = dialect.do_ping

    def counted(dbapi_connection: Any) -> bool:
        pings.append(dbapi_connection)
        return ping(dbapi_connection)

    dialect.do_ping = counted  # type: ignore[method-assign]
    return pings


def test_a_connection_used_just_now_is_not_pinged_and_an_idle_one_is(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    pings = _pings(database)
    _idle_after(monkeypatch, 60)
    first = _backend_pid(database)
    assert _backend_pid(database) == first
    assert pings == []  # a new connection, then one back from the pool within the minute
    _idle_after(monkeypatch, 0)
    assert _backend_pid(database) == first
    assert len(pings) == 1


def test_after_a_restart_an_idle_connection_is_replaced_before_use(
    database: Database, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two connections in the pool, both ended by the server while idle.
    with database.read() as one, database.read() as two:
        pids = [
            int(one.execute(text("SELECT pg_backend_pid()")).scalar_one()),
            int(two.execute(text("SELECT pg_backend_pid()")).scalar_one()),
        ]
    _terminate(postgres_url, pids)
    pings = _pings(database)
    connects: list[object] = []
    event.listen(database.engine, "connect", lambda *_: connects.append(1))
    _idle_after(monkeypatch, 0)

    with database.read() as one, database.read() as two:
        fresh = [
            int(one.execute(text("SELECT pg_backend_pid()")).scalar_one()),
            int(two.execute(text("SELECT pg_backend_pid()")).scalar_one()),
        ]
    assert set(fresh).isdisjoint(pids)
    # The first failed ping replaced the pool's other connection as well: the second
    # checkout connected afresh instead of pinging a dead one.
    assert len(pings) == 1
    assert len(connects) == 2


def test_a_connection_ended_while_in_recent_use_fails_once_then_the_pool_recovers(
    database: Database, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The price of not pinging a connection used within PING_AFTER_IDLE_S: if the server
    ends it in that moment, the next statement on it fails (the API answers 503, a worker
    retries). SQLAlchemy then replaces the pool's connections, so the one after succeeds."""
    _idle_after(monkeypatch, 60)
    pid = _backend_pid(database)
    _terminate(postgres_url, [pid])
    with pytest.raises(exc.OperationalError), database.read() as session:
        session.execute(text("SELECT 1"))
    assert _backend_pid(database) != pid


def _state_of(postgres_url: str, pid: int) -> str:
    plain = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as admin:
        row = admin.execute("SELECT state FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()
    assert row is not None
    return str(row[0])


def test_a_read_holds_no_transaction_open_and_a_write_does(
    database: Database, postgres_url: str
) -> None:
    """Postgres' default READ COMMITTED gives each statement its own snapshot, so a read
    gains nothing from a transaction but its BEGIN and ROLLBACK: two round trips."""
    with database.read() as session:
        read_pid = int(session.execute(text("SELECT pg_backend_pid()")).scalar_one())
        assert _state_of(postgres_url, read_pid) == "idle"
    # The connection the read used is in a transaction again once a write takes it.
    with database.write() as session:
        pid = int(session.execute(text("SELECT pg_backend_pid()")).scalar_one())
        assert pid == read_pid
        assert _state_of(postgres_url, pid) == "idle in transaction"
