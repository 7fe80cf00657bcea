"""EAS discovery writes in short transactions: on SQLite every write transaction holds the
server's one writer, so a batch of mailboxes (100 per pipeline in production) is written in
parts of ``write_rows`` devices, each device's partnerships together, and the mailbox pass in
parts of ``write_rows`` mailboxes. The outcome does not depend on the parts."""

from __future__ import annotations

from typing import Any

import eas_support
import pytest
from eas_support import discover, event_count
from sql_capture import write_transactions
from sqlalchemy import func, select

from mdm.db.engine import Database
from mdm.devfakes.exchange_local import LocalOrgRunner
from mdm.devfakes.exchange_org import Organisation
from mdm.eas.tables import EasMailbox, EasPartnership

MAILBOXES, DEVICES = 60, 90


def _writes(transactions: list[list[str]], table: str) -> list[list[str]]:
    return [t for t in transactions if any(table in s and s.lstrip().upper().startswith(("INSERT", "UPDATE"))
                                           for s in t)]


async def _counts(db: Database) -> tuple[int, int]:
    async with db.session() as session:
        parts = int(await session.scalar(select(func.count()).select_from(EasPartnership)) or 0)
        mailboxes = int(await session.scalar(select(func.count()).select_from(EasMailbox)) or 0)
    return parts, mailboxes


async def test_a_big_batch_is_written_in_parts(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    org = Organisation.generate(mailboxes=MAILBOXES, devices=DEVICES, seed=7)
    runner = LocalOrgRunner(org, principal=eas_support.PRINCIPAL)
    try:
        with write_transactions(db, monkeypatch) as transactions:
            result = await discover(db, runner, batch=100, concurrency=1, write_rows=10)
    finally:
        await runner.close()
    assert (result.outcome, result.mailboxes, result.devices) == ("ok", MAILBOXES, DEVICES)
    assert await _counts(db) == (DEVICES, MAILBOXES)
    assert await event_count(db, "eas_device_discovered") == DEVICES
    # One pipeline of 100 mailboxes holds every device: written in >= 9 parts, not one.
    assert len(_writes(transactions, "eas_devices")) >= DEVICES // 10
    assert len(_writes(transactions, "eas_mailboxes")) >= MAILBOXES // 10


@pytest.mark.parametrize("write_rows", [1, 500])
async def test_a_shared_device_is_decided_in_one_part(db: Database, write_rows: int) -> None:
    """bob and carol sync the same iPad: one device, two partnerships, the same events whether
    every device is a part of its own or all share one."""
    org = eas_support.small_org()
    runner = LocalOrgRunner(org, principal=eas_support.PRINCIPAL)
    kwargs: dict[str, Any] = {"batch": 100, "write_rows": write_rows}
    try:
        first = await discover(db, runner, **kwargs)
        second = await discover(db, runner, **kwargs)
    finally:
        await runner.close()
    assert (first.outcome, first.devices, second.outcome, second.devices) == ("ok", 4, "ok", 4)
    assert await _counts(db) == (4, 4)
    assert await event_count(db, "eas_device_discovered") == 4
    assert await event_count(db, "eas_device_changed") == 0
