"""PKI: certificate requests an enterprise CA holds pending

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-04 09:00:00

One new table (``certificate_requests``, ``mdm/pki/tables.py``): the requests a certificate
source answered "pending", polled by the ``pki.requests`` worker. Nothing existing is touched.
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "certificate_requests",
        sa.Column("id", _ID, nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("ca_request_id", sa.String(length=255), nullable=False),
        sa.Column("cert_type", sa.String(length=16), nullable=False),
        sa.Column("user_id", _ID, nullable=True),
        sa.Column("device_id", sa.BigInteger(), nullable=True),
        sa.Column("common_name", sa.Text(), nullable=False),
        sa.Column("template", sa.String(length=255), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("purpose", sa.String(length=128), nullable=False),
        sa.Column("csr_pem", sa.Text(), nullable=True),
        sa.Column("encrypted_key", sa.Text(), nullable=True),
        sa.Column("renews_serial", sa.String(length=64), nullable=True),
        sa.Column("serial", sa.String(length=64), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_poll_at", _TS, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'issued', 'denied', 'failed', 'cancelled')",
            name=op.f("ck_certificate_requests_status"),
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_certificate_requests_user_id_users"),
                                ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_certificate_requests")),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_certificate_requests_user_id"), "certificate_requests", ["user_id"], unique=False)
    op.create_index("ix_certificate_requests_status_next_poll_at", "certificate_requests",
                    ["status", "next_poll_at"], unique=False)
    op.create_index("ix_certificate_requests_purpose", "certificate_requests", ["purpose"], unique=False)


def downgrade() -> None:
    op.drop_table("certificate_requests")
