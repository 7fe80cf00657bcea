"""Reporting to the core server: dead letters on the outbox, the prune index, the core link's state

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03 12:45:00

``events.dead_at`` and ``events.last_error`` mark an event the delivery worker gave up on
(``delivery_attempts`` counts the receiver's refusals). The partial index of undelivered rows, the
worker's read, now also leaves the dead ones out; ``ix_events_dead`` serves the dead-letter list
and ``ix_events_delivered_at`` the retention prune. ``reporting_link`` is a new one-row table.
Added columns are nullable and indexes are new: nothing is rebuilt on either engine.
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)
_UNDELIVERED_OLD = sa.text("delivered_at IS NULL")
_UNDELIVERED = sa.text("delivered_at IS NULL AND dead_at IS NULL")
_DEAD = sa.text("dead_at IS NOT NULL")
_DELIVERED = sa.text("delivered_at IS NOT NULL")


def upgrade() -> None:
    op.add_column("events", sa.Column("dead_at", _TS, nullable=True))
    op.add_column("events", sa.Column("last_error", sa.String(length=255), nullable=True))
    op.drop_index("ix_events_undelivered", table_name="events")
    op.create_index("ix_events_undelivered", "events", ["id"], sqlite_where=_UNDELIVERED,
                    postgresql_where=_UNDELIVERED)
    op.create_index("ix_events_dead", "events", ["id"], sqlite_where=_DEAD, postgresql_where=_DEAD)
    op.create_index("ix_events_delivered_at", "events", ["delivered_at"], sqlite_where=_DELIVERED,
                    postgresql_where=_DELIVERED)
    op.create_table(
        "reporting_link",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("up", sa.Boolean(), nullable=False),
        sa.Column("since", _TS, nullable=False),
        sa.Column("last_success_at", _TS, nullable=True),
        sa.Column("last_failure_at", _TS, nullable=True),
        sa.Column("last_failure_reason", sa.String(length=64), nullable=True),
        sa.Column("last_failure_detail", sa.String(length=512), nullable=True),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.Column("backlog", sa.Integer(), nullable=False),
        sa.Column("oldest_undelivered_at", _TS, nullable=True),
        sa.Column("dead_letters", sa.Integer(), nullable=False),
        sa.Column("deliverer", sa.String(length=255), nullable=True),
        sa.Column("updated_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reporting_link")),
    )


def downgrade() -> None:
    op.drop_table("reporting_link")
    op.drop_index("ix_events_delivered_at", table_name="events")
    op.drop_index("ix_events_dead", table_name="events")
    op.drop_index("ix_events_undelivered", table_name="events")
    op.create_index("ix_events_undelivered", "events", ["id"], sqlite_where=_UNDELIVERED_OLD,
                    postgresql_where=_UNDELIVERED_OLD)
    with op.batch_alter_table("events") as batch_op:
        batch_op.drop_column("last_error")
        batch_op.drop_column("dead_at")
