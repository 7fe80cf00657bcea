"""Conformance with captured real-device plists (tests/fixtures/apple, MIT: nanomdm, commandment)
and with Apple's check-in schema (tests/fixtures/apple/device-management, MIT).

Every capture is parsed by ``mdm.ios.messages`` and sent, byte for byte, through the real HTTPS
endpoints; the expected values (and nanomdm's ``.txt`` answers) are asserted on the device record.
"""

from __future__ import annotations

import plistlib
import uuid
from pathlib import Path

import httpx
import pytest
import yaml
from ios_support import FIXTURES, Phone, new_phone, sign
from sqlalchemy import select

from mdm.db.engine import Database
from mdm.db.models import Command, CommandJournalEntry, CommandQueueEntry, CommandStatus, Device, utcnow
from mdm.ios.messages import CHECKIN_KEYS, load_plist, parse_checkin, parse_report
from mdm.pki import services as pki_services
from mdm.server.runtime import Server

CAPTURES = sorted(
    p for p in FIXTURES.rglob("*") if p.suffix in (".plist", ".xml") and "device-management" not in p.parts
)
SCHEMA_DIR = FIXTURES / "device-management" / "mdm" / "checkin"


def _answers(path: Path) -> dict[str, str]:
    return dict(line.split("\t", 1) for line in path.read_text().splitlines() if "\t" in line)


def test_every_capture_is_parsed() -> None:
    assert len(CAPTURES) >= 20
    kinds = set()
    for path in CAPTURES:
        plist = load_plist(path.read_bytes())
        if "MessageType" in plist:
            message = parse_checkin(plist)
            kinds.add(message.message_type)
            assert message.identifier == plist["UDID"]
        else:
            report = parse_report(plist)
            kinds.add(report.status)
            assert report.identifier == plist["UDID"] and report.command_uuid
            assert report.command_uuid == plist["CommandUUID"].upper()
    assert {
        "Authenticate",
        "TokenUpdate",
        "CheckOut",
        "Acknowledged",
        "NotNow",
        "CommandFormatError",
    } <= kinds


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "nanomdm/Authenticate.1.plist",
            ("663b07bb783e9ade1dae4fbb92ea12afc0ce5b69", "9.3.5", "13G36", "iPad2,5"),
        ),
        (
            "nanomdm/Authenticate.2.plist",
            ("66ADE930-5FDF-5EC4-8429-15640684C489", "10.12.6", "16G2136", "iMac14,2"),
        ),
        (
            "commandment/Authenticate/IOS-11.3.1.xml",
            ("1c111c111c111c111c111c111c111c111c111c11", "11.3.1", "15E302", "iPad4,1"),
        ),
        (
            "commandment/Authenticate/IOS-9.x.xml",
            ("1111111111111111111111111111111111111111", "9.3.2", "13F69", "iPad4,1"),
        ),
        (
            "commandment/Authenticate/iOS-11.3.1-cell.xml",
            ("1111111111111111111111111111111111111111", "11.3.1", "15E302", "iPhone7,2"),
        ),
        (
            "commandment/Authenticate/10.11.x.xml",
            ("00000000-1111-2222-3333-444455556666", "10.11.6", "15G1004", "iMac15,1"),
        ),
    ],
)
def test_authenticate_values(name: str, expected: tuple[str, str, str, str]) -> None:
    message = parse_checkin(load_plist((FIXTURES / name).read_bytes()))
    values = (
        message.identifier,
        message.get("OSVersion"),
        message.get("BuildVersion"),
        message.get("ProductName"),
    )
    assert values == expected


def test_token_update_values() -> None:
    one = parse_checkin(load_plist((FIXTURES / "nanomdm/TokenUpdate.1.plist").read_bytes()))
    assert one.get("PushMagic") == "CEFDF0BD-E342-4A27-8742-E930EA116B0A"
    assert one.get("Token").hex() == "47e8eec062c2f729ec1703c1b3e18f1971d85f00be76445d34080baa701b5f51"
    assert one.get("UnlockToken").startswith(b"DATA") and one.get("AwaitingConfiguration") is False
    user = parse_checkin(load_plist((FIXTURES / "commandment/TokenUpdate/10.11.x-user.plist").read_bytes()))
    assert user.user_id == "00000000-1111-2222-3333-444455556666" and user.get("UserShortName") == "admin"


