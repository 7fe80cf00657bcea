"""Policies of KES devices: policies per group, profiles, device tags, applied versions

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03 11:00:00

New tables only: nothing to rebuild on either engine. The ``policy_state`` row is created by the
first change (an upsert), so an emptied table needs no re-seeding.
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "policies",
        sa.Column("id", _ID, nullable=False),
        sa.Column("group_id", _ID, nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("inherit", sa.Boolean(), nullable=False),
        sa.Column("force_inheritance", sa.Boolean(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("updated_by", sa.String(length=255), nullable=True),
        sa.ForeignKeyConstraint(["group_id"], ["groups.id"], name=op.f("fk_policies_group_id_groups"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_policies")),
        sqlite_autoincrement=True,
    )
    op.create_index("uq_policies_group_id", "policies", ["group_id"], unique=True)
    op.create_table(
        "policy_profiles",
        sa.Column("id", _ID, nullable=False),
        sa.Column("policy_id", _ID, nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("conditions", sa.JSON(), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.ForeignKeyConstraint(["policy_id"], ["policies.id"],
                                name=op.f("fk_policy_profiles_policy_id_policies"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_policy_profiles")),
        sqlite_autoincrement=True,
    )
    op.create_index("uq_policy_profiles_policy_id_name", "policy_profiles", ["policy_id", "name"], unique=True)
    op.create_table(
        "device_tags",
        sa.Column("device_id", _ID, autoincrement=False, nullable=False),
        sa.Column("tag", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"], name=op.f("fk_device_tags_device_id_devices"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("device_id", "tag", name=op.f("pk_device_tags")),
    )
    op.create_table(
        "policy_devices",
        sa.Column("device_id", _ID, autoincrement=False, nullable=False),
        sa.Column("applied_version", sa.String(length=64), nullable=True),
        sa.Column("applied_at", _TS, nullable=True),
        sa.Column("tags_revision", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"],
                                name=op.f("fk_policy_devices_device_id_devices"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_policy_devices")),
    )
    op.create_index("ix_policy_devices_tags_revision", "policy_devices", ["tags_revision"])
    op.create_table(
        "policy_state",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.Column("tags_revision", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_policy_state")),
    )


def downgrade() -> None:
    op.drop_table("policy_state")
    op.drop_table("policy_devices")
    op.drop_table("device_tags")
    op.drop_table("policy_profiles")
    op.drop_table("policies")
