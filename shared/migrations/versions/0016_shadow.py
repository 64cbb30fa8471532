"""Shadow comparison: jobs textq runs on a candidate model, and the item each one copies.

Revision ID: 0016_shadow
Revises: 0015_drift_counts
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0016_shadow"
down_revision = "0015_drift_counts"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(
            sa.Column("shadow", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    # No foreign key: retention purges the user's item and its shadow copy independently,
    # and a comparison simply loses the pair whose side is gone.
    with op.batch_alter_table("job_items") as batch:
        batch.add_column(sa.Column("shadow_of", BigId, nullable=True))
    op.create_index(
        "ix_job_items_shadow_of",
        "job_items",
        ["shadow_of"],
        postgresql_where=sa.text("shadow_of IS NOT NULL"),
        sqlite_where=sa.text("shadow_of IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_job_items_shadow_of", table_name="job_items")
    with op.batch_alter_table("job_items") as batch:
        batch.drop_column("shadow_of")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("shadow")
