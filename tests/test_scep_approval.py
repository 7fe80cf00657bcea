"""scep.manual_approval: PENDING, polling, and an administrator's approve/reject over the admin API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from conftest import client_ssl_context
from scep_tools.forge import Forge, issued, post, reply_of
from scep_tools.support import (
    certificate_count,
    challenge_used,
    make_challenge,
    make_user,
    new_key,
    record_of,
    scep_url,
    transaction_count,
)
from sqlalchemy import select

from mdm.config import Config
from mdm.core import tokens
from mdm.db.models import Event
from mdm.scep import client
from mdm.scep.protocol import FailInfo, MessageType, PkiStatus
from mdm.server.runtime import Server


@pytest.fixture
def extra_config() -> str:
    return "[scep]\nmanual_approval = true\n"


@pytest.fixture
async def http(server: Server, config: Config) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(verify=client_ssl_context(config), timeout=30) as c:
        yield c


@pytest.fixture
async def ca(http: httpx.AsyncClient, server: Server) -> client.ServerInfo:
    return client.select_certificates(await client.get_ca_certificates(http, scep_url(server)), frozenset())


async def _pending(api: httpx.AsyncClient) -> list[dict[str, object]]:
    r = await api.get("/api/v1/scep/requests", params={"status": "pending"})
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


async def test_pending_until_approved(server: Server, config: Config, db, api: httpx.AsyncClient) -> None:
    user_id = await make_user(db)
    challenge = await make_challenge(db, user_id=user_id)
    key = new_key()
    task = asyncio.create_task(
        client.enroll(
            scep_url(server),
            challenge,
            "waiting-device",
            key,
            ssl_context=client_ssl_context(config),
            poll_interval=0.2,
            max_wait=30,
        )
    )
    for _ in range(100):
        pending = await _pending(api)
        if pending:
            break
        await asyncio.sleep(0.1)
    assert len(pending) == 1 and pending[0]["subject"] == "CN=waiting-device"
    assert await challenge_used(db)  # consumed when the request was accepted for approval
    await asyncio.sleep(0.5)  # a few polls answered PENDING
    assert not task.done() and await certificate_count(db) == 0

    r = await api.post(f"/api/v1/scep/requests/{pending[0]['id']}/approve")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "issued" and body["decided_by"] == "test-admin" and body["cert_serial"]
    cert = await asyncio.wait_for(task, 30)
    assert format(cert.serial_number, "x") == body["cert_serial"]
    record = await record_of(db, cert)
    assert record is not None and record.user_id == user_id
    async with db.session() as session:
        types = [e.type for e in (await session.scalars(select(Event).order_by(Event.id))).all()]
    assert (
        types.index("scep_request_pending")
        < types.index("cert_issued")
        < types.index("scep_request_approved")
    )
    # Decided once: a second approval conflicts.
    r = await api.post(f"/api/v1/scep/requests/{pending[0]['id']}/approve")
    assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"


async def test_resent_request_while_pending(http, server, ca, db) -> None:
    forge = Forge(ca, new_key())
    challenge = await make_challenge(db)
    for _ in range(2):  # the client re-sends its PKCSReq (same key, same transactionID)
        forged = forge.pkcs_req(challenge)
        reply = reply_of(await post(http, scep_url(server), forged.der), forged, ca)
        assert reply.pki_status == PkiStatus.PENDING and not reply.content
    assert await transaction_count(db) == 1
    assert await certificate_count(db) == 0


async def test_client_gives_up_with_scep_pending(server, config, db) -> None:
    challenge = await make_challenge(db)
    with pytest.raises(client.ScepPending) as caught:
        await client.enroll(
            scep_url(server), challenge, "impatient", new_key(), ssl_context=client_ssl_context(config)
        )
    assert caught.value.transaction_id


async def test_rejected(http, server, ca, db, api: httpx.AsyncClient) -> None:
    forge = Forge(ca, new_key())
    forged = forge.pkcs_req(await make_challenge(db))
    assert (
        reply_of(await post(http, scep_url(server), forged.der), forged, ca).pki_status == PkiStatus.PENDING
    )
    (request,) = await _pending(api)
    r = await api.post(f"/api/v1/scep/requests/{request['id']}/reject")
    assert r.status_code == 200 and r.json()["status"] == "rejected"
    poll = forge.message(b"poll", kind=MessageType.CERT_POLL)
    reply = reply_of(await post(http, scep_url(server), poll.der), poll, ca)
    assert reply.pki_status == PkiStatus.FAILURE and reply.fail_info == FailInfo.BAD_REQUEST.value
    assert (await api.post(f"/api/v1/scep/requests/{request['id']}/approve")).status_code == 409
    assert (await api.post("/api/v1/scep/requests/999999/approve")).status_code == 404
    assert await certificate_count(db) == 0


async def test_poll_from_another_key_is_refused(http, server, ca, db, api: httpx.AsyncClient) -> None:
    forge = Forge(ca, new_key())
    forged = forge.pkcs_req(await make_challenge(db))
    assert (
        reply_of(await post(http, scep_url(server), forged.der), forged, ca).pki_status == PkiStatus.PENDING
    )
    (request,) = await _pending(api)
    assert (await api.post(f"/api/v1/scep/requests/{request['id']}/approve")).status_code == 200
    thief = Forge(ca, new_key(), cn="thief")
    poll = thief.message(b"poll", kind=MessageType.CERT_POLL, transaction_id=forged.transaction_id)
    reply = reply_of(await post(http, scep_url(server), poll.der), poll, ca)
    assert reply.pki_status == PkiStatus.FAILURE and reply.fail_info == FailInfo.BAD_REQUEST.value
    mine = forge.message(b"poll", kind=MessageType.CERT_POLL)
    reply = reply_of(await post(http, scep_url(server), mine.der), mine, ca)
    assert reply.pki_status == PkiStatus.SUCCESS
    assert issued(reply, mine).public_key().public_numbers() == forge.key.public_key().public_numbers()


async def test_approval_needs_pki_scope(db, api: httpx.AsyncClient) -> None:
    async with db.transaction() as session:
        _, reader = await tokens.create(session, "reader", ["devices:read"])
    headers = {"Authorization": f"Bearer {reader}"}
    assert (await api.post("/api/v1/scep/requests/1/approve", headers=headers)).status_code == 403
    assert (await api.get("/api/v1/scep/requests", headers=headers)).status_code == 403
    r = await api.get("/api/v1/scep/requests", params={"status": "bogus"})
    assert r.status_code == 400
