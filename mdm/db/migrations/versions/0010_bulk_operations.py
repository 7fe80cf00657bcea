"""bulk operations: a command sent to many devices, queued in batches

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 06:47:21.530747

``bulk_operations`` (one row per request, its cursor and counters), ``bulk_targets`` (the ids of
an explicit list), ``bulk_skipped`` (the devices that did not get it, and why) and
``commands.bulk_id`` with an index ``(bulk_id, status)`` so that an operation's delivered,
completed and failed commands are counted from the commands themselves. New tables and a nullable
column without a foreign key: nothing is rebuilt on either engine.
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_AT = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "bulk_operations",
        sa.Column("id", _ID, nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("args", sa.JSON(), nullable=False),
        sa.Column("request_args", sa.JSON(), nullable=True),
        sa.Column("target", sa.String(length=8), nullable=False),
        sa.Column("group_id", sa.BigInteger(), nullable=True),
        sa.Column("group_ids", sa.JSON(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("cursor", sa.BigInteger(), nullable=False),
        sa.Column("max_device_id", sa.BigInteger(), nullable=False),
        sa.Column("targeted", sa.BigInteger(), nullable=False),
        sa.Column("queued", sa.BigInteger(), nullable=False),
        sa.Column("skipped", sa.BigInteger(), nullable=False),
        sa.Column("skipped_reasons", sa.JSON(), nullable=False),
        sa.Column("woken", sa.BigInteger(), nullable=False),
        sa.Column("recalled", sa.BigInteger(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_by", sa.String(length=255), nullable=True),
        sa.Column("created_at", _AT, nullable=False),
        sa.Column("updated_at", _AT, nullable=False),
        sa.Column("finished_at", _AT, nullable=True),
        sa.CheckConstraint("state IN ('queuing', 'queued', 'recalling', 'recalled', 'failed')",
                           name=op.f("ck_bulk_operations_state")),
        sa.CheckConstraint("target IN ('all', 'group', 'devices')", name=op.f("ck_bulk_operations_target")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bulk_operations")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("bulk_operations", schema=None) as batch_op:
        batch_op.create_index("ix_bulk_operations_state", ["state"], unique=False)
    for name, extra in (("bulk_skipped", [sa.Column("reason", sa.Text(), nullable=False)]), ("bulk_targets", [])):
        op.create_table(
            name,
            sa.Column("bulk_id", _ID, nullable=False),
            sa.Column("device_id", sa.BigInteger(), autoincrement=False, nullable=False),
            *extra,
            sa.ForeignKeyConstraint(["bulk_id"], ["bulk_operations.id"],
                                    name=op.f(f"fk_{name}_bulk_id_bulk_operations"), ondelete="CASCADE"),
            sa.PrimaryKeyConstraint("bulk_id", "device_id", name=op.f(f"pk_{name}")),
        )
    with op.batch_alter_table("commands", schema=None) as batch_op:
        batch_op.add_column(sa.Column("bulk_id", sa.BigInteger(), nullable=True))
        batch_op.create_index("ix_commands_bulk_status", ["bulk_id", "status"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("commands", schema=None) as batch_op:
        batch_op.drop_index("ix_commands_bulk_status")
        batch_op.drop_column("bulk_id")
    op.drop_table("bulk_targets")
    op.drop_table("bulk_skipped")
    with op.batch_alter_table("bulk_operations", schema=None) as batch_op:
        batch_op.drop_index("ix_bulk_operations_state")
    op.drop_table("bulk_operations")
