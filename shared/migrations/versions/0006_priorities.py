"""Job priorities, when each job was last served (round robin), and recent throughput.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("priority", sa.Integer(), server_default="5", nullable=False))
        batch.add_column(sa.Column("last_claimed_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_job_items_pending_job",
        "job_items",
        ["job_id", "id"],
        postgresql_where=sa.text("status = 'pending'"),
        sqlite_where=sa.text("status = 'pending'"),
    )
    op.create_index("ix_job_items_finished", "job_items", ["task", "finished_at"])


def downgrade() -> None:
    op.drop_index("ix_job_items_finished", table_name="job_items")
    op.drop_index("ix_job_items_pending_job", table_name="job_items")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("last_claimed_at")
        batch.drop_column("priority")
