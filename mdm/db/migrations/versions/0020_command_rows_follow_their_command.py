"""a command's queue and journal rows go with it by a trigger, not by foreign keys

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-04 20:20:00

``command_queue.command_id`` and ``command_journal.command_id`` referenced ``commands`` (ON
DELETE CASCADE). Their insert checks cost PostgreSQL, per queued command, two trigger calls and a
row lock of the command just written (a WAL record and a dirtied page): measured on bulk batches
of 2,000 on a 10^5 fleet (backend CPU, alternated), 43 → 31 µs per queued device with the
batch's wake-ups, ~27 % of it. Nothing they checked can fail: a queue row is only written in the
transaction that writes its command, a journal row only for a command that transaction reads or
writes, and a command only goes with its device (``commands.device_id`` keeps its foreign key and
its row lock of the device). What they did on delete stays: a trigger on ``commands`` deletes the
queue and journal rows of the commands deleted (PostgreSQL: once per statement, the rows from its
transition table; SQLite: per row), so a deleted device, through ``commands``, and a command
deleted on its own take theirs with them (``tests/test_command_rows_cascade.py``, both engines).
SQLite copies both tables to drop the constraints (Alembic's batch mode): once.

The function and the triggers are not in the models (``mdm.db.migrate`` compares tables,
columns, indexes and foreign keys only); a later migration that rebuilds ``commands`` on SQLite
must create the trigger again.
"""

from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

FKS = {
    "command_queue": "fk_command_queue_command_id_commands",
    "command_journal": "fk_command_journal_command_id_commands",
}

PG_UP = [
    "CREATE FUNCTION commands_gone() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "DELETE FROM command_queue WHERE command_id IN (SELECT id FROM gone); "
    "DELETE FROM command_journal WHERE command_id IN (SELECT id FROM gone); "
    "RETURN NULL; END $$",
    "CREATE TRIGGER commands_gone AFTER DELETE ON commands REFERENCING OLD TABLE AS gone "
    "FOR EACH STATEMENT EXECUTE FUNCTION commands_gone()",
]
PG_DOWN = ["DROP TRIGGER IF EXISTS commands_gone ON commands", "DROP FUNCTION IF EXISTS commands_gone()"]
SQLITE_UP = [
    "CREATE TRIGGER commands_gone AFTER DELETE ON commands BEGIN "
    "DELETE FROM command_queue WHERE command_id = old.id; "
    "DELETE FROM command_journal WHERE command_id = old.id; END",
]
SQLITE_DOWN = ["DROP TRIGGER IF EXISTS commands_gone"]


def upgrade() -> None:
    for table, fk in FKS.items():
        with op.batch_alter_table(table) as batch_op:
            batch_op.drop_constraint(fk, type_="foreignkey")
    for statement in SQLITE_UP if op.get_bind().dialect.name == "sqlite" else PG_UP:
        op.execute(statement)


def downgrade() -> None:
    for statement in SQLITE_DOWN if op.get_bind().dialect.name == "sqlite" else PG_DOWN:
        op.execute(statement)
    for table, fk in FKS.items():
        with op.batch_alter_table(table) as batch_op:
            batch_op.create_foreign_key(fk, "commands", ["command_id"], ["id"], ondelete="CASCADE")
