"""Discovery when Exchange misbehaves: unreachable (failed run, nothing vanished), a mailbox
whose devices cannot be read (partial run, nothing vanished), a mailbox that vanished between the
mailbox pass and the device pass (simply gone), a cmdlet not permitted, and values with quotes,
semicolons and ``$(...)`` that reach Exchange verbatim."""

from __future__ import annotations

import eas_support
from eas_support import PRINCIPAL, discover, event_bodies, event_count, make_runner
from sqlalchemy import select

from mdm.db.engine import Database
from mdm.devfakes.exchange_org import ExchangeFault, Organisation
from mdm.eas.seams import CmdletRunner
from mdm.eas.tables import EasDiscovery, EasPartnership

org = eas_support.org
runner = eas_support.runner
STATS = "Get-ActiveSyncDeviceStatistics"


async def _vanished(db: Database) -> list[str]:
    async with db.session() as session:
        rows = await session.scalars(select(EasPartnership).where(EasPartnership.vanished_at.is_not(None)))
        return sorted(p.exchange_identity for p in rows)


async def _row(db: Database) -> EasDiscovery:
    async with db.session() as session:
        row = await session.get(EasDiscovery, 1)
    assert row is not None
    return row


async def test_unreachable_fails_the_run_and_marks_nothing(db: Database, org: Organisation) -> None:
    first = make_runner(org)
    assert (await discover(db, first)).outcome == "ok"
    await first.close()  # a closed runner answers "unavailable", as an unreachable server does
    result = await discover(db, first)
    assert (result.outcome, result.reason) == ("failed", "unavailable")
    row = await _row(db)
    assert row.outcome == "failed" and row.error and row.finished_at is not None
    failed = await event_bodies(db, "eas_discovery_failed")
    assert [f["reason"] for f in failed] == ["unavailable"]
    assert await _vanished(db) == []
    assert await event_count(db, "eas_device_vanished") == 0


async def test_unreadable_mailbox_makes_a_partial_run(
    db: Database, org: Organisation, runner: CmdletRunner
) -> None:
    assert (await discover(db, runner)).outcome == "ok"
    android = next(i for i in (await _identities(db)) if "androidalice02" in i)
    org.drop_device(android)
    # One pipeline for the three mailboxes (batch 10, one at a time): its statements fail, then
    # alice's retry alone fails too; bob and carol are read one by one.
    fault = ExchangeFault("The server is busy", error_id="ServerBusy", category="ResourceUnavailable")
    org.inject(STATS, fault, times=4)
    result = await discover(db, runner, batch=10, concurrency=1)
    assert (result.outcome, result.failed_mailboxes) == ("partial", 1)
    assert await _vanished(db) == []  # a partial run marks nothing vanished
    completed = await event_bodies(db, "eas_discovery_completed")
    assert completed[-1]["outcome"] == "partial" and completed[-1]["failed_mailboxes"] == 1
    assert (await _row(db)).outcome == "partial"
    # The next complete run marks it.
    assert (await discover(db, runner)).outcome == "ok"
    assert await _vanished(db) == [android]


async def test_mailbox_gone_between_the_passes(db: Database, org: Organisation, runner: CmdletRunner) -> None:
    assert (await discover(db, runner)).outcome == "ok"
    gone = ExchangeFault(
        "The operation couldn't be performed because object 'alice' couldn't be found.",
        error_id="ManagementObjectNotFoundException",
        category="ObjectNotFound",
        exception_type="Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException",
    )
    org.inject(STATS, gone, times=4)
    result = await discover(db, runner, batch=10, concurrency=1)
    assert (result.outcome, result.failed_mailboxes) == ("ok", 0)
    assert [i.split("/")[2] for i in await _vanished(db)] == ["alice", "alice"]


async def test_cmdlet_not_permitted_fails_the_run(db: Database) -> None:
    org = eas_support.small_org()
    org.permissions = {PRINCIPAL: {"Get-CASMailbox", "Get-ActiveSyncMailboxPolicy", "Get-Command"}}
    r = make_runner(org)
    result = await discover(db, r)
    assert result.outcome == "failed" and result.reason == "not_permitted", result
    assert "DeviceStatistics" in (result.error or "")
    assert await event_count(db, "eas_discovery_failed") == 1
    await r.close()


async def test_hostile_values_reach_exchange_verbatim(db: Database) -> None:
    org = eas_support.small_org()
    names = ["x'; Remove-Mailbox -Identity * #", "$(Get-Date)", 'q"uote;`n']
    for name in names:
        org.add_mailbox(name)
        org.add_device(name, f"Dev{len(name)}X")
    r = make_runner(org)
    assert (await discover(db, r)).outcome == "ok"
    sent = [c.params.get("Mailbox") for c in org.calls if c.name == "Get-MobileDeviceStatistics"]
    for name in names:
        assert f"corp.example.com/Users/{name}" in sent
    assert len(org.counts()) > 0 and org.mailbox("dave") is not None  # nothing was removed
    await r.close()


async def _identities(db: Database) -> list[str]:
    async with db.session() as session:
        return list(await session.scalars(select(EasPartnership.exchange_identity)))