def test_report_values() -> None:
    info = parse_report(load_plist((FIXTURES / "commandment/DeviceInformation/iOS-11.3.1.xml").read_bytes()))
    assert info.result["QueryResponses"]["OSVersion"] == "11.3.1"
    assert info.result["QueryResponses"]["ProductName"] == "iPad4,1"
    lock = parse_report(load_plist((FIXTURES / "commandment/DeviceLock/iOS-11.3.1.xml").read_bytes()))
    assert lock.status == "Acknowledged" and lock.result == {"MessageResult": "NoPasscodeSet"}


@pytest.mark.parametrize("message_type", sorted(CHECKIN_KEYS))
def test_checkin_key_types_match_apple_schema(message_type: str) -> None:
    files = {yaml.safe_load(p.read_text())["payload"]["requesttype"]: p for p in SCHEMA_DIR.glob("*.yaml")}
    schema = yaml.safe_load(files[message_type].read_text())
    schema_types = {k["key"]: k["type"] for k in schema["payloadkeys"]}
    ours = CHECKIN_KEYS[message_type]
    for key, (kind, _required) in ours.items():
        if key in schema_types:
            assert schema_types[key] == kind, f"{message_type}.{key}"
    # Keys Apple marks required on every platform (no "introduced: n/a" for iOS) are required here.
    for item in schema["payloadkeys"]:
        ios = (item.get("supportedOS") or {}).get("iOS") or {}
        if (
            item.get("presence") == "required"
            and ios.get("introduced") != "n/a"
            and "userenrollment" not in ios
        ):
            if item["key"] in ("UDID", "EnrollmentID", "EnrollmentUserID", "UserLongName", "DigestResponse"):
                continue  # identifier rules are checked separately; DigestResponse arrives in a second round
            assert ours.get(item["key"], ("", False))[1], f"{message_type}.{item['key']} should be required"


# ---- through the real endpoints ------------------------------------------------------------------


async def _send(client: httpx.AsyncClient, phone: Phone, path: str, body: bytes) -> httpx.Response:
    headers = {"Mdm-Signature": sign(body, phone.cert, phone.key)}
    return await client.put(path, content=body, headers=headers)


async def _put_in_flight(db: Database, device_id: int, guid: str, request_type: str) -> None:
    """A command of this GUID, already delivered and awaiting the captured answer."""
    async with db.transaction() as session:
        now = utcnow()
        command = Command(
            guid=guid.upper(),
            device_id=device_id,
            type=f"Raw{uuid.uuid4().hex[:8]}",
            args={},
            payload={"RequestType": request_type},
            status=CommandStatus.PROCESSING.value,
            created_at=now,
            updated_at=now,
            delivered_at=now,
            attempts=1,
            active=True,
        )
        session.add(command)
        await session.flush()
        session.add(
            CommandQueueEntry(command_id=command.id, device_id=device_id, created_at=now, in_flight=True)
        )
        session.add(CommandJournalEntry(command_id=command.id, status="delivered"))


async def _device(db: Database, udid: str) -> Device:
    async with db.session() as session:
        device = await session.scalar(select(Device).where(Device.identifier == udid))
        assert device is not None
        return device


