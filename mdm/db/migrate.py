"""Apply Alembic migrations programmatically (at ``mdm init`` and ``mdm serve``)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection

from mdm.db.engine import Database

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
MIGRATION_LOCK_KEY = 0x6D646D5F6D6967  # "mdm_mig": the advisory lock that serialises upgrades


def unmodelled(name: str | None, type_: str, parent_names: object = None) -> bool:
    """False for the objects migrations manage outside the models (revision 0018, the device
    search: SQLite's FTS5 table ``devices_search`` and its shadow tables, PostgreSQL's trigram
    indexes): an ``include_name`` hook for schema comparisons."""
    if type_ == "table":
        return not (name or "").startswith("devices_search")
    if type_ == "index":
        return not (name or "").endswith("_trgm")
    return True


def alembic_config(connection: Connection | None = None) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    return cfg


def _pending(connection: Connection) -> list[str]:
    """Revisions not yet applied. Feature packages may add parallel branches; all heads apply."""
    script = ScriptDirectory.from_config(alembic_config())
    current = set(MigrationContext.configure(connection).get_current_heads())
    applied: set[str] = set()
    for rev in current:
        applied.update(r.revision for r in script.iterate_revisions(rev, "base"))
    wanted = [r.revision for r in script.walk_revisions("base", "heads")]
    return [r for r in reversed(wanted) if r not in applied]


async def pending_migrations(db: Database) -> list[str]:
    async with db.engine.connect() as conn:
        return await conn.run_sync(_pending)


async def upgrade(db: Database) -> list[str]:
    """Migrate to head; returns the revisions applied (empty when already current)."""

    def _run(connection: Connection) -> list[str]:
        todo = _pending(connection)
        if todo:
            command.upgrade(alembic_config(connection), "heads")
        return todo

    async with db.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Replicas starting together: one migrates, the others wait here and then find nothing
            # to do (the lock is released when this transaction, DDL included, commits).
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        return await conn.run_sync(_run)
