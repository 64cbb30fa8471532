"""Files in and out by URL, and expiry per job: output deliveries, `expires_after_s`.

Revision ID: 0013_bulk_urls
Revises: 0012_deadlines
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0013_bulk_urls"
down_revision = "0012_deadlines"
branch_labels = None
depends_on = None

Json = sa.JSON(none_as_null=True).with_variant(
    postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
)


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("expires_after_s", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("output", Json, nullable=True))
    op.create_table(
        "output_deliveries",
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("gzip", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["jobs.id"],
            name=op.f("fk_output_deliveries_job_id_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("job_id", name=op.f("pk_output_deliveries")),
    )
    op.create_index(
        "ix_output_deliveries_due",
        "output_deliveries",
        ["next_attempt_at"],
        postgresql_where=sa.text("status = 'pending'"),
        sqlite_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        "ix_jobs_expiring",
        "jobs",
        ["finished_at"],
        postgresql_where=sa.text("expires_after_s IS NOT NULL"),
        sqlite_where=sa.text("expires_after_s IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_expiring", table_name="jobs")
    op.drop_index("ix_output_deliveries_due", table_name="output_deliveries")
    op.drop_table("output_deliveries")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("output")
        batch.drop_column("expires_after_s")
