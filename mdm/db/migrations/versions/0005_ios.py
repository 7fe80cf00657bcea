"""ios devices (identity binding, tokens) and push requests

Revision ID: 0005
Revises: 0002
Create Date: 2026-11-24 01:00:00.000000
"""
import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('ios_devices',
    sa.Column('device_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=False,
              nullable=False),
    sa.Column('cert_fingerprint', sa.LargeBinary(length=32), nullable=False),
    sa.Column('cert_not_before', sa.DateTime(timezone=True), nullable=True),
    sa.Column('topic', sa.String(length=255), nullable=True),
    sa.Column('unlock_token', sa.LargeBinary(), nullable=True),
    sa.Column('bootstrap_token', sa.LargeBinary(), nullable=True),
    sa.Column('bootstrap_token_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('awaiting_configuration', sa.Boolean(), nullable=False),
    sa.Column('bound_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], name=op.f('fk_ios_devices_device_id_devices'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('device_id', name=op.f('pk_ios_devices'))
    )
    with op.batch_alter_table('ios_devices', schema=None) as batch_op:
        batch_op.create_index('uq_ios_devices_cert_fingerprint', ['cert_fingerprint'], unique=True)

    op.create_table('ios_push_requests',
    sa.Column('device_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=False,
              nullable=False),
    sa.Column('due_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('reason', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'],
                            name=op.f('fk_ios_push_requests_device_id_devices'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('device_id', name=op.f('pk_ios_push_requests'))
    )
    with op.batch_alter_table('ios_push_requests', schema=None) as batch_op:
        batch_op.create_index('ix_ios_push_requests_due_at', ['due_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('ios_push_requests', schema=None) as batch_op:
        batch_op.drop_index('ix_ios_push_requests_due_at')
    op.drop_table('ios_push_requests')
    with op.batch_alter_table('ios_devices', schema=None) as batch_op:
        batch_op.drop_index('uq_ios_devices_cert_fingerprint')
    op.drop_table('ios_devices')
