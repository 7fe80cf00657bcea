"""iOS commands through the service: enqueue stores the validated Apple payload (SQLite and
PostgreSQL JSON columns), multi-step commands run step by step with one status and journal, and
the admin API answers bad arguments with a precise 400."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest
from bulk_support import send_bulk
from sqlalchemy import select

from mdm.core import command_enqueue, commands
from mdm.core.errors import InvalidArgument
from mdm.core.library import Translators
from mdm.db.engine import Database
from mdm.db.models import Command, CommandQueueEntry, CommandStatus, Device, Event, Protocol
from mdm.ios import schema
from mdm.ios.command_codec import to_plist_dict
from mdm.ios.command_masking import MASK, mask_secrets
from mdm.ios.command_steps import answered_step, outgoing, split_command_uuid, steps_of
from mdm.ios.plugin import TRANSLATOR
from mdm.ios.signing import ProfileSigner
from mdm.server.runtime import Server

MDM_PROFILE = "com.example.mdm.enrollment.7"

# The translators a server registers at start-up (the tests below run without one).
TRANSLATORS = Translators()
TRANSLATORS.register(Protocol.IOS, TRANSLATOR)


async def new_device(db: Database, udid: str = "UDID-1") -> int:
    async with db.transaction() as session:
        device = Device(
            protocol=Protocol.IOS.value,
            identifier=udid,
            os_name="iOS",
            model="iPhone15,3",
            attributes={"mdm_profile_identifier": MDM_PROFILE},
            inventory={
                "profiles": {
                    "items": [{"PayloadIdentifier": "com.example.wifi", "IsManaged": True, "payloads": []}]
                },
                "managed_apps": {"items": [{"Identifier": "com.example.app", "Status": "Managed"}]},
            },
        )
        session.add(device)
        await session.flush()
        return device.id


async def enqueue(db: Database, device_id: int, type_: str, args: dict[str, Any]) -> Command:
    async with db.transaction() as session:
        device = await session.get(Device, device_id)
        assert device is not None
        return await command_enqueue.enqueue(
            session, device, type_, args, created_by="test", translators=TRANSLATORS
        )


async def reload(db: Database, guid: str) -> Command:
    async with db.session() as session:
        return await commands.get_by_guid(session, guid)


@pytest.mark.parametrize(
    ("type_", "args"),
    [
        ("Block", {"message": "Call IT"}),
        ("Wipe", {"preserve_data_plan": True}),
        (
            "InstallConfProf",
            {
                "profile": {
                    "identifier": "com.example.p",
                    "display_name": "P",
                    "payloads": [{"type": "passcode", "min_length": 6}],
                }
            },
        ),
        ("EditRoamingSettings", {"data_roaming": False}),
        ("Remove", {}),
        (
            "Raw",
            {
                "RequestType": "Settings",
                "Settings": [{"Item": "Wallpaper", "Image": {"__data__": "iVBORw=="}, "Where": 1}],
            },
        ),
    ],
)
async def test_enqueue_stores_a_schema_valid_payload(db: Database, type_: str, args: dict[str, Any]) -> None:
    device_id = await new_device(db)
    created = await enqueue(db, device_id, type_, args)
    stored = await reload(db, created.guid)
    assert stored.payload == created.payload and stored.payload
    for step in steps_of(stored.payload):
        command = to_plist_dict(step)
        assert schema.validate_command(command, os_name="iOS") == []
    assert stored.args == mask_secrets(args)


async def test_invalid_arguments_change_nothing(db: Database) -> None:
    device_id = await new_device(db)
    with pytest.raises(
        InvalidArgument, match="Raw: DeviceLock does not match Apple's schema: Bogus: unknown key"
    ):
        await enqueue(db, device_id, "Raw", {"RequestType": "DeviceLock", "Bogus": 1})
    async with db.session() as session:
        assert (await session.scalars(select(Command))).all() == []
        assert (await session.scalars(select(Event))).all() == []


async def _deliver_and_answer(db: Database, device_id: int, *, ok: bool = True) -> tuple[str, bool]:
    """What the command channel does for one poll, with the helpers it uses: the due step goes
    out under its CommandUUID; the device's answer to it is recorded."""
    async with db.transaction() as session:
        command = await commands.next_command(session, device_id)
        assert command is not None
        uuid, body = outgoing(command, unlock_token=b"T")
        await commands.delivered(session, await commands.claim(session, command.id))
    guid, _ = split_command_uuid(uuid)
    async with db.transaction() as session:
        command = await commands.get_by_guid(session, guid, for_update=True)
        step = answered_step(command, uuid)
        assert step is not None and step[0] == body["RequestType"]
        request_type, last = step
        answer = {"RequestType": request_type}
        info = None if ok else f"{request_type} refused"
        if last:
            await commands.complete(session, command, success=ok, info=info, data=answer)
        else:
            assert await commands.step_done(session, command, success=ok, info=info, data=answer)
        # The same report again is stale now.
        assert answered_step(command, uuid) is None
        return request_type, last


