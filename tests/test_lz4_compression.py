"""PostgreSQL stores a bulk batch's ``commands_created`` body, and the commands' documents, with
lz4 (migration 0022: pglz cost ~5 ms more per batch of 2,000 for a body 5 % smaller), and reads
them back as written. Real PostgreSQL; SQLite has no such setting."""

from __future__ import annotations

import pytest
from bulk_support import add_devices
from sqlalchemy import select, text

from mdm.core.bulk import BulkService
from mdm.core.library import Translators
from mdm.core.push import Pushers
from mdm.db.engine import Database
from mdm.db.models import Event, Protocol
from mdm.ios.commands import IosCommandTranslator

COLUMNS = [("commands", "args"), ("commands", "payload"), ("commands", "result_data"), ("events", "body")]


@pytest.fixture
def pg(db: Database) -> Database:
    if db.is_sqlite:
        pytest.skip("column compression is PostgreSQL's")
    return db


async def _lz4_offered(db: Database) -> bool:
    async with db.session() as session:
        return bool(await session.scalar(text(
            "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"
        )))


async def test_the_bulky_columns_compress_with_lz4(pg: Database) -> None:
    if not await _lz4_offered(pg):
        pytest.skip("this PostgreSQL is built without lz4: the migration keeps pglz")
    async with pg.session() as session:
        rows = await session.execute(text(
            "SELECT c.relname, a.attname, a.attcompression::text FROM pg_attribute a "
            "JOIN pg_class c ON c.oid = a.attrelid "
            "WHERE (c.relname, a.attname) IN (('commands', 'args'), ('commands', 'payload'), "
            "('commands', 'result_data'), ('events', 'body'))"
        ))
        assert sorted((r[0], r[1], r[2]) for r in rows) == [(t, c, "l") for t, c in COLUMNS]


async def test_a_batchs_event_body_is_stored_with_lz4_and_read_back_whole(pg: Database) -> None:
    if not await _lz4_offered(pg):
        pytest.skip("this PostgreSQL is built without lz4: the migration keeps pglz")
    ids = await add_devices(pg, 300)  # ~15 KB of [device, GUID] pairs: over the 2 KB threshold
    translators = Translators()
    translators.register(Protocol.IOS, IosCommandTranslator())
    svc = BulkService(pg, translators, Pushers(), batch_size=1000)
    op = await svc.create("Block", {}, by="test")
    while await svc.step(op.id):
        pass
    async with pg.session() as session:
        method = await session.scalar(text(
            "SELECT pg_column_compression(body) FROM events WHERE type = 'commands_created'"
        ))
        body = await session.scalar(select(Event.body).where(Event.type == "commands_created"))
    assert method == "lz4"
    assert body is not None and body["count"] == 300 and body["bulk"] == op.id
    assert [pair[0] for pair in body["commands"]] == ids
    assert len({pair[1] for pair in body["commands"]}) == 300
