"""EAS: mailboxes, ActiveSync partnerships, mailbox policies and the discovery run's state

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-03 15:55:00

Four new tables (``mdm/eas/tables.py``); nothing existing is touched. A phone discovered through
Exchange is a ``devices`` row of protocol 4 (already allowed by ``ck_devices_protocol``);
``eas_devices`` holds its partnerships, one per mailbox it syncs.
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "eas_mailboxes",
        sa.Column("id", _ID, nullable=False),
        sa.Column("identity", sa.String(length=1024), nullable=False),
        sa.Column("guid", sa.String(length=64), nullable=True),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("display_name", sa.String(length=255), nullable=True),
        sa.Column("primary_smtp", sa.String(length=320), nullable=True),
        sa.Column("sam_account_name", sa.String(length=255), nullable=True),
        sa.Column("user_id", _ID, nullable=True),
        sa.Column("activesync_enabled", sa.Boolean(), nullable=False),
        sa.Column("policy", sa.String(length=255), nullable=True),
        sa.Column("has_partnership", sa.Boolean(), nullable=False),
        sa.Column("seen_at", _TS, nullable=False),
        sa.Column("vanished_at", _TS, nullable=True),
        sa.Column("updated_at", _TS, nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_eas_mailboxes_user_id_users"),
                                ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_eas_mailboxes")),
        sqlite_autoincrement=True,
    )
    op.create_index("uq_eas_mailboxes_identity", "eas_mailboxes", ["identity"], unique=True)
    op.create_index(op.f("ix_eas_mailboxes_user_id"), "eas_mailboxes", ["user_id"], unique=False)
    op.create_table(
        "eas_devices",
        sa.Column("device_id", _ID, autoincrement=False, nullable=False),
        sa.Column("mailbox_id", _ID, autoincrement=False, nullable=False),
        sa.Column("exchange_identity", sa.String(length=1024), nullable=False),
        sa.Column("device_type", sa.String(length=255), nullable=True),
        sa.Column("user_agent", sa.String(length=255), nullable=True),
        sa.Column("first_sync", _TS, nullable=True),
        sa.Column("last_sync", _TS, nullable=True),
        sa.Column("last_sync_attempt", _TS, nullable=True),
        sa.Column("policy_applied", sa.String(length=255), nullable=True),
        sa.Column("policy_status", sa.String(length=64), nullable=True),
        sa.Column("access_state", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=64), nullable=True),
        sa.Column("wipe_state", sa.String(length=16), nullable=False),
        sa.Column("wipe_requested_at", _TS, nullable=True),
        sa.Column("wipe_sent_at", _TS, nullable=True),
        sa.Column("wipe_acknowledged_at", _TS, nullable=True),
        sa.Column("seen_at", _TS, nullable=False),
        sa.Column("vanished_at", _TS, nullable=True),
        sa.Column("updated_at", _TS, nullable=False),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"], name=op.f("fk_eas_devices_device_id_devices"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["mailbox_id"], ["eas_mailboxes.id"],
                                name=op.f("fk_eas_devices_mailbox_id_eas_mailboxes"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("device_id", "mailbox_id", name=op.f("pk_eas_devices")),
    )
    op.create_index("uq_eas_devices_exchange_identity", "eas_devices", ["exchange_identity"], unique=True)
    op.create_index("ix_eas_devices_mailbox", "eas_devices", ["mailbox_id"], unique=False)
    op.create_table(
        "eas_policies",
        sa.Column("id", _ID, nullable=False),
        sa.Column("identity", sa.String(length=1024), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("guid", sa.String(length=64), nullable=True),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("seen_at", _TS, nullable=False),
        sa.Column("vanished_at", _TS, nullable=True),
        sa.Column("updated_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_eas_policies")),
        sqlite_autoincrement=True,
    )
    op.create_index("uq_eas_policies_name", "eas_policies", ["name"], unique=True)
    op.create_table(
        "eas_discovery",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("requested_at", _TS, nullable=True),
        sa.Column("requested_by", sa.String(length=255), nullable=True),
        sa.Column("started_at", _TS, nullable=True),
        sa.Column("finished_at", _TS, nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("runner", sa.String(length=255), nullable=True),
        sa.Column("mailboxes", sa.Integer(), nullable=False),
        sa.Column("devices", sa.Integer(), nullable=False),
        sa.Column("policies", sa.Integer(), nullable=False),
        sa.Column("vanished", sa.Integer(), nullable=False),
        sa.Column("failed_mailboxes", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_eas_discovery")),
    )


def downgrade() -> None:
    op.drop_table("eas_discovery")
    op.drop_index("uq_eas_policies_name", table_name="eas_policies")
    op.drop_table("eas_policies")
    op.drop_index("ix_eas_devices_mailbox", table_name="eas_devices")
    op.drop_index("uq_eas_devices_exchange_identity", table_name="eas_devices")
    op.drop_table("eas_devices")
    op.drop_index(op.f("ix_eas_mailboxes_user_id"), table_name="eas_mailboxes")
    op.drop_index("uq_eas_mailboxes_identity", table_name="eas_mailboxes")
    op.drop_table("eas_mailboxes")