@pytest.mark.parametrize("n", ["1", "2"])
async def test_nanomdm_captures_through_http(ios, server: Server, db: Database, api, n: str) -> None:
    authenticate = (FIXTURES / f"nanomdm/Authenticate.{n}.plist").read_bytes()
    udid = plistlib.loads(authenticate)["UDID"]
    phone = await new_phone(db, pki_services.ca(server.ctx), udid=udid)
    assert (await _send(ios, phone, "/mdm/checkin", authenticate)).status_code == 200
    token = (FIXTURES / f"nanomdm/TokenUpdate.{n}.plist").read_bytes()
    assert (await _send(ios, phone, "/mdm/checkin", token)).status_code == 200
    device = await _device(db, udid)
    if n == "2":
        info = (FIXTURES / "nanomdm/DeviceInformation.1.plist").read_bytes()
        await _put_in_flight(db, device.id, plistlib.loads(info)["CommandUUID"], "DeviceInformation")
        response = await _send(ios, phone, "/mdm/server", info)
        assert response.status_code == 200 and response.content == b""
        detail = (await api.get(f"/api/v1/devices/{device.id}")).json()
        assert detail["inventory"]["device_info"]["values"]["HostName"] == "fruit.example.com"
        answers = [
            _answers(FIXTURES / "nanomdm/DeviceInformation.1.txt"),
            _answers(FIXTURES / "nanomdm/TokenUpdate.2.txt"),
        ]
    else:
        answers = [_answers(FIXTURES / "nanomdm/TokenUpdate.1.txt")]
    detail = (await api.get(f"/api/v1/devices/{device.id}")).json()
    for expected in answers:
        assert detail["build_version"] == expected["BuildVersion"]
        assert detail["os_version"] == expected["OSVersion"]
        assert detail["model"] == expected["ProductName"]
    assert detail["push_valid"] is True


async def test_commandment_captures_through_http(ios, server: Server, db: Database, api) -> None:
    base = FIXTURES / "commandment"
    udid = "1c111c111c111c111c111c111c111c111c111c11"
    phone = await new_phone(db, pki_services.ca(server.ctx), udid=udid)
    for name in ("Authenticate/IOS-11.3.1.xml", "TokenUpdate/iOS-11.3.1.xml"):
        response = await _send(ios, phone, "/mdm/checkin", (base / name).read_bytes())
        assert response.status_code == 200, (name, response.text)
    device = await _device(db, udid)
    reports = {
        "DeviceInformation/iOS-11.3.1.xml": ("DeviceInformation", "completed"),
        "SecurityInfo/iOS-11.3.1.xml": ("SecurityInfo", "completed"),
        "ProfileList/iOS-11.3.1.xml": ("ProfileList", "completed"),
        "InstalledApplicationList/iOS-11.3.1.xml": ("InstalledApplicationList", "completed"),
        "DeviceLock/iOS-11.3.1.xml": ("DeviceLock", "completed"),
        "Errors/iOS-11.3.1-CommandFormatError.xml": ("DeviceLock", "failed"),
        "NotNow/iOS-11.3.1.xml": ("DeviceInformation", "processing"),
    }
    for name, (request_type, status) in reports.items():
        body = (base / name).read_bytes()
        guid = plistlib.loads(body)["CommandUUID"].upper()
        await _put_in_flight(db, device.id, guid, request_type)
        response = await _send(ios, phone, "/mdm/server", body)
        assert response.status_code == 200, (name, response.text)
        async with db.session() as session:
            command = await session.scalar(select(Command).where(Command.guid == guid))
        assert command is not None and command.status == status, name
    detail = (await api.get(f"/api/v1/devices/{device.id}")).json()
    assert (detail["os_version"], detail["build_version"], detail["model"]) == ("11.3.1", "15E302", "iPad4,1")
    assert set(detail["inventory"]) == {"device_info", "security", "profiles", "apps"}
    checkout = await _send(ios, phone, "/mdm/checkin", (base / "CheckOut/iOS-11.3.1.xml").read_bytes())
    assert checkout.status_code == 200
    assert (await _device(db, udid)).status == "unmanaged"


@pytest.mark.parametrize(
    "name", ["commandment/TokenUpdate/10.11.x.plist", "commandment/TokenUpdate/10.11.x-user.plist"]
)
async def test_macos_token_updates_through_http(ios, server: Server, db: Database, name: str) -> None:
    phone = await new_phone(db, pki_services.ca(server.ctx), udid="00000000-1111-2222-3333-444455556666")
    auth = (FIXTURES / "commandment/Authenticate/10.11.x.xml").read_bytes()
    assert (await _send(ios, phone, "/mdm/checkin", auth)).status_code == 200
    assert (await _send(ios, phone, "/mdm/checkin", (FIXTURES / name).read_bytes())).status_code == 200
    device = await _device(db, phone.udid)
    assert device.os_name == "macOS" and device.name == "micromdm-test"
    if "user" in name:
        assert "00000000-1111-2222-3333-444455556666" in device.attributes["user_channels"]
    else:
        assert device.push_valid and device.push_token == b"apple".hex()
