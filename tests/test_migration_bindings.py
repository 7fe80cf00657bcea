"""Revision 0008 on a database that holds data: recreating the SQLite tables as AUTOINCREMENT must
not cascade-delete a single child row (foreign keys are enforced on every connection), ids are
never reused afterwards, and a downgrade keeps the data too. PostgreSQL only gains the columns."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from conftest import PG_URL
from sqlalchemy import func, select, text
from test_migrations import _pg_scratch

from mdm.db import migrate
from mdm.db.engine import Database
from mdm.schema import metadata

NOW = datetime(2026, 1, 1, tzinfo=UTC)
T = metadata.tables


@pytest.fixture
async def old_db(tmp_path: Path) -> AsyncIterator[Database]:
    url = await _pg_scratch(PG_URL) if PG_URL else f"sqlite+aiosqlite:///{tmp_path / 'old.sqlite3'}"
    db = Database(url)
    async with db.engine.begin() as conn:
        await conn.run_sync(lambda c: command.upgrade(migrate.alembic_config(c), "0007"))
    yield db
    await db.close()


def _device(identifier: str, **extra: Any) -> dict[str, Any]:
    return {
        "protocol": 1, "identifier": identifier, "status": "ok", "supported_commands": 0, "enrolled_at": NOW,
        "push_valid": False, "inventory": {}, "attributes": {}, **extra,
    }  # fmt: skip


async def _insert(conn: Any, table: str, **values: Any) -> int:
    return int((await conn.execute(T[table].insert().values(**values))).inserted_primary_key[0])


async def _fill(db: Database) -> dict[str, int]:
    """What a 0007 database holds: a user and a group, a device bound to an identity, a queued
    command with its journal, an enrollment and an API token. Ids as the database hands them out."""
    async with db.engine.begin() as conn:
        user = await _insert(conn, "users", name="alice", created_at=NOW)
        group = await _insert(conn, "groups", name="sales", created_at=NOW)
        bound = await _insert(conn, "devices", user_id=user, group_id=group, **_device("udid-1"))
        last = await _insert(conn, "devices", **_device("udid-2"))
        await conn.execute(
            T["ios_devices"].insert().values(
                device_id=bound, cert_fingerprint=b"\1" * 32, awaiting_configuration=False, bound_at=NOW,
                updated_at=NOW,
            )
        )  # fmt: skip
        cmd = await _insert(
            conn, "commands", guid="G1", device_id=bound, type="Raw", args={}, payload={}, flags=0,
            priority=0, status="processing", created_at=NOW, updated_at=NOW, attempts=0, active=True,
        )  # fmt: skip
        await conn.execute(
            T["command_queue"].insert().values(
                command_id=cmd, device_id=bound, priority=0, created_at=NOW, in_flight=False, not_now_count=0
            )
        )
        await conn.execute(T["command_journal"].insert().values(command_id=cmd, at=NOW, status="processing"))
        await _insert(
            conn, "enrollments", uuid="u-1", platform="ios", user_id=user, delivery="file",
            status="delivered", identity="pkcs12", created_at=NOW, expires_at=NOW, mdm_profile_identifier="x",
            device_id=bound,
        )  # fmt: skip
        await _insert(
            conn, "api_tokens", name="t", prefix="p", secret_hash=b"\0" * 32, scopes="admin", created_at=NOW,
            revoked=False,
        )  # fmt: skip
    return {"user": user, "group": group, "bound": bound, "last": last}


async def _counts(db: Database) -> dict[str, int]:
    names = ("users", "groups", "devices", "ios_devices", "commands", "command_queue", "command_journal",
             "enrollments", "api_tokens")  # fmt: skip
    async with db.engine.connect() as conn:
        return {
            n: int((await conn.execute(select(func.count()).select_from(T[n]))).scalar_one()) for n in names
        }


EXPECTED = {"users": 1, "groups": 1, "devices": 2, "ios_devices": 1, "commands": 1, "command_queue": 1,
            "command_journal": 1, "enrollments": 1, "api_tokens": 1}  # fmt: skip


async def test_upgrade_and_downgrade_keep_every_row(old_db: Database) -> None:
    ids = await _fill(old_db)
    assert (await migrate.upgrade(old_db))[0] == "0008"  # and any later revision
    assert await _counts(old_db) == EXPECTED
    devices = T["devices"]
    async with old_db.engine.connect() as conn:
        device = (await conn.execute(select(devices).where(devices.c.id == ids["bound"]))).one()
        assert (device.user_id, device.group_id) == (ids["user"], ids["group"])
        if old_db.is_sqlite:
            assert (await conn.execute(text("PRAGMA foreign_keys"))).scalar() == 1
            assert (await conn.execute(text("PRAGMA foreign_key_check"))).all() == []
    # Foreign keys still cascade; then the highest id is deleted and a new row never gets it back.
    async with old_db.engine.begin() as conn:
        await conn.execute(devices.delete().where(devices.c.id == ids["bound"]))
        assert (await conn.execute(select(func.count()).select_from(T["commands"]))).scalar_one() == 0
        await conn.execute(devices.delete().where(devices.c.id == ids["last"]))
        assert await _insert(conn, "devices", **_device("udid-3")) > ids["last"]
    async with old_db.engine.begin() as conn:
        await conn.run_sync(lambda c: command.downgrade(migrate.alembic_config(c), "0007"))
    counts = await _counts(old_db)
    assert (counts["users"], counts["devices"], counts["enrollments"]) == (1, 1, 1)
    if old_db.is_sqlite:
        async with old_db.engine.connect() as conn:
            assert (await conn.execute(text("PRAGMA foreign_keys"))).scalar() == 1
    assert (await migrate.upgrade(old_db))[0] == "0008"  # and any later revision
