"""EAS discovery into the common device list: mailboxes, policies, devices (one device per EAS
DeviceId, one partnership per mailbox it syncs), owners, events; vanished and reappearing
partnerships; wipe acknowledged -> status wiped. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import eas_support
from eas_support import PRINCIPAL, discover, event_bodies, event_count
from sqlalchemy import select

from mdm.db.engine import Database
from mdm.db.enums import DeviceStatus, Protocol
from mdm.db.models import Device, User
from mdm.devfakes.exchange_org import Organisation
from mdm.eas.seams import CmdletRunner
from mdm.eas.tables import EasDiscovery, EasMailbox, EasPartnership, EasPolicy

# Fixtures of eas_support, used by name.
org = eas_support.org
runner = eas_support.runner


async def _devices(db: Database) -> dict[str, Device]:
    async with db.session() as session:
        rows = await session.scalars(select(Device).where(Device.protocol == Protocol.EAS.value))
        return {d.identifier: d for d in rows}


async def _parts(db: Database) -> dict[str, EasPartnership]:
    async with db.session() as session:
        return {p.exchange_identity: p for p in await session.scalars(select(EasPartnership))}


async def _users(db: Database) -> dict[int, str]:
    async with db.session() as session:
        return {u.id: u.name for u in await session.scalars(select(User))}


async def test_first_run_fills_the_device_list(db: Database, org: Organisation, runner: CmdletRunner) -> None:
    result = await discover(db, runner)
    assert (result.outcome, result.mailboxes, result.policies, result.devices) == ("ok", 4, 2, 4)
    devices = await _devices(db)
    assert set(devices) == {"ApplALICE0001", "androidalice02", "ApplSHARED003"}
    users = await _users(db)
    iphone = devices["ApplALICE0001"]
    assert (iphone.model, iphone.os_name, iphone.os_version, iphone.status) == (
        "iPhone15,2",
        "iOS",
        "17.1 21B74",
        "ok",
    )
    assert users[iphone.user_id or 0] == "alice@corp.example.com"
    assert iphone.last_seen_at is not None and iphone.last_seen_at.year == 2026
    shared = devices["ApplSHARED003"]
    assert users[shared.user_id or 0] in ("bob@corp.example.com", "carol@corp.example.com")
    parts = await _parts(db)
    assert len(parts) == 4 and sum(p.device_id == shared.id for p in parts.values()) == 2
    assert all(p.wipe_state == "none" and p.vanished_at is None for p in parts.values())
    async with db.session() as session:
        mbx = {m.name: m for m in await session.scalars(select(EasMailbox))}
        pol = {p.name: p for p in await session.scalars(select(EasPolicy))}
        row = await session.get(EasDiscovery, 1)
    assert mbx["dave"].activesync_enabled is False and mbx["dave"].has_partnership is False
    assert pol["Strict"].settings["min_password_length"] == 6 and pol["Strict"].settings["password_required"]
    assert row is not None and row.outcome == "ok" and row.devices == 4 and row.finished_at is not None
    discovered = await event_bodies(db, "eas_device_discovered")
    assert len(discovered) == 4 and all(e["_device_id"] for e in discovered)
    assert await event_count(db, "eas_policy_discovered") == 2
    assert await event_count(db, "eas_discovery_completed") == 1


async def test_second_run_reports_only_changes(db: Database, org: Organisation, runner: CmdletRunner) -> None:
    await discover(db, runner)
    assert (await discover(db, runner)).outcome == "ok"
    assert await event_count(db, "eas_device_discovered") == 4
    assert await event_count(db, "eas_device_changed") == 0
    assert await event_count(db, "eas_mailbox_updated") == 0
    # Changes behind the service's back: ActiveSync off for bob, a policy for alice, a new phone.
    org.execute(
        "Set-CASMailbox",
        {"Identity": "bob", "ActiveSyncEnabled": False},
        principal=PRINCIPAL,
        session=_session(),
    )
    org.add_device("dave", "ApplDAVE00004")
    await discover(db, runner)
    changed = await event_bodies(db, "eas_mailbox_updated")
    assert [c["changes"] for c in changed] == [{"activesync_enabled": [True, False]}]
    assert "ApplDAVE00004" in await _devices(db)
    # A policy edited in Exchange.
    org.execute(
        "Set-MobileDeviceMailboxPolicy",
        {"Identity": "Strict", "MinPasswordLength": 8},
        principal=PRINCIPAL,
        session=_session(),
    )
    await discover(db, runner)
    updated = await event_bodies(db, "eas_policy_updated")
    assert [(u["policy"], u["changes"]) for u in updated] == [("Strict", {"min_password_length": [6, 8]})]
    assert await event_count(db, "eas_device_discovered") == 5


def _session() -> Any:
    from mdm.devfakes.exchange_org import SessionState

    return SessionState()


async def test_vanished_and_reappeared(db: Database, org: Organisation, runner: CmdletRunner) -> None:
    await discover(db, runner)
    parts = await _parts(db)
    android = next(i for i in parts if "androidalice02" in i)
    assert org.drop_device(android)
    result = await discover(db, runner)
    # Reported: counted in the run (eas_discovery, its API/CLI) and its completion event.
    assert result.vanished == 1
    assert (await event_bodies(db, "eas_discovery_completed"))[-1]["vanished"] == 1
    async with db.session() as session:
        run = await session.get(EasDiscovery, 1)
        assert run is not None and run.vanished == 1
    after = await _parts(db)
    assert after[android].vanished_at is not None
    assert sum(p.vanished_at is not None for p in after.values()) == 1
    vanished = await event_bodies(db, "eas_device_vanished")
    assert [v["identifier"] for v in vanished] == ["androidalice02"]
    # The device stays in the common list.
    assert "androidalice02" in await _devices(db)
    org.add_device("alice", "androidalice02", device_type="Android", model="Pixel 8", os="Android 14")
    await discover(db, runner)
    assert (await _parts(db))[android].vanished_at is None
    assert [e["identifier"] for e in await event_bodies(db, "eas_device_reappeared")] == ["androidalice02"]


async def test_vanished_mailbox_and_policy(db: Database, org: Organisation, runner: CmdletRunner) -> None:
    await discover(db, runner)
    assert org.drop_mailbox("carol")
    org.execute(
        "Remove-ActiveSyncMailboxPolicy",
        {"Identity": "Strict", "Confirm": False},
        principal=PRINCIPAL,
        session=_session(),
    )
    await discover(db, runner)
    assert [e["mailbox"] for e in await event_bodies(db, "eas_mailbox_vanished")] == [
        "corp.example.com/Users/carol"
    ]
    assert [e["policy"] for e in await event_bodies(db, "eas_policy_vanished")] == ["Strict"]
    # carol's partnership with the shared iPad vanished; bob's stays.
    parts = await _parts(db)
    gone = [i for i, p in parts.items() if p.vanished_at is not None]
    assert len(gone) == 1 and "/carol/" in gone[0]


async def test_wipe_acknowledged_marks_the_device_wiped(
    db: Database, org: Organisation, runner: CmdletRunner
) -> None:
    await discover(db, runner)
    iphone = next(i for i in await _parts(db) if "ApplALICE0001" in i)
    org.execute(
        "Clear-ActiveSyncDevice",
        {"Identity": iphone, "Confirm": False},
        principal=PRINCIPAL,
        session=_session(),
    )
    await discover(db, runner)
    part = (await _parts(db))[iphone]
    assert part.wipe_state == "pending" and part.wipe_requested_at is not None
    assert (await _devices(db))["ApplALICE0001"].status == "ok"
    org.device_syncs("ApplALICE0001")
    await discover(db, runner)
    part = (await _parts(db))[iphone]
    assert part.wipe_state == "acknowledged" and part.wipe_acknowledged_at is not None
    assert (await _devices(db))["ApplALICE0001"].status == DeviceStatus.WIPED.value
    changes = [
        e["changes"]["wipe_state"]
        for e in await event_bodies(db, "eas_device_changed")
        if "wipe_state" in e["changes"]
    ]
    assert changes == [["none", "pending"], ["pending", "acknowledged"]]
    assert await event_count(db, "device_status_changed") == 1
    # Exchange keeps listing it (and would wipe it again) until it is removed.
    await discover(db, runner)
    assert (await _parts(db))[iphone].wipe_state == "acknowledged"
    assert await event_count(db, "device_status_changed") == 1


async def test_statistics_and_a_newly_applied_policy(
    db: Database, org: Organisation, runner: CmdletRunner
) -> None:
    """A partnership carries its statistics (last sync, policy applied and its status, access
    state); the phone applying another policy is a change (an event), a sync alone is not."""
    await discover(db, runner)
    iphone = next(i for i in await _parts(db) if "ApplALICE0001" in i)
    part = (await _parts(db))[iphone]
    assert (part.policy_applied, part.policy_status) == ("Default", "AppliedInFull")
    assert part.last_sync is not None and part.last_sync.year == 2026 and part.first_sync is not None
    first_sync = part.last_sync
    org.device_syncs("ApplALICE0001")  # a sync moves last sync, nothing else
    await discover(db, runner)
    assert (await _parts(db))[iphone].last_sync != first_sync
    assert await event_count(db, "eas_device_changed") == 0
    org.execute("Set-CASMailbox", {"Identity": "alice", "ActiveSyncMailboxPolicy": "Strict"},
                principal=PRINCIPAL, session=_session())
    org.device_syncs("ApplALICE0001")  # the phone picks the new policy up
    await discover(db, runner)
    assert (await _parts(db))[iphone].policy_applied == "Strict"
    changed = await event_bodies(db, "eas_device_changed")
    assert [(e["identifier"], e["changes"]) for e in changed] == [
        ("ApplALICE0001", {"policy_applied": ["Default", "Strict"]})]
