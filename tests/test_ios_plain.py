"""The iOS listener in plain-HTTP mode behind a TLS-terminating proxy: Mdm-Signature works, a
Client-Cert header is honoured only from trusted proxy addresses."""

from __future__ import annotations

import base64
import plistlib

import httpx
import pytest
from conftest import listener_url
from cryptography.hazmat.primitives import serialization
from ios_support import new_phone

from mdm.config import Config
from mdm.db.engine import Database
from mdm.pki import services as pki_services
from mdm.server.runtime import Server


@pytest.fixture
def config(config: Config) -> Config:
    config.listeners.ios.mode = "plain"
    return config


async def test_signed_messages_over_plain_http(server: Server, db: Database) -> None:
    url = listener_url(server, "ios", tls=False)
    assert url.startswith("http://")
    phone = await new_phone(db, pki_services.ca(server.ctx), key_type="rsa")
    async with httpx.AsyncClient(base_url=url) as client:
        await phone.enroll(client)
        assert (await phone.report(client)).status_code == 200
        unsigned = await client.put(
            "/mdm/server", content=plistlib.dumps({"UDID": phone.udid, "Status": "Idle"})
        )
        assert unsigned.status_code == 400


async def test_proxy_forwarded_certificate_over_plain_http(server: Server, db: Database) -> None:
    url = listener_url(server, "ios", tls=False)
    phone = await new_phone(db, pki_services.ca(server.ctx))
    header = {
        "Client-Cert": ":"
        + base64.b64encode(phone.cert.public_bytes(serialization.Encoding.DER)).decode()
        + ":"
    }
    body = plistlib.dumps({"UDID": phone.udid, **phone.authenticate()})
    async with httpx.AsyncClient(
        base_url=url, transport=httpx.AsyncHTTPTransport(local_address="127.0.0.2")
    ) as proxy:
        assert (await proxy.put("/mdm/checkin", content=body, headers=header)).status_code == 200
        idle = plistlib.dumps({"UDID": phone.udid, "Status": "Idle"})
        assert (await proxy.put("/mdm/server", content=idle, headers=header)).status_code == 200
    async with httpx.AsyncClient(base_url=url) as direct:  # 127.0.0.1 is not a trusted proxy
        idle = plistlib.dumps({"UDID": phone.udid, "Status": "Idle"})
        assert (await direct.put("/mdm/server", content=idle, headers=header)).status_code == 400
