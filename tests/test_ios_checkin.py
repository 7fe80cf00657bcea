"""Check-in endpoint over real TLS with Mdm-Signature: Authenticate, TokenUpdate, CheckOut,
bootstrap token, UserAuthenticate, DeclarativeManagement, unknown types."""

from __future__ import annotations

import plistlib

import pytest
from ios_support import Phone, new_phone, queue_command
from sqlalchemy import select

from mdm.db.engine import Database
from mdm.db.models import Command, Device, Event
from mdm.ios.tables import IosDevice
from mdm.pki import services as pki_services
from mdm.server.runtime import Server


@pytest.fixture
async def phone(server: Server, db: Database) -> Phone:
    return await new_phone(db, pki_services.ca(server.ctx))


async def _device(db: Database, udid: str) -> Device:
    async with db.session() as session:
        device = await session.scalar(select(Device).where(Device.identifier == udid))
        assert device is not None
        return device


async def _events(db: Database, type_: str) -> list[Event]:
    async with db.session() as session:
        return list(
            (await session.scalars(select(Event).where(Event.type == type_).order_by(Event.id))).all()
        )


async def test_authenticate_creates_device_and_binds_identity(ios, phone: Phone, db: Database) -> None:
    response = await phone.checkin(ios, phone.authenticate(IMEI="35 123456 789012 3", MEID="35123456789012"))
    assert response.status_code == 200
    device = await _device(db, phone.udid)
    assert (device.protocol, device.status, device.model, device.os_version) == (
        1,
        "ok",
        "iPhone15,2",
        "17.5",
    )
    assert (device.build_version, device.serial_number, device.name) == (
        "21F79",
        "F2LXJ0Q1HG7F",
        "Alice's iPhone",
    )
    assert device.imei == "35 123456 789012 3" and device.attributes["meid"] == "35123456789012"
    assert device.os_name == "iOS" and device.attributes["topic"].startswith("com.apple.mgmt")
    assert device.cert_serial == phone.serial
    async with db.session() as session:
        ios_row = await session.get(IosDevice, device.id)
    assert ios_row is not None and len(ios_row.cert_fingerprint) == 32
    assert [e.device_id for e in await _events(db, "device_enrolled")] == [device.id]
    # Again: the same enrollment re-authenticates.
    assert (await phone.checkin(ios, phone.authenticate(OSVersion="17.6"))).status_code == 200
    assert (await _device(db, phone.udid)).os_version == "17.6"
    assert len(await _events(db, "device_reauthenticated")) == 1


async def test_token_update_stores_push_token_and_unlock_token(ios, phone: Phone, db: Database) -> None:
    await phone.checkin(ios, phone.authenticate())
    response = await phone.checkin(ios, phone.token_update(token=bytes(range(32)), UnlockToken=b"\x00secret"))
    assert response.status_code == 200
    device = await _device(db, phone.udid)
    assert device.push_token == bytes(range(32)).hex()
    assert device.push_magic == "5A2A8D45-1D1A-4D62-A6A4-4F2E1E6B0F11"
    assert device.push_valid is True and device.push_changed_at is not None
    assert "unlock" not in str(device.attributes).lower()
    async with db.session() as session:
        ios_row = await session.get(IosDevice, device.id)
    assert ios_row is not None and ios_row.unlock_token == b"\x00secret"
    events = await _events(db, "push_token_updated")
    assert len(events) == 1 and "secret" not in str(events[0].body)
    # User channel TokenUpdate is recorded apart from the device channel.
    user = phone.token_update(token=b"\x02" * 32, UserID="A1B2", UserShortName="alice", UserLongName="Alice")
    assert (await phone.checkin(ios, user)).status_code == 200
    device = await _device(db, phone.udid)
    assert device.push_token == bytes(range(32)).hex()
    assert device.attributes["user_channels"]["A1B2"]["short_name"] == "alice"


async def test_token_update_before_authenticate_is_rejected_with_400_and_event(
    ios, phone: Phone, db: Database
) -> None:
    response = await phone.checkin(ios, phone.token_update())
    assert response.status_code == 400
    assert response.json()["error"]["details"]["reason"] == "unbound"
    events = await _events(db, "security_identity_rejected")
    assert len(events) == 1 and events[0].severity == "warning" and events[0].body["reason"] == "unbound"


