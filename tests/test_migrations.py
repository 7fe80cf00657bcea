"""Alembic migrations: an empty database migrated to head has exactly the schema of the models
(no drift, on SQLite and on PostgreSQL), and a second upgrade applies nothing."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from conftest import PG_URL, _ensure_pg_database
from sqlalchemy import inspect
from sqlalchemy.engine import Connection, make_url

from mdm.db import migrate
from mdm.db.engine import Database
from mdm.schema import metadata


async def _pg_scratch(base_url: str) -> str:
    """A database of its own next to the test database, recreated empty."""
    import asyncpg

    u = make_url(base_url)
    name = f"{u.database}_migrations"
    conn = await asyncpg.connect(
        host=u.host or "127.0.0.1", port=u.port or 5432, user=u.username or "postgres",
        password=u.password, database="postgres",
    )  # fmt: skip
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
    url = u.set(database=name).render_as_string(hide_password=False)
    await _ensure_pg_database(url)
    return url


@pytest.fixture
async def empty_db(tmp_path: Path) -> AsyncIterator[Database]:
    url = await _pg_scratch(PG_URL) if PG_URL else f"sqlite+aiosqlite:///{tmp_path / 'empty.sqlite3'}"
    db = Database(url)
    yield db
    await db.close()


def _drift(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "include_name": migrate.unmodelled}
    )
    return compare_metadata(context, metadata)


def _tables(connection: Connection) -> set[str]:
    return {t for t in inspect(connection).get_table_names() if migrate.unmodelled(t, "table")}


async def test_fresh_database_matches_the_models(empty_db: Database) -> None:
    async with empty_db.engine.connect() as conn:
        assert await conn.run_sync(_tables) == set()
    applied = await migrate.upgrade(empty_db)
    heads = ScriptDirectory.from_config(migrate.alembic_config()).get_heads()
    assert applied and set(heads) <= set(applied)
    async with empty_db.engine.connect() as conn:
        drift = await conn.run_sync(_drift)
        tables = await conn.run_sync(_tables)
    assert drift == [], "the migrations do not produce the models' schema:\n" + "\n".join(map(str, drift))
    assert set(metadata.tables) | {"alembic_version"} == tables


async def test_second_upgrade_applies_nothing(empty_db: Database) -> None:
    first = await migrate.upgrade(empty_db)
    assert first
    assert await migrate.pending_migrations(empty_db) == []
    assert await migrate.upgrade(empty_db) == []
    async with empty_db.engine.connect() as conn:
        current = await conn.run_sync(lambda c: set(MigrationContext.configure(c).get_current_heads()))
    assert current == set(ScriptDirectory.from_config(migrate.alembic_config()).get_heads())


async def test_every_revision_chains_to_the_base() -> None:
    script = ScriptDirectory.from_config(migrate.alembic_config())
    revisions = list(script.walk_revisions("base", "heads"))
    assert [r.revision for r in revisions if r.down_revision is None] == ["0001"]
    files = sorted(p.name for p in (Path(migrate.MIGRATIONS_DIR) / "versions").glob("*.py"))
    assert len(files) == len(revisions), "a migration file that is not in the revision graph"


UPGRADE = """
import asyncio, json, sys
from mdm.db import migrate
from mdm.db.engine import Database

async def main():
    db = Database(sys.argv[1])
    try:
        print(json.dumps(await migrate.upgrade(db)))
    finally:
        await db.close()

asyncio.run(main())
"""


@pytest.mark.skipif(
    not PG_URL, reason="SQLite serves one process per data directory; replicas share PostgreSQL"
)
async def test_replicas_starting_together_migrate_once() -> None:
    url = await _pg_scratch(PG_URL)
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", UPGRADE, url, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        for _ in range(3)
    ]
    results = [await asyncio.wait_for(p.communicate(), 120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err.decode()[-500:] for _, err in results]
    applied = sorted(json.loads(out) for out, _ in results)
    assert applied[0] == applied[1] == [] and applied[2]  # one replica migrated, the others found nothing
