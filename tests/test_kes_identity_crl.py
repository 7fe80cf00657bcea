"""``[pki] kes_tls_crl_check = true``: a revoked certificate is refused in the KES handshake itself
(no HTTP answer), and that refusal is logged and recorded with the peer's address."""

from __future__ import annotations

import asyncio
import ssl

import httpx
import pytest
from sqlalchemy import select

from mdm.config import Config
from mdm.db.engine import Database
from mdm.db.models import Event
from mdm.server.runtime import Server
from tests.kes_support import enroll_device, kes_client, request_id


@pytest.fixture
def extra_config() -> str:
    return "[pki]\nkes_tls_crl_check = true\n"


async def test_a_revoked_certificate_fails_the_handshake_and_is_reported(
    server: Server, config: Config, db: Database, api: httpx.AsyncClient
) -> None:
    device = await enroll_device(server, config, db)
    revoked = await api.post(
        f"/api/v1/certificates/{device.serial_hex}/revoke", json={"reason": "key_compromise"}
    )
    assert revoked.status_code == 200, revoked.text
    with pytest.raises((ssl.SSLError, httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
        async with kes_client(server, config, device) as client:
            await client.post("/kes/v1/unenroll", json={"v": 1, "request_id": request_id()})
    events: list[Event] = []
    for _ in range(100):
        async with db.session() as session:
            events = list(
                (
                    await session.scalars(
                        select(Event).where(Event.type == "security_kes_handshake_rejected")
                    )
                ).all()
            )
        if events:
            break
        await asyncio.sleep(0.05)
    [event] = events
    assert (event.body["peer"], event.body["reason"]) == ("127.0.0.1", "revoked")
