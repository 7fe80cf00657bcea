"""The device list's search (``q``, revision 0018): the same devices as the plain substring scan
(three ``ILIKE``) on both engines, through an index (SQLite's FTS5 trigram table, PostgreSQL's
pg_trgm indexes) for queries of 3 characters or more; the SQLite index follows inserts, renames
and deletions; the migration back-fills existing devices and downgrades."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
from alembic import command
from conftest import PG_URL
from sql_capture import selects
from sqlalchemy import Table, delete, insert, or_, select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession
from test_migrations import _pg_scratch

from mdm.core import store_devices as store
from mdm.db import migrate
from mdm.db.engine import Database
from mdm.db.models import Device

NAMES = [
    "Alice's iPhone",
    "ALICE'S IPAD",
    "bob-mac 42",
    "Chloé's iPhone",
    "CHLOÉ",
    "Émile",
    "émile",
    "Straße 7",
    "STRASSE",
    "İstanbul tab",
    "istanbul",
    "\u212aelvin",
    "kelvin",
    "ΣΟΦΙΑ",
    "σοφία",
    "100% ready",
    "100 percent",
    "snake_case_name",
    "snakeXcaseXname",
    "back\\slash",
    "backslash",
    'say "hi" now',
    "it's 'quoted'",
    "NEAR(a b)",
    "a AND b OR c NOT d",
    "star* power",
    "^caret:col",
    "-minus +plus",
    "(paren)",
    "tab\tand  spaces",
    "日本語のデバイス",
    "emoji 📱 phone",
    "iphX phone",  # every trigram of "iphone", apart: an index candidate that is no match
    None,
]
SERIALS = ["C02XK0ABCD12", "c02xk0abcd12", "F2LX%_\\9", None, "DMPQ1234ZZ", "ab", '"*"', "NEAR"]

QUERIES = [
    # 1 and 2 characters (the scan), 3 (one trigram) and longer
    "a",
    "A",
    "é",
    "%",
    "_",
    "\\",
    '"',
    "*",
    "ab",
    "AB",
    "é'",
    "%_",
    "  ",
    "ali",
    "ALI",
    "Alice's",
    "alice's iphone",
    "iphone",
    "IPAD",
    "chloé",
    "CHLOÉ",
    "Chloé's",
    "émi",
    "ÉMI",
    "straße",
    "STRASSE",
    "strasse",
    "istanbul",
    "İstanbul",
    "kelvin",
    "KELVIN",
    "\u212aelvin",
    "σοφ",
    "ΣΟΦ",
    "σοφία",
    "ΣΟΦΙΑ",
    "100%",
    "0% r",
    "% ready",
    "snake_case",
    "e_c",
    "_ca",
    "k\\s",
    "back\\slash",
    "\\\\",
    '"hi"',
    'say "',
    '""',
    "'quoted'",
    "it's",
    "NEAR(",
    "near(a b)",
    "AND b",
    "OR c",
    "NOT",
    "star*",
    "r* p",
    "^ca",
    "et:c",
    "-mi",
    "+pl",
    "(pa",
    "n)",
    "b\tand",
    "d  s",
    "日本語",
    "のデバ",
    "📱 p",
    "c02xk0",
    "C02XK0ABCD12",
    "x%_\\",
    "F2LX%_\\9",
    '"*"',
    "zzz-miss",
    "abcdefghijklmnopqrstuvwxyz-miss",
    "device-00",
    "EVICE-000",
    "9",
]


SEARCHED = ("name", "serial_number", "identifier")


def _corpus() -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    return [
        {
            "protocol": (1, 2, 4)[i % 3], "identifier": f"DEVICE-{i:04d}-{(name or 'x')[:3]}",
            "name": name, "serial_number": SERIALS[i % len(SERIALS)],
            "status": ("ok", "unmanaged")[i % 2], "supported_commands": 0, "enrolled_at": now,
            "push_valid": False, "inventory": {}, "attributes": {},
        }
        for i, name in enumerate(NAMES * 2)
    ]  # fmt: skip


async def _add_corpus(session: AsyncSession) -> None:
    await session.execute(insert(cast(Table, Device.__table__)), _corpus())


def _scan(q: str) -> Any:
    """The search as it was before revision 0018: three ILIKE over every device."""
    like = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    return or_(*(c.ilike(like, escape="\\") for c in (Device.name, Device.serial_number, Device.identifier)))


@pytest.fixture
async def corpus(db: Database) -> Database:
    async with db.transaction() as session:
        await _add_corpus(session)
    return db


async def _ids(session: AsyncSession, **filters: Any) -> list[int]:
    return [d.id for d, _ in await store.device_page(session, limit=10_000, **filters)]


@pytest.mark.parametrize("q", QUERIES)
async def test_search_finds_what_the_scan_finds(corpus: Database, q: str) -> None:
    async with corpus.session() as session:
        expected = list((await session.scalars(select(Device.id).where(_scan(q)).order_by(Device.id))).all())
        assert await _ids(session, q=q) == expected
        assert await store.count_devices(session, q=q) == len(expected)
        # with the other filters
        flt: dict[str, Any] = {"protocol": 1, "status": "ok"}
        both = list((await session.scalars(
            select(Device.id).where(_scan(q), Device.protocol == 1, Device.status == "ok").order_by(Device.id)
        )).all())  # fmt: skip
        assert await _ids(session, q=q, **flt) == both
        assert await store.count_devices(session, q=q, **flt) == len(both)
        # A capped count stops one past the cap: exact below it, cap + 1 for "more".
        for cap in (0, 1, 3, 10_000):
            assert await store.count_devices(session, q=q, cap=cap) == min(len(expected), cap + 1)
        # keyset pages of 2 walk the same devices
        paged: list[int] = []
        after: int | None = None
        while True:
            page = [d.id for d, _ in await store.device_page(session, limit=2, after_id=after, q=q)]
            paged += page
            if len(page) < 2:
                break
            after = page[-1]
        assert paged == expected
        # Where both engines fold case the same way (ASCII), Python's own substring test agrees.
        rows = (
            await session.execute(
                select(Device.id, Device.name, Device.serial_number, Device.identifier).order_by(Device.id)
            )
        ).all()
    ascii_rows = [r for r in rows if all((v or "").isascii() for v in r[1:])]
    if q.isascii():
        assert [r[0] for r in ascii_rows if any(q.lower() in (v or "").lower() for v in r[1:])] == [
            i for i in expected if i in {r[0] for r in ascii_rows}
        ]


async def test_queries_of_three_characters_or_more_use_the_index(corpus: Database) -> None:
    for q, indexed in (("iphone", True), ("é's", True), ('"*"', True), ("ab", False), ("a", False)):
        with selects(corpus) as seen:
            async with corpus.session() as session:
                await store.device_page(session, limit=51, q=q)
                await store.count_devices(session, q=q)
        assert len(seen) == 2
        async with corpus.engine.connect() as conn:
            for statement, parameters in seen:
                if corpus.is_sqlite:
                    rows = await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
                    plan = " | ".join(str(r[-1]) for r in rows)
                    assert ("VIRTUAL TABLE INDEX" in plan and "devices_search" in plan) == indexed, plan
                    assert "TEMP B-TREE" not in plan, plan  # a page reads the index in id order
                else:  # a test table is tiny: the planner would read it whole, or walk the primary key
                    await conn.exec_driver_sql("SET enable_seqscan = off")
                    await conn.exec_driver_sql("SET enable_indexscan = off")
                    rows = await conn.exec_driver_sql("EXPLAIN " + statement, parameters)
                    plan = " | ".join(str(r[0]) for r in rows)
                    if indexed:  # pg_trgm serves 1-2 character LIKE too, by a full index scan
                        assert all(f"ix_devices_{c}_trgm" in plan for c in SEARCHED), plan


async def test_the_index_follows_inserts_renames_and_deletions(db: Database) -> None:
    async def found(q: str) -> list[int]:
        async with db.session() as session:
            return await _ids(session, q=q)

    async with db.transaction() as session:
        await _add_corpus(session)
        [device_id] = (
            await session.scalars(select(Device.id).where(Device.name == "bob-mac 42").limit(1))
        ).all()
    assert device_id in await found("bob-mac")
    async with db.transaction() as session:
        await session.execute(update(Device).where(Device.id == device_id).values(name="Renamed Quokka"))
    assert device_id not in await found("bob-mac")
    assert await found("quokka") == [device_id]
    async with db.transaction() as session:  # another column, and the same name again: unchanged
        await session.execute(
            update(Device).where(Device.id == device_id).values(status="unmanaged", name="Renamed Quokka")
        )
        await session.execute(
            update(Device)
            .where(Device.id == device_id)
            .values(serial_number="SERIAL-WOMBAT", identifier="ID-NUMBAT")
        )
    assert await found("wombat") == [device_id] == await found("numbat") == await found("quokka")
    async with db.transaction() as session:
        await session.execute(delete(Device).where(Device.id == device_id))
    assert await found("quokka") == [] == await found("wombat")
    async with db.transaction() as session:  # a new device is found at once
        await session.execute(insert(cast(Table, Device.__table__)), [{
            "protocol": 1, "identifier": "NEW-PLATYPUS", "name": None, "serial_number": None, "status": "ok",
            "supported_commands": 0, "enrolled_at": datetime.now(UTC), "push_valid": False,
            "inventory": {}, "attributes": {},
        }])  # fmt: skip
    assert len(await found("platypus")) == 1
    if db.is_sqlite:
        async with db.engine.begin() as conn:  # raises when the index and devices disagree
            await conn.exec_driver_sql(
                "INSERT INTO devices_search(devices_search, rank) VALUES ('integrity-check', 1)"
            )


# ---- the migration ------------------------------------------------------------------------------


@pytest.fixture
async def scratch(tmp_path: Path) -> AsyncIterator[Database]:
    url = await _pg_scratch(PG_URL) if PG_URL else f"sqlite+aiosqlite:///{tmp_path / 'scratch.sqlite3'}"
    database = Database(url)
    yield database
    await database.close()


async def _alembic(db: Database, verb: str, revision: str) -> None:
    def run(conn: Connection) -> None:
        getattr(command, verb)(migrate.alembic_config(conn), revision)

    async with db.engine.begin() as conn:
        await conn.run_sync(run)


async def _search_objects(db: Database) -> set[str]:
    async with db.engine.connect() as conn:
        if db.is_sqlite:
            sql = "SELECT name FROM sqlite_master WHERE name LIKE 'devices_search%'"
        else:
            sql = "SELECT indexname FROM pg_indexes WHERE tablename = 'devices' AND indexname LIKE '%_trgm'"
        return {r[0] for r in await conn.execute(text(sql))}


async def test_the_migration_backfills_and_downgrades(scratch: Database) -> None:
    await _alembic(scratch, "upgrade", "0017")
    async with scratch.transaction() as session:
        await _add_corpus(session)
    await _alembic(scratch, "upgrade", "0018")
    if scratch.is_sqlite:
        assert {
            "devices_search",
            "devices_search_insert",
            "devices_search_update",
            "devices_search_delete",
        } <= await _search_objects(scratch)
    else:
        assert await _search_objects(scratch) == {f"ix_devices_{c}_trgm" for c in SEARCHED}
    for q in ("iphone", "chloé", "device-00", "100%"):
        async with scratch.session() as session:
            expected = list(
                (await session.scalars(select(Device.id).where(_scan(q)).order_by(Device.id))).all()
            )
            assert expected and await _ids(session, q=q) == expected
    await _alembic(scratch, "downgrade", "0017")
    assert await _search_objects(scratch) == set()
    await _alembic(scratch, "upgrade", "heads")
    async with scratch.session() as session:
        assert len(await _ids(session, q="iphone")) == len(await _ids(session, q="IPHONE")) > 0


@pytest.mark.skipif(not PG_URL, reason="PostgreSQL's extensions")
async def test_without_pg_trgm_the_migration_says_so_and_q_scans(caplog: pytest.LogCaptureFixture) -> None:
    """A role that may not create pg_trgm (no CREATE on the database): the migration logs what a
    superuser must run, completes, and ``q`` finds what the scan finds."""
    import asyncpg
    from sqlalchemy.engine import make_url

    base = make_url(PG_URL)
    name, role = f"{base.database}_noext", f"{base.database}_noext_role"
    admin = await asyncpg.connect(host=base.host, port=base.port, user=base.username, database="postgres")
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        await admin.execute(f'CREATE ROLE "{role}" LOGIN NOSUPERUSER NOCREATEDB')
        await admin.execute(f'CREATE DATABASE "{name}"')
        owner = await asyncpg.connect(host=base.host, port=base.port, user=base.username, database=name)
        try:
            await owner.execute(f'GRANT CREATE, USAGE ON SCHEMA public TO "{role}"')
        finally:
            await owner.close()
        db = Database(base.set(database=name, username=role).render_as_string(hide_password=False))
        try:
            with caplog.at_level("WARNING", logger="mdm.db.migrations"):
                assert "0018" in await migrate.upgrade(db)
            assert "CREATE EXTENSION pg_trgm" in caplog.text and name in caplog.text
            assert await _search_objects(db) == set()
            async with db.transaction() as session:
                await _add_corpus(session)
            async with db.session() as session:
                for q in ("iphone", "chloé", "100%"):
                    scan = select(Device.id).where(_scan(q)).order_by(Device.id)
                    expected = list((await session.scalars(scan)).all())
                    assert expected and await _ids(session, q=q) == expected
        finally:
            await db.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        await admin.close()
