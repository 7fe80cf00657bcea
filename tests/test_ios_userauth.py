"""UserAuthenticate when ``ios.user_authenticate_enabled`` is on: no digest is demanded."""

from __future__ import annotations

import plistlib

import httpx
import pytest
from conftest import client_ssl_context, listener_url
from ios_support import new_phone
from sqlalchemy import select

from mdm.db.engine import Database
from mdm.db.models import Device
from mdm.pki import services as pki_services
from mdm.server.runtime import Server


@pytest.fixture
def extra_config() -> str:
    return "[ios]\nuser_authenticate_enabled = true\n"


async def test_user_authenticate_enabled(server: Server, config, db: Database) -> None:
    phone = await new_phone(db, pki_services.ca(server.ctx))
    async with httpx.AsyncClient(
        base_url=listener_url(server, "ios"), verify=client_ssl_context(config)
    ) as ios:
        await phone.enroll(ios)
        first = await phone.checkin(
            ios, {"MessageType": "UserAuthenticate", "UserID": "U1", "UserShortName": "bob"}
        )
        assert first.status_code == 200 and plistlib.loads(first.content) == {"DigestChallenge": ""}
        second = await phone.checkin(
            ios, {"MessageType": "UserAuthenticate", "UserID": "U1", "DigestResponse": "x"}
        )
        assert second.status_code == 200 and second.content == b""
    async with db.session() as session:
        device = await session.scalar(select(Device).where(Device.identifier == phone.udid))
    assert device is not None and device.attributes["user_channels"]["U1"]["short_name"] == "bob"
