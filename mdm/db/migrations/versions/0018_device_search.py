"""the device list's search (``q``) through an index on both engines

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-04 00:00:00

``GET /api/v1/devices?q=`` is a case-insensitive substring of name, serial number or identifier:
three ``ILIKE '%q%'``, a scan of every device (0.5-2.7 s at 10^6). Nothing existing changes.

PostgreSQL: ``pg_trgm`` GIN trigram indexes on the three columns; the query stays the same three
``ILIKE`` (PostgreSQL answers ``ILIKE`` from a ``gin_trgm_ops`` index and rechecks every row, so
the results are those of the scan). The extension is created if missing (pg_trgm is a trusted
extension since PostgreSQL 13: the database owner may create it). When the role may not, the
migration logs what a superuser must run and carries on without the indexes: the search still
works, as a scan.

SQLite: ``devices_search``, an FTS5 table over the three columns with the trigram tokenizer,
external content (it stores the index only, the text stays in ``devices``) and no positions
(``detail='none'``: 64 MB at 10^6 devices instead of 207 MB, rebuilt in 17 s instead of 30 s),
kept in step by three triggers on ``devices`` and back-filled here ("rebuild"). The store reads
the candidates of a query of three characters or more from it (the rows holding every trigram of
the query) and applies the same ``ILIKE`` to them (``store_devices``).
A later migration that rebuilds ``devices`` (Alembic's batch "move and copy" on SQLite) drops
the triggers with the old table: it must create them again (``tests/test_device_search.py``
checks that they follow inserts, renames and deletions at head).

Neither the FTS5 tables nor the trigram indexes are in the models; ``mdm.db.migrate.unmodelled``
names them for the schema comparison.
"""

import logging

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

log = logging.getLogger("mdm.db.migrations")

COLUMNS = ("name", "serial_number", "identifier")

SQLITE_UP = [
    "CREATE VIRTUAL TABLE devices_search USING fts5("
    "name, serial_number, identifier, content='devices', content_rowid='id', tokenize='trigram', "
    "detail='none')",
    "CREATE TRIGGER devices_search_insert AFTER INSERT ON devices BEGIN "
    "INSERT INTO devices_search(rowid, name, serial_number, identifier) "
    "VALUES (new.id, new.name, new.serial_number, new.identifier); END",
    "CREATE TRIGGER devices_search_delete AFTER DELETE ON devices BEGIN "
    "INSERT INTO devices_search(devices_search, rowid, name, serial_number, identifier) "
    "VALUES ('delete', old.id, old.name, old.serial_number, old.identifier); END",
    # Only when one of the three really changed: an inventory answer that writes the same name
    # again costs nothing here.
    "CREATE TRIGGER devices_search_update AFTER UPDATE OF name, serial_number, identifier ON devices "
    "WHEN old.name IS NOT new.name OR old.serial_number IS NOT new.serial_number "
    "OR old.identifier IS NOT new.identifier BEGIN "
    "INSERT INTO devices_search(devices_search, rowid, name, serial_number, identifier) "
    "VALUES ('delete', old.id, old.name, old.serial_number, old.identifier); "
    "INSERT INTO devices_search(rowid, name, serial_number, identifier) "
    "VALUES (new.id, new.name, new.serial_number, new.identifier); END",
    "INSERT INTO devices_search(devices_search) VALUES ('rebuild')",
]
SQLITE_DOWN = [
    "DROP TRIGGER IF EXISTS devices_search_update",
    "DROP TRIGGER IF EXISTS devices_search_delete",
    "DROP TRIGGER IF EXISTS devices_search_insert",
    "DROP TABLE IF EXISTS devices_search",
]


_SCHEMA = sa.text("SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'pg_trgm'")


def _pg_trgm_schema(bind: sa.engine.Connection) -> str | None:
    """The schema of pg_trgm, created here if missing; None when this role may not create it (or
    the server does not have it)."""
    schema = bind.scalar(_SCHEMA)
    if schema is not None:
        return str(schema)
    try:
        with bind.begin_nested():
            bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
    except sa.exc.DBAPIError as exc:
        database = bind.scalar(sa.text("SELECT current_database()"))
        log.warning(
            "device search: the PostgreSQL extension pg_trgm could not be created (%s); "
            "GET /api/v1/devices?q= works without an index (a scan of every device). "
            "To index it, a superuser runs in database %s: CREATE EXTENSION pg_trgm; (or grants this "
            "role CREATE on the database: pg_trgm is a trusted extension) then %s",
            str(getattr(exc, "orig", exc)).strip().splitlines()[0],
            database,
            "; ".join(_pg_index_sql("public")),
        )
        return None
    return str(bind.scalar(_SCHEMA))


def _pg_index_sql(schema: str) -> list[str]:
    ops = f"{schema}.gin_trgm_ops"  # regnamespace::text quotes the name when it must be
    return [
        f"CREATE INDEX IF NOT EXISTS ix_devices_{c}_trgm ON devices USING gin ({c} {ops})" for c in COLUMNS
    ]


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for statement in SQLITE_UP:
            op.execute(statement)
        return
    schema = _pg_trgm_schema(bind)
    if schema is not None:
        for statement in _pg_index_sql(schema):
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for statement in SQLITE_DOWN:
            op.execute(statement)
        return
    # pg_trgm stays: other databases objects may use it, and it costs nothing unused.
    for column in COLUMNS:
        op.execute(f"DROP INDEX IF EXISTS ix_devices_{column}_trgm")
