"""scep challenges and transactions

Revision ID: 0004
Revises: 0002
Create Date: 2026-11-24 01:10:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "scep_challenges",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("secret_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("purpose", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_scep_challenges_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scep_challenges")),
    )
    with op.batch_alter_table("scep_challenges", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_scep_challenges_prefix"), ["prefix"], unique=False)
        batch_op.create_index(batch_op.f("ix_scep_challenges_user_id"), ["user_id"], unique=False)

    op.create_table(
        "scep_transactions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("transaction_id", sa.String(length=128), nullable=False),
        sa.Column("message_type", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("key_fingerprint", sa.String(length=64), nullable=False),
        sa.Column("signer_fingerprint", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("csr", sa.LargeBinary(), nullable=False),
        sa.Column("user_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("challenge_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("renews_serial", sa.String(length=64), nullable=True),
        sa.Column("cert_serial", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_by", sa.String(length=255), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'issued', 'rejected')", name=op.f("ck_scep_transactions_status")
        ),
        sa.ForeignKeyConstraint(
            ["challenge_id"],
            ["scep_challenges.id"],
            name=op.f("fk_scep_transactions_challenge_id_scep_challenges"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_scep_transactions_user_id_users"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scep_transactions")),
        sa.UniqueConstraint("transaction_id", name=op.f("uq_scep_transactions_transaction_id")),
    )
    with op.batch_alter_table("scep_transactions", schema=None) as batch_op:
        batch_op.create_index("ix_scep_transactions_status", ["status"], unique=False)
        batch_op.create_index(batch_op.f("ix_scep_transactions_user_id"), ["user_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("scep_transactions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_scep_transactions_user_id"))
        batch_op.drop_index("ix_scep_transactions_status")

    op.drop_table("scep_transactions")
    with op.batch_alter_table("scep_challenges", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_scep_challenges_user_id"))
        batch_op.drop_index(batch_op.f("ix_scep_challenges_prefix"))

    op.drop_table("scep_challenges")
