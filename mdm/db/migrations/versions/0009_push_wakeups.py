"""push wake-ups owed to devices (the push dispatcher)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 00:00:00.000000

One row per device that is owed a wake-up push (coalesced): written after the transaction that
gave the device work commits, by the recovery pass and by the daily sweep of silent devices; the
dispatcher deletes it once nothing more is owed. A new table: nothing to rebuild on either engine.
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "push_wakeups",
        sa.Column("device_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=False,
                  nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_result", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"], name=op.f("fk_push_wakeups_device_id_devices"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_push_wakeups")),
    )
    with op.batch_alter_table("push_wakeups", schema=None) as batch_op:
        batch_op.create_index("ix_push_wakeups_due_at", ["due_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("push_wakeups", schema=None) as batch_op:
        batch_op.drop_index("ix_push_wakeups_due_at")
    op.drop_table("push_wakeups")
