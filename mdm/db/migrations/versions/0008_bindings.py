"""device bindings: ids never reused (SQLite AUTOINCREMENT), the last accepted check-in signing
time per iOS device, and enrollments an administrator makes for a given device

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 00:00:00.000000

SQLite reuses the highest freed rowid unless the table is declared AUTOINCREMENT, and that can only
be declared by recreating the table (batch mode). Recreating a parent table drops the old one,
and with foreign keys enforced that drop first deletes every row, cascading into the children
(commands, ios_devices, ...). Foreign keys are therefore switched off for the recreation; the
pragma only takes effect outside a transaction, so the transaction the earlier revisions of this
run left open is committed first (what ``transaction_per_migration`` would do). PostgreSQL
sequences never hand an id out twice: there only the columns are added.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from alembic import op
from sqlalchemy.engine import Connection

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# Parents first is not needed with foreign keys off; the order is kept stable for readability.
NEVER_REUSED = ("users", "groups", "devices", "commands", "api_tokens", "enrollments")


def _foreign_keys(bind: Connection) -> bool:
    return bool(bind.exec_driver_sql("PRAGMA foreign_keys").scalar())


def _set_foreign_keys(bind: Connection, on: bool) -> None:
    pragma = f"PRAGMA foreign_keys={'ON' if on else 'OFF'}"
    bind.exec_driver_sql(pragma)
    if _foreign_keys(bind) != on:
        bind.exec_driver_sql("COMMIT")  # the pragma is a no-op inside a transaction
        bind.exec_driver_sql(pragma)
    if _foreign_keys(bind) != on:
        raise RuntimeError(f"cannot switch SQLite foreign keys {'on' if on else 'off'}")


@contextmanager
def _without_foreign_keys(bind: Connection) -> Iterator[None]:
    """Foreign keys off, and the recreation in one transaction of its own (checked before commit)."""
    was_on = _foreign_keys(bind)
    _set_foreign_keys(bind, False)
    bind.exec_driver_sql("BEGIN")  # outside a transaction now: the pragma took effect
    try:
        yield
        problems = bind.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        if problems:
            raise RuntimeError(f"foreign key violations after recreating tables: {problems[:5]}")
        bind.exec_driver_sql("COMMIT")
    except BaseException:
        bind.exec_driver_sql("ROLLBACK")
        raise
    finally:
        if was_on:
            _set_foreign_keys(bind, True)


def _recreate(autoincrement: bool) -> None:
    bind = op.get_bind()
    with _without_foreign_keys(bind):
        for table in NEVER_REUSED:
            with op.batch_alter_table(
                table, recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}
            ):
                pass


def upgrade() -> None:
    # Plain ADD COLUMN on both engines (nullable, no default: no table is rebuilt).
    with op.batch_alter_table("ios_devices", schema=None) as batch_op:
        batch_op.add_column(sa.Column("last_signed_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("enrollments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("for_device_id", sa.BigInteger(), nullable=True))
    if op.get_bind().dialect.name == "sqlite":
        _recreate(autoincrement=True)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _recreate(autoincrement=False)
    with op.batch_alter_table("enrollments", schema=None) as batch_op:
        batch_op.drop_column("for_device_id")
    with op.batch_alter_table("ios_devices", schema=None) as batch_op:
        batch_op.drop_column("last_signed_at")
