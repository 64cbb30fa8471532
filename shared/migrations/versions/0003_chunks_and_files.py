"""Chunks of long texts as items, bulk-file rows with their ids, label counts on jobs.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

Json = sa.JSON(none_as_null=True).with_variant(
    postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
)
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("total_parts", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(sa.Column("done_parts", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(sa.Column("label_counts", Json, nullable=True))
        batch.add_column(
            sa.Column("input_kind", sa.String(length=16), server_default="texts", nullable=False)
        )
        batch.add_column(sa.Column("input_meta", Json, nullable=True))
    with op.batch_alter_table("job_items") as batch:
        batch.add_column(sa.Column("custom_id", sa.String(length=512), nullable=True))
        batch.add_column(sa.Column("parent_id", BigId, nullable=True))
        batch.add_column(sa.Column("level", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(sa.Column("span_start", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("span_end", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("token_count", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("work_text", sa.Text(), nullable=True))
        batch.add_column(sa.Column("open_parts", sa.Integer(), nullable=True))
    # Chunks share their text's job but number from 0 under their parent.
    op.drop_index("uq_job_items_job_idx", table_name="job_items")
    op.create_index(
        "uq_job_items_job_idx",
        "job_items",
        ["job_id", "idx"],
        unique=True,
        postgresql_where=sa.text("parent_id IS NULL"),
        sqlite_where=sa.text("parent_id IS NULL"),
    )
    op.create_index("ix_job_items_parent", "job_items", ["parent_id", "level", "idx"])


def downgrade() -> None:
    op.drop_index("ix_job_items_parent", table_name="job_items")
    op.execute("DELETE FROM job_items WHERE parent_id IS NOT NULL")
    op.drop_index("uq_job_items_job_idx", table_name="job_items")
    op.create_index("uq_job_items_job_idx", "job_items", ["job_id", "idx"], unique=True)
    with op.batch_alter_table("job_items") as batch:
        for column in (
            "open_parts",
            "work_text",
            "token_count",
            "span_end",
            "span_start",
            "level",
            "parent_id",
            "custom_id",
        ):
            batch.drop_column(column)
    with op.batch_alter_table("jobs") as batch:
        for column in ("input_meta", "input_kind", "label_counts", "done_parts", "total_parts"):
            batch.drop_column(column)
