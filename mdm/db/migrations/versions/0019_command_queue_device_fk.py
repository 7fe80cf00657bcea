"""the command queue's rows no longer check their device by a foreign key of their own

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-04 17:30:00

``command_queue.device_id`` referenced ``devices`` (ON DELETE CASCADE) beside
``command_queue.command_id`` → ``commands`` → ``devices``, both cascading: a queue row is only
ever written from its command's ``device_id`` (the single enqueue, the bulk batch's
``INSERT ... SELECT`` from the commands it just wrote), and a deleted device's commands take
their queue rows with them. The second check cost PostgreSQL a trigger call and a row lock of
the device per queued command: measured on a bulk batch of 2,000 (``EXPLAIN ANALYZE``), four
foreign-key triggers took ~80 % of the statement, this one ~21 %; the backend's CPU per queued
device went from 55 to 46 µs without it. The column and its index stay
(``ix_command_queue_device_order``: a device's next command). SQLite copies the table to drop
the constraint (Alembic's batch mode): the queue's rows, once.
"""

from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

FK = "fk_command_queue_device_id_devices"


def upgrade() -> None:
    with op.batch_alter_table("command_queue") as batch_op:
        batch_op.drop_constraint(FK, type_="foreignkey")


def downgrade() -> None:
    with op.batch_alter_table("command_queue") as batch_op:
        batch_op.create_foreign_key(FK, "devices", ["device_id"], ["id"], ondelete="CASCADE")