async def test_check_out_unmanages_and_fails_active_commands(ios, phone: Phone, db: Database) -> None:
    await phone.enroll(ios)
    device = await _device(db, phone.udid)
    guid = await queue_command(db, device.id, {"RequestType": "DeviceLock"}, type_="Block")
    response = await phone.checkin(ios, {"MessageType": "CheckOut", "Topic": "t"})
    assert response.status_code == 200
    device = await _device(db, phone.udid)
    assert device.status == "unmanaged" and device.push_valid is False
    async with db.session() as session:
        command = await session.scalar(select(Command).where(Command.guid == guid))
        assert await session.get(IosDevice, device.id) is None  # binding and secrets gone
    assert command is not None and command.status == "failed" and "checked out" in (command.result_info or "")
    assert len(await _events(db, "device_unenrolled")) == 1
    # The old identity is no longer bound: further messages are refused.
    assert (await phone.report(ios)).status_code == 400
    # A new Authenticate re-enrolls.
    assert (await phone.checkin(ios, phone.authenticate())).status_code == 200
    assert (await _device(db, phone.udid)).status == "ok"


async def test_bootstrap_token_round_trip(ios, phone: Phone, db: Database) -> None:
    await phone.enroll(ios)
    empty = await phone.checkin(ios, {"MessageType": "GetBootstrapToken"})
    assert empty.status_code == 200 and empty.content == b""
    assert (
        await phone.checkin(ios, {"MessageType": "SetBootstrapToken", "BootstrapToken": b"boot\x00tok"})
    ).status_code == 200
    got = await phone.checkin(ios, {"MessageType": "GetBootstrapToken"})
    assert got.status_code == 200
    assert plistlib.loads(got.content) == {"BootstrapToken": b"boot\x00tok"}
    assert len(await _events(db, "bootstrap_token_set")) == 1


async def test_user_authenticate_is_gone_unless_enabled(ios, phone: Phone) -> None:
    await phone.enroll(ios)
    response = await phone.checkin(ios, {"MessageType": "UserAuthenticate", "UserID": "U1"})
    assert response.status_code == 410


async def test_declarative_management_is_acknowledged(ios, phone: Phone) -> None:
    await phone.enroll(ios)
    tokens = await phone.checkin(ios, {"MessageType": "DeclarativeManagement", "Endpoint": "tokens"})
    assert tokens.status_code == 200 and "DeclarationsToken" in tokens.json()["SyncTokens"]
    items = await phone.checkin(
        ios, {"MessageType": "DeclarativeManagement", "Endpoint": "declaration-items"}
    )
    assert items.status_code == 200 and items.json()["Declarations"]["Configurations"] == []
    status = await phone.checkin(
        ios, {"MessageType": "DeclarativeManagement", "Endpoint": "status", "Data": b"{}"}
    )
    assert status.status_code == 200


@pytest.mark.parametrize(
    "message",
    [
        {"MessageType": "Reboot"},
        {"MessageType": 5},
        {"Topic": "no type"},
        {"MessageType": "TokenUpdate", "Topic": "t", "Token": "not data", "PushMagic": "m"},
        {"MessageType": "Authenticate"},  # no Topic
    ],
)
async def test_unknown_or_malformed_messages_are_400(ios, phone: Phone, message: dict) -> None:
    await phone.enroll(ios)
    response = await phone.checkin(ios, message)
    assert response.status_code == 400


async def test_wrong_certificate_for_udid_is_rejected(
    ios, phone: Phone, server: Server, db: Database
) -> None:
    await phone.enroll(ios)
    other = await new_phone(db, pki_services.ca(server.ctx))
    await other.enroll(ios)
    # other's identity claiming phone's UDID
    impostor = Phone(phone.udid, other.cert, other.key, other.serial)
    response = await impostor.report(ios)
    assert response.status_code == 400
    assert response.json()["error"]["details"]["reason"] == "mismatch"
    # and an Authenticate with a certificate bound elsewhere is refused too
    response = await impostor.checkin(ios, impostor.authenticate())
    assert response.status_code == 400
    assert response.json()["error"]["details"]["reason"] in {"identity_in_use", "issued_to_other_device"}
    reasons = [e.body["reason"] for e in await _events(db, "security_identity_rejected")]
    assert "mismatch" in reasons and len(reasons) == 2
