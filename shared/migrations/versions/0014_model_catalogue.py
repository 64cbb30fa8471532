"""A model catalogue: the name of the model each job chose, and every model a worker serves.

Revision ID: 0014_model_catalogue
Revises: 0013_bulk_urls
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0014_model_catalogue"
down_revision = "0013_bulk_urls"
branch_labels = None
depends_on = None

Json = sa.JSON(none_as_null=True).with_variant(
    postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
)


def upgrade() -> None:
    # Jobs from before the catalogue keep no name: any worker serving their source claims them.
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("model_name", sa.String(100), nullable=True))
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("served", Json, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("served")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("model_name")
