"""Command life cycle in the service layer."""

from __future__ import annotations

import base64

from mdm.core import command_enqueue, commands
from mdm.core.library import Translators
from mdm.db.models import Command, Device, Protocol
from mdm.ios.commands import IosCommandTranslator


def _translators() -> Translators:
    translators = Translators()
    translators.register(Protocol.IOS, IosCommandTranslator())
    return translators


async def test_finished_commands_keep_no_payload(db) -> None:
    """A delivered payload can hold secrets (here a PKCS#12 password); it is gone once finished."""
    async with db.transaction() as session:
        device = Device(protocol=Protocol.IOS.value, identifier="UDID-P", inventory={}, attributes={})
        session.add(device)
        await session.flush()
        wifi = {
            "identifier": "com.example.wifi",
            "display_name": "Wi-Fi",
            "payloads": [
                {"type": "wifi", "ssid": "corp", "encryption_type": "WPA2", "password": "s3cret-wifi"}
            ],
        }
        translators = _translators()
        command = await command_enqueue.enqueue(
            session, device, "InstallConfProf", {"profile": wifi}, translators=translators
        )
        recalled = await command_enqueue.enqueue(session, device, "Block", {}, translators=translators)
        guid, recalled_guid = command.guid, recalled.guid
    async with db.transaction() as session:
        command = await commands.get_by_guid(session, guid)
        assert "s3cret-wifi" in repr(command.payload) or _in_data(command.payload, b"s3cret-wifi")
        assert "s3cret-wifi" not in repr(command.args)
        await commands.delivered(session, await commands.claim(session, command.id))
        await commands.complete(session, command, success=True, info="Acknowledged")
        await commands.recall(session, recalled_guid)
    async with db.session() as session:
        done = await session.get(Command, command.id)
        assert done is not None and done.status == "completed" and done.payload == {}
        removed = await commands.get_by_guid(session, recalled_guid)
        assert removed.status == "removed" and removed.payload == {}


def _in_data(value: object, needle: bytes) -> bool:
    if isinstance(value, dict):
        if "__data__" in value:
            return needle in base64.b64decode(value["__data__"])
        return any(_in_data(v, needle) for v in value.values())
    if isinstance(value, list):
        return any(_in_data(v, needle) for v in value)
    return False
