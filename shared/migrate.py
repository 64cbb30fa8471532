"""Apply the Alembic migrations that ship inside the package (`textq db upgrade`)."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_exponential

from shared.db import make_engine

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config(url: str) -> Config:
    """Return an Alembic config pointing at the packaged migrations and `url`."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def wait_for_database(url: str, *, timeout_s: float) -> None:
    """Block until the database accepts connections, or raise after `timeout_s`."""

    @retry(
        retry=retry_if_exception_type(Exception),
        wait=wait_exponential(multiplier=0.2, max=2),
        stop=stop_after_delay(timeout_s),
        reraise=True,
    )
    def _ping(engine: Engine) -> None:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    engine = make_engine(url, application_name="textq-migrate")
    try:
        _ping(engine)
    finally:
        engine.dispose()


def upgrade(url: str, *, revision: str = "head") -> tuple[str | None, str | None]:
    """Bring the database at `url` to `revision` (creating the SQLite file if needed).

    Returns its revision before and after (None before: an empty database, whose tables
    this created).
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            before = MigrationContext.configure(connection).get_current_revision()
            config = alembic_config(url)
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
            after = MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()
    log.info("database at %s is at revision %s", parsed.render_as_string(), after)
    return before, after
