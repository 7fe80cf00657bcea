"""enrollments

Revision ID: 0006
Revises: 0002
Create Date: 2026-11-24 12:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('enrollments',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('uuid', sa.String(length=36), nullable=False),
    sa.Column('platform', sa.String(length=16), nullable=False),
    sa.Column('user_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=True),
    sa.Column('delivery', sa.String(length=8), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('identity', sa.String(length=8), nullable=False),
    sa.Column('token_hash', sa.LargeBinary(length=32), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_by', sa.String(length=255), nullable=True),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('downloaded_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('mailed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('mdm_profile_identifier', sa.String(length=255), nullable=False),
    sa.Column('topic', sa.String(length=255), nullable=True),
    sa.Column('cert_serial', sa.String(length=64), nullable=True),
    sa.Column('device_id', sa.BigInteger(), nullable=True),
    sa.CheckConstraint("status IN ('pending', 'downloaded', 'delivered', 'expired', 'revoked')", name=op.f('ck_enrollments_status')),
    sa.CheckConstraint("delivery IN ('link', 'file')", name=op.f('ck_enrollments_delivery')),
    sa.CheckConstraint("platform IN ('ios', 'android')", name=op.f('ck_enrollments_platform')),
    sa.CheckConstraint("identity IN ('pkcs12', 'scep')", name=op.f('ck_enrollments_identity')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_enrollments_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_enrollments')),
    sa.UniqueConstraint('uuid', name=op.f('uq_enrollments_uuid')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_enrollments_token_hash'))
    )
    with op.batch_alter_table('enrollments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_enrollments_user_id'), ['user_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_enrollments_cert_serial'), ['cert_serial'], unique=False)
        batch_op.create_index(batch_op.f('ix_enrollments_device_id'), ['device_id'], unique=False)
        batch_op.create_index('ix_enrollments_status_expires', ['status', 'expires_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('enrollments', schema=None) as batch_op:
        batch_op.drop_index('ix_enrollments_status_expires')
        batch_op.drop_index(batch_op.f('ix_enrollments_device_id'))
        batch_op.drop_index(batch_op.f('ix_enrollments_cert_serial'))
        batch_op.drop_index(batch_op.f('ix_enrollments_user_id'))

    op.drop_table('enrollments')