async def test_multi_step_command_runs_step_by_step(db: Database) -> None:
    device_id = await new_device(db)
    created = await enqueue(db, device_id, "RefreshDeviceInfo", {})
    expected = [s["RequestType"] for s in steps_of(created.payload)]
    assert len(expected) == 6
    seen, finished = [], False
    while not finished:
        request_type, finished = await _deliver_and_answer(db, device_id)
        seen.append(request_type)
        if not finished:
            assert (await reload(db, created.guid)).status == CommandStatus.PROCESSING
    assert seen == expected
    assert split_command_uuid(f"{created.guid}.5") == (created.guid, 5)
    done = await reload(db, created.guid)
    assert done.status == CommandStatus.COMPLETED
    assert done.result_info == "6 of 6 steps succeeded"
    assert [s["data"]["RequestType"] for s in done.result_data["steps"]] == expected
    async with db.session() as session:
        journal = [j.status for j in await commands.journal_of(session, done.id)]
        assert journal == ["processing", "delivered"] + ["step"] * 5 + ["completed"]
        assert await session.get(CommandQueueEntry, done.id) is None
        events = (await session.scalars(select(Event.type).order_by(Event.id))).all()
        assert events == ["command_created", "command_delivered", "command_completed"]


async def test_a_failed_step_fails_the_command_but_the_rest_still_runs(db: Database) -> None:
    device_id = await new_device(db)
    created = await enqueue(db, device_id, "SoftWipe", {})
    assert [s["RequestType"] for s in steps_of(created.payload)] == ["RemoveApplication", "RemoveProfile"]
    assert (await _deliver_and_answer(db, device_id, ok=False)) == ("RemoveApplication", False)
    assert (await _deliver_and_answer(db, device_id)) == ("RemoveProfile", True)
    done = await reload(db, created.guid)
    assert done.status == CommandStatus.FAILED
    assert done.result_info == "1 of 2 steps succeeded; step 1: RemoveApplication refused"


async def test_not_now_re_offers_the_same_step(db: Database) -> None:
    from datetime import timedelta

    device_id = await new_device(db)
    created = await enqueue(db, device_id, "Alarm", {"enable_lost_mode": {"message": "Lost"}})
    await _deliver_and_answer(db, device_id)  # EnableLostMode
    async with db.transaction() as session:
        command = await commands.next_command(session, device_id)
        assert command is not None and commands.step_index(command) == 1
        await commands.delivered(session, await commands.claim(session, command.id))
        await commands.defer(session, command, timedelta(0), "NotNow")
    async with db.session() as session:
        again = await commands.next_command(session, device_id)
        assert again is not None and again.guid == created.guid and commands.step_index(again) == 1
    assert (await _deliver_and_answer(db, device_id)) == ("PlayLostModeSound", True)


@pytest.mark.parametrize("in_flight", [False, True])
async def test_recall_between_steps_drops_the_rest(db: Database, in_flight: bool) -> None:
    device_id = await new_device(db)
    created = await enqueue(
        db, device_id, "RefreshDeviceInfo", {"parts": ["security", "profiles", "certificates"]}
    )
    await _deliver_and_answer(db, device_id)
    if in_flight:
        async with db.transaction() as session:
            command = await commands.next_command(session, device_id)
            assert command is not None
            await commands.delivered(session, await commands.claim(session, command.id))
    async with db.transaction() as session:
        recalled = await commands.recall(session, created.guid, by="admin")
        assert recalled.status == (CommandStatus.REMOVING if in_flight else CommandStatus.REMOVE_FAILED)
    if in_flight:  # the device answers the step it holds; nothing more is sent
        async with db.transaction() as session:
            command = await commands.get_by_guid(session, created.guid, for_update=True)
            assert not await commands.step_done(session, command, success=True, data={})
    done = await reload(db, created.guid)
    assert done.status == CommandStatus.REMOVE_FAILED
    async with db.session() as session:
        assert await commands.next_command(session, device_id) is None
        journal = await commands.journal_of(session, done.id)
        assert "the rest were dropped" in (journal[-1].detail or "")


