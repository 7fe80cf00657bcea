"""PostgreSQL compresses the outbox's bodies and the commands' documents with lz4, not pglz

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-04 23:40:00

A bulk batch writes one ``commands_created`` event whose body lists every command of the batch
(``[device id, GUID]`` pairs: ~95 KB at 2,000 devices). PostgreSQL compresses a value over 2 KB
before it moves it out of line, by default with pglz, which on this body costs ~5 ms per batch
more than lz4 for a result 5 % larger (ten bodies, psql: 104-138 ms pglz, 58-62 ms lz4, 60-69 ms
uncompressed); in `scripts/bulk-queue-bench.py --owe` (10^5 devices, four alternated pairs, load
9-11) the backend CPU per queued device was 25.9-30.1 µs with pglz, 24.9-27.8 µs with lz4. A
command's payload (a profile to install), its arguments and a device's answer (``result_data``:
an application list, a certificate list) are compressed the same way, per command.

Only the compression of values written from now on changes: rows already stored keep theirs and
both are read alike. PostgreSQL built without lz4 keeps pglz (the setting would be refused).
SQLite: nothing to do.
"""

from alembic import op
from sqlalchemy import text

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None

COLUMNS = {"events": ("body",), "commands": ("payload", "args", "result_data")}


def _set(method: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    offered = bind.scalar(text(
        "SELECT :m = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"
    ), {"m": method})
    if not offered:
        return
    for table, columns in COLUMNS.items():
        changes = ", ".join(f"ALTER COLUMN {c} SET COMPRESSION {method}" for c in columns)
        op.execute(f"ALTER TABLE {table} {changes}")


def upgrade() -> None:
    _set("lz4")


def downgrade() -> None:
    _set("pglz")
