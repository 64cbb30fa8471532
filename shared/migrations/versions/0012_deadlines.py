"""Job deadlines: the column, the claim's order by it, and the sweeper's look for passed ones.

Revision ID: 0012_deadlines
Revises: 0011
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0012_deadlines"
down_revision = "0011"
branch_labels = None
depends_on = None

ACTIVE = "status IN ('queued', 'running')"


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("deadline", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_jobs_active_claim_order",
        "jobs",
        ["task", "model", "priority", "deadline"],
        postgresql_where=sa.text(ACTIVE),
        sqlite_where=sa.text(ACTIVE),
    )
    op.create_index(
        "ix_jobs_active_deadline",
        "jobs",
        ["deadline"],
        postgresql_where=sa.text(f"{ACTIVE} AND deadline IS NOT NULL"),
        sqlite_where=sa.text(f"{ACTIVE} AND deadline IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_active_deadline", table_name="jobs")
    op.drop_index("ix_jobs_active_claim_order", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("deadline")