async def test_secrets_stay_out_of_the_command_log(api: httpx.AsyncClient, db: Database) -> None:
    device_id = await new_device(db)
    p12 = base64.b64encode(b"\x30" + b"k" * 100).decode()
    args = {
        "profile": {
            "identifier": "com.example.s",
            "display_name": "S",
            "payloads": [
                {"type": "wifi", "ssid": "corp", "encryption_type": "WPA2", "password": "hunter2-wifi"},
                {
                    "type": "mail",
                    "incoming": {"host": "imap.example.com", "password": "hunter2-imap"},
                    "outgoing": {"host": "smtp.example.com"},
                },
                {"type": "scep", "url": "https://ca.example.com/scep", "challenge": "hunter2-scep"},
            ],
        }
    }
    response = await api.post(
        f"/api/v1/devices/{device_id}/commands", json={"type": "InstallConfProf", "args": args}
    )
    assert response.status_code == 201, response.text
    shown = response.json()
    assert "hunter2" not in response.text
    payloads = shown["args"]["profile"]["payloads"]
    assert payloads[0]["password"] == MASK and payloads[1]["incoming"]["password"] == MASK
    assert payloads[2]["challenge"] == MASK and payloads[0]["ssid"] == "corp"
    logged = await api.get(f"/api/v1/devices/{device_id}/commands")
    assert "hunter2" not in logged.text
    # The device still gets them.
    stored = await reload(db, shown["guid"])
    profile = to_plist_dict(stored.payload)["Payload"]
    assert b"hunter2-wifi" in profile and b"hunter2-imap" in profile and b"hunter2-scep" in profile
    assert mask_secrets({"pkcs12": p12})["pkcs12"]["bytes"] == len(p12)


# ---- through the admin API and a running server ------------------------------------------------
@pytest.fixture
def extra_config() -> str:
    return "[ios_commands]\nsign_profiles = true\n"


async def test_api_answers_bad_arguments_with_a_precise_422(api: httpx.AsyncClient, db: Database) -> None:
    """Well-formed JSON the command type refuses: 422 and the precise reason, as in bulk."""
    device_id = await new_device(db)
    cases = [
        (
            {"type": "Raw", "args": {"RequestType": "EraseDevise"}},
            "Raw: unknown RequestType 'EraseDevise' (did you mean 'EraseDevice'?)",
        ),
        ({"type": "Block", "args": {"colour": "red"}}, "Block: unknown argument 'colour'"),
        ({"type": "Wipe", "args": {"pin": "12"}}, "Wipe: pin: String should match pattern '^[0-9]{6}$'"),
    ]
    for body, message in cases:
        response = await api.post(f"/api/v1/devices/{device_id}/commands", json=body)
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert (error["code"], error["message"]) == ("invalid_argument", message)
    response = await api.post(f"/api/v1/devices/{device_id}/commands", json={"type": "Locate", "args": {}})
    assert response.status_code == 201, response.text


async def test_bulk_profile_signed_once_with_the_configured_certificate(
    api: httpx.AsyncClient, db: Database, server: Server
) -> None:
    ids = [await new_device(db, f"UDID-{i}") for i in range(5)]
    profile = {
        "identifier": "com.example.bulk",
        "display_name": "Bulk",
        "payloads": [{"type": "restrictions", "allow_camera": False}],
    }
    op = await send_bulk(api, ids, "InstallConfProf", {"profile": profile})
    assert (op["queued"], op["skipped"]) == (5, 0)
    async with db.session() as session:
        payloads = (
            await session.scalars(select(Command.payload).where(Command.type == "InstallConfProf"))
        ).all()
    assert len(payloads) == 5 and all(p == payloads[0] for p in payloads)
    data = base64.b64decode(payloads[0]["Payload"]["__data__"])
    assert data[:1] == b"\x30"  # CMS, signed because [ios_commands] sign_profiles = true
    from asn1crypto import cms

    signed = cms.ContentInfo.load(data)["content"]
    serial = signed["signer_infos"][0]["sid"].chosen["serial_number"].native
    assert serial == ProfileSigner.from_slot(server.ctx.config.certs_dir).certificate.serial_number
    assert TRANSLATOR.sign_by_default is True


async def test_server_stop_unconfigures_signing(server: Server) -> None:
    from mdm.ios.plugin import PLUGIN, unconfigure_signing

    assert TRANSLATOR.signer is not None
    assert unconfigure_signing in PLUGIN.shutdown
    await unconfigure_signing(server.ctx)
    assert TRANSLATOR.signer is None and TRANSLATOR.sign_by_default is False


async def test_single_step_commands_use_the_guid_as_command_uuid(db: Database) -> None:
    device_id = await new_device(db)
    created = await enqueue(db, device_id, "Unblock", {})
    async with db.transaction() as session:
        command = await commands.get_by_guid(session, created.guid)
        uuid, body = outgoing(command, unlock_token=b"secret-token")
        assert uuid == created.guid
        assert body == {"RequestType": "ClearPasscode", "UnlockToken": b"secret-token"}
        assert answered_step(command, created.guid) == ("ClearPasscode", True)
        assert answered_step(command, f"{created.guid}.1") is None
    assert "secret-token" not in str((await reload(db, created.guid)).payload)
