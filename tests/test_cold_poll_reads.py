"""A cold poll's look-ups (``mdm.db.point_read``): on SQLite a plain statement runs straight on the
reader's sqlite3 connection, without SQLAlchemy's execution around it, and gives back what
SQLAlchemy gives (typed binds and results, literal binds, LIMIT, named tuples); anything it cannot
plan still goes through SQLAlchemy. On PostgreSQL a look-up is one statement on an autocommit
connection (no BEGIN, no ROLLBACK), with the same answers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import (
    JSON,
    Column,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    bindparam,
    event,
    select,
    text,
)
from sqlalchemy.exc import StatementError

from mdm.db import point_read
from mdm.db.engine import Database
from mdm.db.types import UtcDateTime

META = MetaData()
PROBE = Table(
    "cold_probe",
    META,
    Column("id", Integer, primary_key=True),
    Column("fp", LargeBinary, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("seen_at", UtcDateTime, nullable=True),
    Column("doc", JSON, nullable=True),
)
_c = PROBE.c
BY_FP = select(_c.id, _c.kind, _c.seen_at, _c.doc).where(_c.fp == bindparam("fp"))
# A literal bind ('ready' is compiled as a parameter), a typed bind and a LIMIT.
DUE = (
    select(_c.id)
    .where(_c.kind == "ready", _c.seen_at <= bindparam("now"))
    .order_by(_c.id.desc())
    .limit(1)
)
EXPANDING = select(_c.id).where(_c.id.in_(bindparam("ids", expanding=True))).order_by(_c.id)
NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


@pytest.fixture
async def probe(db: Database) -> AsyncIterator[Database]:
    async with db.engine.begin() as conn:
        await conn.run_sync(META.create_all)
        await conn.execute(
            PROBE.insert(),
            [
                {"id": 1, "fp": b"\x01" * 32, "kind": "ready", "seen_at": NOW - timedelta(hours=1),
                 "doc": {"a": [1, 2]}},
                {"id": 2, "fp": b"\x02" * 32, "kind": "ready", "seen_at": NOW + timedelta(hours=1),
                 "doc": None},
                {"id": 3, "fp": b"\x03" * 32, "kind": "other", "seen_at": None, "doc": {"b": "x"}},
            ],
        )
    try:
        yield db
    finally:
        await point_read.close(db.engine)
        async with db.engine.begin() as conn:
            await conn.run_sync(META.drop_all)


def _executions(db: Database) -> list[str]:
    seen: list[str] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    event.listen(db.engine.sync_engine, "before_cursor_execute", before)
    return seen


async def _through_sqlalchemy(db: Database, stmt: Any, params: dict[str, Any]) -> Any:
    async with db.engine.connect() as conn:
        return (await conn.execute(stmt, params)).first()


async def test_the_direct_path_answers_what_sqlalchemy_answers(probe: Database) -> None:
    for fp in (b"\x01" * 32, b"\x02" * 32, b"\x03" * 32, b"\x04" * 32):
        expected = await _through_sqlalchemy(probe, BY_FP, {"fp": fp})
        got = await point_read.first(probe.engine, BY_FP, {"fp": fp})
        assert (got is None) == (expected is None)
        if got is not None:
            assert tuple(got) == tuple(expected)
            assert got._asdict() == expected._asdict()
            assert (got.id, got.kind, got.seen_at, got.doc) == (expected.id, expected.kind,
                                                                 expected.seen_at, expected.doc)
            if got.seen_at is not None:
                assert got.seen_at.tzinfo is not None  # UtcDateTime's result processing applied
    for now in (NOW, NOW + timedelta(days=1), NOW - timedelta(days=1)):
        expected = await _through_sqlalchemy(probe, DUE, {"now": now})
        got = await point_read.first(probe.engine, DUE, {"now": now})
        assert got == expected
        assert (got[0] if got else None) == (expected[0] if expected else None)


async def test_on_sqlite_a_planned_look_up_bypasses_sqlalchemy_execution(probe: Database) -> None:
    await point_read.first(probe.engine, BY_FP, {"fp": b"\x01" * 32})  # the reader is open
    executions = _executions(probe)
    row = await point_read.first(probe.engine, BY_FP, {"fp": b"\x01" * 32})
    row2 = await point_read.first(probe.engine, DUE, {"now": NOW})
    assert row is not None and row.id == 1
    assert row2 is not None and row2[0] == 1
    if probe.is_sqlite:
        assert executions == []  # straight on the sqlite3 connection
    else:
        assert len(executions) == 2  # PostgreSQL: the statements, on an autocommit connection


async def test_statements_it_cannot_plan_still_work(probe: Database) -> None:
    executions = _executions(probe)
    row = await point_read.first(probe.engine, EXPANDING, {"ids": [2, 3]})
    assert row is not None and row.id == 2
    assert len(executions) == 1  # an expanding IN goes through SQLAlchemy
    assert tuple(await point_read.first(probe.engine, text("SELECT 7 AS n"), {}) or ()) == (7,)
    with pytest.raises(StatementError, match="fp"):  # a missing value: SQLAlchemy's own error
        await point_read.first(probe.engine, BY_FP, {})
    # The reader still works after that.
    assert (await point_read.first(probe.engine, BY_FP, {"fp": b"\x03" * 32}) or [None])[0] == 3


async def test_a_write_is_seen_by_the_next_direct_look_up(probe: Database) -> None:
    assert await point_read.first(probe.engine, BY_FP, {"fp": b"\x05" * 32}) is None
    async with probe.transaction() as session:
        await session.execute(PROBE.insert().values(id=5, fp=b"\x05" * 32, kind="ready", seen_at=NOW))
    row = await point_read.first(probe.engine, BY_FP, {"fp": b"\x05" * 32})
    assert row is not None and (row.id, row.seen_at) == (5, NOW)
    async with probe.transaction() as session:
        await session.execute(PROBE.delete().where(_c.id == 5))
    assert await point_read.first(probe.engine, BY_FP, {"fp": b"\x05" * 32}) is None


def _transaction_statements(db: Database) -> list[str]:
    """The transaction-control statements asyncpg sends (BEGIN, ROLLBACK, COMMIT) on any pool
    connection from now on: each is a round trip of its own."""
    seen: list[str] = []

    def log(record: Any) -> None:
        words = record.query.split()
        word = words[0].upper().rstrip(";") if words else ""
        if word in {"BEGIN", "ROLLBACK", "COMMIT", "START"}:
            seen.append(word)

    def checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        raw = dbapi_connection._connection  # the asyncpg connection under SQLAlchemy's adapter
        if log not in raw._query_loggers:
            raw.add_query_logger(log)

    event.listen(db.engine.sync_engine, "checkout", checkout)
    return seen


async def test_on_postgresql_a_look_up_is_one_round_trip(probe: Database) -> None:
    """No BEGIN before the statement and no ROLLBACK when the connection goes back to the pool:
    a cold poll's binding look-up is one round trip, not three."""
    if probe.is_sqlite:
        pytest.skip("PostgreSQL's transaction blocks")
    control = _transaction_statements(probe)
    executions = _executions(probe)
    row = await point_read.first(probe.engine, BY_FP, {"fp": b"\x01" * 32})
    due = await point_read.first(probe.engine, DUE, {"now": NOW})
    missing = await point_read.first(probe.engine, BY_FP, {"fp": b"\x09" * 32})
    assert row is not None
    assert (row.id, row.kind, row.seen_at, row.doc) == (1, "ready", NOW - timedelta(hours=1), {"a": [1, 2]})
    assert row._asdict()["kind"] == "ready" and row[0] == 1
    assert due is not None and due[0] == 1 and missing is None
    assert len(executions) == 3  # the statements themselves (counters of tests and tools see them)
    assert control == []
    # A look-up leaves its connection outside any transaction: a write after it commits as usual.
    async with probe.transaction() as session:
        await session.execute(PROBE.update().where(_c.id == 1).values(kind="other"))
    row = await point_read.first(probe.engine, BY_FP, {"fp": b"\x01" * 32})
    assert row is not None and row.kind == "other"
