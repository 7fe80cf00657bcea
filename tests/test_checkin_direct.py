"""A device channel's TokenUpdate on PostgreSQL without a transaction block (issue 12, check-in
storms): the state read without a lock, then one statement that writes the change and its event
only if the rows are still as read. A change that lands between the read and the write (push
feedback, another check-in, a deletion) leaves the statement writing nothing, and the
transactional path decides again under the rows' locks: nothing lost, doubled or half-written."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from binding_support import checkin_at, device_of, events_of
from checkin_direct_support import Transactions, change_after_read, counting
from ios_support import Phone
from sqlalchemy import delete, update

from mdm.db.engine import Database
from mdm.db.models import Device
from mdm.db.prepared import autocommit
from mdm.ios import store_checkin_direct
from mdm.ios.tables import IosDevice
from mdm.server.runtime import Server


@pytest.fixture
def postgres(db: Database) -> None:
    if db.is_sqlite:
        pytest.skip("transaction blocks are PostgreSQL's round trips (SQLite runs inline)")


@pytest.fixture
def extra_config() -> str:
    return "[ios]\nlast_seen_flush_seconds = 300\n"  # no write-behind transactions meanwhile


@pytest.fixture
def seen(server: Server) -> Iterator[Transactions]:
    with counting(server, "push_token") as counted:
        yield counted


def _between(monkeypatch: pytest.MonkeyPatch, change: Callable[[], Awaitable[None]]) -> list[int]:
    return change_after_read(monkeypatch, store_checkin_direct, "token_state", change)


_BINDING_COLUMNS = frozenset({"unlock_token", "awaiting_configuration", "last_signed_at"})


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


async def test_a_token_update_is_one_read_and_one_write_outside_a_transaction(
    postgres: None, ios: httpx.AsyncClient, phone: Phone, db: Database, seen: Transactions
) -> None:
    before = len(await events_of(db, "push_token_updated"))
    seen.reset()
    response = await phone.checkin(ios, phone.token_update(token=b"\x05" * 32, AwaitingConfiguration=True))
    assert response.status_code == 200, response.text
    assert seen.connections and seen.count() == 0  # no BEGIN/COMMIT
    device = await device_of(db, phone.udid)
    assert (device.push_token, device.push_valid) == ((b"\x05" * 32).hex(), True)
    async with db.session() as session:
        ios_row = await session.get(IosDevice, device.id)
    assert ios_row is not None and ios_row.awaiting_configuration is True
    assert ios_row.unlock_token == b"unlock-secret"
    events = await events_of(db, "push_token_updated")
    assert len(events) == before + 1
    assert events[-1].body == {"channel": "device", "changed": True, "unlock_token": False}
    # A repeat: one read, nothing written, no transaction either.
    assert (await phone.checkin(ios, phone.token_update(token=b"\x05" * 32))).status_code == 200
    assert seen.count() == 0 and len(await events_of(db, "push_token_updated")) == before + 1


async def test_push_feedback_between_read_and_write_is_not_lost(
    postgres: None,
    ios: httpx.AsyncClient,
    phone: Phone,
    db: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    device = await device_of(db, phone.udid)
    before = len(await events_of(db, "push_token_updated"))

    async def feedback() -> None:  # APNs said the token is no longer valid
        async with db.transaction() as session:
            await session.execute(update(Device).where(Device.id == device.id).values(push_valid=False))

    reads = _between(monkeypatch, feedback)
    # The same token and a new UnlockToken: as read, only the UnlockToken changes; after the
    # feedback the token is also made valid again (``changed``: decided again, under the locks).
    same = device.push_token
    assert same is not None
    response = await phone.checkin(ios, phone.token_update(token=bytes.fromhex(same), UnlockToken=b"x"))
    assert response.status_code == 200, response.text
    assert reads == [1]  # read once: written by the single statement
    after = await device_of(db, phone.udid)
    assert (after.push_token, after.push_valid) == (same, True)
    events = await events_of(db, "push_token_updated")
    assert len(events) == before + 1  # one event: not doubled by the two paths
    assert events[-1].body == {"channel": "device", "changed": True, "unlock_token": True}


async def test_a_newer_check_in_between_read_and_write_makes_this_one_a_replay(
    postgres: None, ios: httpx.AsyncClient, phone: Phone, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = _now()
    assert (await checkin_at(ios, phone, phone.token_update(token=b"\x0a" * 32), now)).status_code == 200
    device = await device_of(db, phone.udid)
    before = len(await events_of(db, "push_token_updated"))

    async def newer() -> None:  # another check-in of the device, signed later, committed first
        async with db.transaction() as session:
            await session.execute(
                update(IosDevice)
                .where(IosDevice.device_id == device.id)
                .values(last_signed_at=now + timedelta(seconds=10))
            )

    _between(monkeypatch, newer)
    later = now + timedelta(seconds=1)
    response = await checkin_at(ios, phone, phone.token_update(token=b"\x0b" * 32), later)
    assert response.status_code == 400
    assert response.json()["error"]["details"]["reason"] == "replayed"
    assert (await device_of(db, phone.udid)).push_token == (b"\x0a" * 32).hex()
    assert len(await events_of(db, "push_token_updated")) == before


async def test_a_deletion_between_read_and_write_writes_nothing(
    postgres: None, ios: httpx.AsyncClient, phone: Phone, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    device = await device_of(db, phone.udid)
    before = len(await events_of(db, "push_token_updated"))

    async def deleted() -> None:
        async with db.transaction() as session:
            await session.execute(delete(Device).where(Device.id == device.id))

    _between(monkeypatch, deleted)
    response = await phone.checkin(ios, phone.token_update(token=b"\x0c" * 32))
    assert response.status_code == 400
    assert response.json()["error"]["details"]["reason"] == "unbound"
    assert len(await events_of(db, "push_token_updated")) == before


async def test_the_guarded_write_changes_nothing_when_a_column_moved(
    postgres: None, phone: Phone, db: Database
) -> None:
    """Each column the decision is made from guards the write on its own."""
    device = await device_of(db, phone.udid)
    moved: dict[str, Any] = {
        "push_token": "ff" * 32,
        "push_magic": "other",
        "push_valid": False,
        "unlock_token": b"other",
        "awaiting_configuration": True,
        "last_signed_at": _now() - timedelta(days=1),
    }
    for column, value in moved.items():
        async with autocommit(db.engine) as conn:
            read = await store_checkin_direct.token_state(conn, device.id)
        assert read is not None
        table = IosDevice if column in _BINDING_COLUMNS else Device
        key = IosDevice.device_id if table is IosDevice else Device.id
        async with db.transaction() as session:
            await session.execute(update(table).where(key == device.id).values({column: value}))
        before = len(await events_of(db, "push_token_updated"))
        async with autocommit(db.engine) as conn:
            wrote = await store_checkin_direct.write_if_unchanged(
                conn,
                device.id,
                read,
                device={"push_token": "aa" * 32},
                binding={"updated_at": _now()},
                event=_event(device.id),
            )
        assert not wrote, column
        assert len(await events_of(db, "push_token_updated")) == before, column
        assert (await device_of(db, phone.udid)).push_token != "aa" * 32, column
    # As read: written, with its event.
    async with autocommit(db.engine) as conn:
        read = await store_checkin_direct.token_state(conn, device.id)
        assert read is not None
        wrote = await store_checkin_direct.write_if_unchanged(
            conn, device.id, read, device={"push_token": "aa" * 32}, binding={"updated_at": _now()},
            event=_event(device.id),
        )  # fmt: skip
    assert wrote and (await device_of(db, phone.udid)).push_token == "aa" * 32


def _event(device_id: int) -> dict[str, Any]:
    from mdm.core import events
    from mdm.ios.event_types import PUSH_TOKEN_UPDATED

    return events.event_values(
        PUSH_TOKEN_UPDATED, device_id=device_id, channel="device", changed=True, unlock_token=False
    )
