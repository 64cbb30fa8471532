"""The tables: the migrations build exactly what shared/models.py declares."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from shared.models import Base


def test_migrations_build_exactly_the_models(db):
    with db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
