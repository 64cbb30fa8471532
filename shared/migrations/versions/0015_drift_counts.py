"""Hourly counts of finished texts per model, tenant, feature and bin, for drift.

Revision ID: 0015_drift_counts
Revises: 0014_model_catalogue
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0015_drift_counts"
down_revision = "0014_model_catalogue"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "drift_counts",
        sa.Column("model", sa.String(500), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("feature", sa.String(32), nullable=False),
        sa.Column("bin", sa.String(64), nullable=False),
        sa.Column("item_count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "model", "tenant_id", "hour", "feature", "bin", name=op.f("pk_drift_counts")
        ),
    )


def downgrade() -> None:
    op.drop_table("drift_counts")
