"""pki issuance rules and renewal bookkeeping

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 13:00:00
"""
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

# Keep in step with mdm.pki.rules.DEFAULT_RULES (a migration must not import application code).
DEFAULTS = [
    {"type": "mobile", "validity_days": 365, "key_type": "rsa", "key_size": 2048, "renewal_days": 30},
    {"type": "mail", "validity_days": 365, "key_type": "rsa", "key_size": 2048, "renewal_days": 30},
    {"type": "vpn", "validity_days": 365, "key_type": "rsa", "key_size": 2048, "renewal_days": 30},
]


def upgrade() -> None:
    rules = op.create_table('certificate_rules',
    sa.Column('type', sa.String(length=16), nullable=False),
    sa.Column('validity_days', sa.Integer(), nullable=False),
    sa.Column('key_type', sa.String(length=8), nullable=False),
    sa.Column('key_size', sa.Integer(), nullable=False),
    sa.Column('renewal_days', sa.Integer(), nullable=False),
    sa.Column('source', sa.String(length=32), nullable=False),
    sa.Column('template', sa.String(length=255), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_by', sa.String(length=255), nullable=True),
    sa.CheckConstraint("key_type IN ('rsa', 'ec')", name=op.f('ck_certificate_rules_key_type')),
    sa.PrimaryKeyConstraint('type', name=op.f('pk_certificate_rules'))
    )
    now = datetime.now(UTC)
    op.bulk_insert(
        rules,
        [
            {**row, "source": "internal", "template": None, "updated_at": now, "updated_by": "default"}
            for row in DEFAULTS
        ],
    )
    with op.batch_alter_table('certificates', schema=None) as batch_op:
        batch_op.add_column(sa.Column('expiring_notified_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('renewal_requested_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('certificates', schema=None) as batch_op:
        batch_op.drop_column('renewal_requested_at')
        batch_op.drop_column('expiring_notified_at')
    op.drop_table('certificate_rules')
