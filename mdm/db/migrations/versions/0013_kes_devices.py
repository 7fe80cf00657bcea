"""KES (Android) devices: the agent's binding and state, and mugshots

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03 10:00:00

New tables only: nothing to rebuild on either engine.
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "kes_devices",
        sa.Column("device_id", _ID, autoincrement=False, nullable=False),
        sa.Column("enrollment_id", sa.BigInteger(), nullable=True),
        sa.Column("cert_fingerprint", sa.LargeBinary(length=32), nullable=True),
        sa.Column("agent_version", sa.String(length=64), nullable=True),
        sa.Column("registered_at", _TS, nullable=False),
        sa.Column("bound_at", _TS, nullable=True),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("renew_requested_at", _TS, nullable=True),
        sa.Column("sync_interval", sa.Integer(), nullable=True),
        sa.Column("last_sync_at", _TS, nullable=True),
        sa.Column("policy_sent_version", sa.String(length=64), nullable=True),
        sa.Column("policy_applied_version", sa.String(length=64), nullable=True),
        sa.Column("last_request_id", sa.String(length=64), nullable=True),
        sa.Column("last_request_hash", sa.LargeBinary(length=32), nullable=True),
        sa.Column("last_answer", sa.JSON(), nullable=True),
        sa.Column("previous_fingerprint", sa.LargeBinary(length=32), nullable=True),
        sa.Column("cert_request_id", sa.String(length=64), nullable=True),
        sa.Column("cert_request_hash", sa.LargeBinary(length=32), nullable=True),
        sa.Column("cert_request_serial", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"], name=op.f("fk_kes_devices_device_id_devices"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_kes_devices")),
    )
    op.create_index("uq_kes_devices_cert_fingerprint", "kes_devices", ["cert_fingerprint"], unique=True)
    op.create_index("ix_kes_devices_previous_fingerprint", "kes_devices", ["previous_fingerprint"])
    op.create_table(
        "kes_mugshots",
        sa.Column("id", _ID, nullable=False),
        sa.Column("device_id", _ID, nullable=False),
        sa.Column("command_guid", sa.String(length=36), nullable=False),
        sa.Column("content_type", sa.String(length=32), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("taken_at", _TS, nullable=True),
        sa.Column("received_at", _TS, nullable=False),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"], name=op.f("fk_kes_mugshots_device_id_devices"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_kes_mugshots")),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_kes_mugshots_device_id", "kes_mugshots", ["device_id", "id"])
    op.create_index("uq_kes_mugshots_command_guid", "kes_mugshots", ["command_guid"], unique=True)


def downgrade() -> None:
    op.drop_table("kes_mugshots")
    op.drop_table("kes_devices")
