"""SCEP through an issuance rule whose source is an enterprise CA that holds the request: the
client gets PENDING, polls, and gets SUCCESS once the CA issued it (FAILURE when denied); a denial
at submission fails the request without using up the challenge."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from conftest import client_ssl_context
from pki_pending_support import NAME, SwitchableSource, papi, pending_server, source  # noqa: F401
from scep_tools.support import certificate_count, challenge_used, make_challenge, new_key, scep_url

from mdm.config import Config
from mdm.db.engine import Database
from mdm.scep import client
from mdm.server.runtime import Server


async def _enroll(server: Server, config: Config, challenge: str, name: str) -> asyncio.Task[object]:
    return asyncio.create_task(client.enroll(
        scep_url(server), challenge, name, new_key(), ssl_context=client_ssl_context(config),
        poll_interval=0.2, max_wait=30,
    ))


async def _pending_requests(api: httpx.AsyncClient) -> list[dict[str, object]]:
    for _ in range(100):
        items = (await api.get("/api/v1/certificates/requests", params={"status": "pending"})).json()["items"]
        if items:
            return list(items)
        await asyncio.sleep(0.1)
    raise AssertionError("no pending certificate request")


async def test_scep_pending_at_the_ca_then_issued(
    pending_server: Server, papi: httpx.AsyncClient, source: SwitchableSource, config: Config,  # noqa: F811
    db: Database,
) -> None:
    r = await papi.put("/api/v1/certificates/rules/mobile", json={"source": NAME, "template": "MDMDevice"})
    assert r.status_code == 200, r.text
    source.mode = "pend"
    task = await _enroll(pending_server, config, await make_challenge(db), "scep-device")
    (request,) = await _pending_requests(papi)
    assert str(request["purpose"]).startswith("scep:") and request["template"] == "MDMDevice"
    await asyncio.sleep(0.5)  # a few CertPolls answered PENDING
    assert not task.done()
    source.approve(str(request["ca_request_id"]))
    r = await papi.post(f"/api/v1/certificates/requests/{request['id']}/poll")
    assert r.status_code == 200 and r.json()["status"] == "issued", r.text
    cert = await asyncio.wait_for(task, 30)
    assert format(cert.serial_number, "x") == r.json()["serial"]  # type: ignore[attr-defined]
    assert cert.issuer == source.ca.cert.subject  # type: ignore[attr-defined]


async def test_scep_pending_then_denied_fails_the_poll(
    pending_server: Server, papi: httpx.AsyncClient, source: SwitchableSource, config: Config,  # noqa: F811
    db: Database,
) -> None:
    await papi.put("/api/v1/certificates/rules/mobile", json={"source": NAME})
    source.mode = "pend"
    task = await _enroll(pending_server, config, await make_challenge(db), "denied-device")
    (request,) = await _pending_requests(papi)
    source.deny(str(request["ca_request_id"]), "Denied by the CA manager")
    polled = await papi.post(f"/api/v1/certificates/requests/{request['id']}/poll")
    assert polled.json()["status"] == "denied"
    with pytest.raises(client.ScepError, match="Denied by the CA manager"):
        await asyncio.wait_for(task, 30)


async def test_scep_denied_at_submission_keeps_the_challenge(
    pending_server: Server, papi: httpx.AsyncClient, source: SwitchableSource, config: Config,  # noqa: F811
    db: Database,
) -> None:
    await papi.put("/api/v1/certificates/rules/mobile", json={"source": NAME})
    before = await certificate_count(db)
    source.mode = "deny"
    task = await _enroll(pending_server, config, await make_challenge(db), "refused-device")
    with pytest.raises(client.ScepError):
        await asyncio.wait_for(task, 30)
    assert not await challenge_used(db) and await certificate_count(db) == before
    events = (await papi.get("/api/v1/events", params={"type": "cert_request_denied"})).json()
    assert events["items"] and events["items"][0]["body"]["purpose"].startswith("scep:")
