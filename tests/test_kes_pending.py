"""KES certificates from an enterprise CA that holds, denies or cannot take the request (the
switchable source of ``pki_pending_support``): ``503 certificate_pending`` with Retry-After, the
same request again binds the certificate once the CA issued it; a denial or an unavailable CA
writes nothing but its event, and the token stays usable."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import httpx
from pki_pending_support import NAME, SwitchableSource, papi, pending_server, source  # noqa: F401
from sqlalchemy import select

from mdm.config import Config
from mdm.db.engine import Database
from mdm.db.models import Device, Event
from mdm.kes.tables import KesDevice
from mdm.server.runtime import Server
from tests.kes_support import (
    EnrolledDevice,
    android_enrollment,
    certificate_message,
    error_code,
    kes_client,
    key_pem,
    make_csr,
    mobile_certificates,
    new_key,
    register_message,
    request_id,
)


async def _use_source(api: httpx.AsyncClient) -> None:
    r = await api.put("/api/v1/certificates/rules/mobile", json={"source": NAME, "template": "MDMUser"})
    assert r.status_code == 200, r.text


async def _events(db: Database, type_: str) -> list[dict[str, Any]]:
    async with db.session() as session:
        rows = (await session.scalars(select(Event).where(Event.type == type_).order_by(Event.id))).all()
        return [dict(r.body or {}) for r in rows]


async def _device(db: Database, device_id: int) -> tuple[Device, KesDevice]:
    async with db.session() as session:
        device = await session.get(Device, device_id)
        kes = await session.get(KesDevice, device_id)
        assert device is not None and kes is not None
        return device, kes


async def _registered(server: Server, config: Config, db: Database, name: str) -> tuple[str, int]:
    enrollment = await android_enrollment(db)
    async with kes_client(server, config) as client:
        r = await client.post("/kes/v1/register", json=register_message(enrollment.token, name))
    assert r.status_code == 200, r.text
    return enrollment.token, int(r.json()["device_ref"])


def _pending(r: httpx.Response) -> int:
    assert (r.status_code, error_code(r)) == (503, "certificate_pending"), r.text
    wait = int(r.headers["Retry-After"])
    assert 1 <= wait <= 3600 and r.json()["error"]["details"]["retry_after"] == wait
    return wait


async def _approve(api: httpx.AsyncClient, ca: SwitchableSource, device_id: int) -> None:
    items = (await api.get("/api/v1/certificates/requests", params={"status": "pending"})).json()["items"]
    (request,) = [i for i in items if i["purpose"] == f"kes:{device_id}"]
    ca.approve(str(request["ca_request_id"]))
    r = await api.post(f"/api/v1/certificates/requests/{request['id']}/poll")
    assert r.status_code == 200 and r.json()["status"] == "issued", r.text


async def test_pending_retry_later_then_approved_binds_and_renews(
    pending_server: Server, papi: httpx.AsyncClient, source: SwitchableSource, config: Config,  # noqa: F811
    db: Database,
) -> None:
    await _use_source(papi)
    source.mode = "pend"
    token, device_id = await _registered(pending_server, config, db, "dev-pend")
    key = new_key()
    msg = certificate_message(token, "dev-pend", make_csr(key))
    async with kes_client(pending_server, config) as client:
        _pending(await client.post("/kes/v1/certificate", json=msg))
        _pending(await client.post("/kes/v1/certificate", json=msg))  # asked again: still pending
        other = await client.post("/kes/v1/certificate", json={**msg, "request_id": request_id()})
        assert (other.status_code, error_code(other)) == (403, "token_used")  # redeemed by the request
        (held,) = source.held.values()
        assert held.request.csr is not None and held.request.csr.public_key() == key.public_key()
        assert held.request.uid == "alice" and held.request.template == "MDMUser"
        device, kes = await _device(db, device_id)
        assert kes.cert_fingerprint is None and device.cert_serial is None and device.user_id is None
        assert await _events(db, "kes_device_enrolled") == []
        await _approve(papi, source, device_id)
        r = await client.post("/kes/v1/certificate", json=msg)
        again = await client.post("/kes/v1/certificate", json=msg)
    assert r.status_code == 200, r.text
    assert again.json()["certificate"] == r.json()["certificate"]  # bound once, answered the same
    enrolled = EnrolledDevice(certificate=r.json()["certificate"].encode(), key=key_pem(key),
                              chain=tuple(c.encode() for c in r.json()["chain"]), device_id=device_id)
    assert enrolled.cert.issuer == source.ca.cert.subject
    assert enrolled.cert.public_key() == key.public_key()
    device, kes = await _device(db, device_id)
    assert device.cert_serial == enrolled.serial_hex and device.user_id is not None
    assert [e["cert_serial"] for e in await _events(db, "kes_device_enrolled")] == [enrolled.serial_hex]
    async with kes_client(pending_server, config, enrolled) as client:  # mutual TLS with it
        r = await client.post("/kes/v1/sync", json={"v": 1, "request_id": request_id()})
        assert r.status_code == 200, r.text
        new = new_key()
        renewal = {"v": 1, "request_id": request_id(), "csr": make_csr(new)}
        _pending(await client.post("/kes/v1/certificate", json=renewal))
        await _approve(papi, source, device_id)
        r = await client.post("/kes/v1/certificate", json=renewal)
    assert r.status_code == 200, r.text
    renewed = replace(enrolled, certificate=r.json()["certificate"].encode(), key=key_pem(new))
    assert renewed.cert.public_key() == new.public_key()
    device, kes = await _device(db, device_id)
    assert device.cert_serial == renewed.serial_hex and kes.previous_fingerprint is not None
    (event,) = await _events(db, "kes_certificate_renewed")
    assert event["renews_serial"] == enrolled.serial_hex


def _fresh(token: str, name: str) -> dict[str, Any]:
    return certificate_message(token, name, make_csr(new_key()))


async def test_denied_at_submission_writes_its_event_and_nothing_else(
    pending_server: Server, papi: httpx.AsyncClient, source: SwitchableSource, config: Config,  # noqa: F811
    db: Database,
) -> None:
    await _use_source(papi)
    token, device_id = await _registered(pending_server, config, db, "dev-deny")
    source.mode = "deny"
    async with kes_client(pending_server, config) as client:
        r = await client.post("/kes/v1/certificate", json=_fresh(token, "dev-deny"))
        assert (r.status_code, error_code(r)) == (422, "certificate_denied"), r.text
        assert "template not allowed" in r.json()["error"]["message"]
        (event,) = await _events(db, "cert_request_denied")
        assert event["purpose"] == f"kes:{device_id}" and "template not allowed" in event["message"]
        device, kes = await _device(db, device_id)
        assert kes.cert_fingerprint is None and kes.cert_request_id is None and device.cert_serial is None
        assert await mobile_certificates(db) == 0
        source.mode = "down"
        r = await client.post("/kes/v1/certificate", json=_fresh(token, "dev-deny"))
        assert (r.status_code, error_code(r)) == (503, "certificate_source_unavailable"), r.text
        assert int(r.headers["Retry-After"]) > 0
        assert len(await _events(db, "cert_request_failed")) == 1
        source.mode = "issue"  # the token was not used up by either
        r = await client.post("/kes/v1/certificate", json=_fresh(token, "dev-deny"))
    assert r.status_code == 200, r.text
    assert await mobile_certificates(db) == 1


async def test_pending_then_denied_answers_the_cas_message(
    pending_server: Server, papi: httpx.AsyncClient, source: SwitchableSource, config: Config,  # noqa: F811
    db: Database,
) -> None:
    await _use_source(papi)
    source.mode = "pend"
    token, device_id = await _registered(pending_server, config, db, "dev-pd")
    msg = certificate_message(token, "dev-pd", make_csr(new_key()))
    async with kes_client(pending_server, config) as client:
        _pending(await client.post("/kes/v1/certificate", json=msg))
        (ca_id,) = source.held
        source.deny(ca_id, "Denied by Dana: not a managed phone")
        items = (await papi.get("/api/v1/certificates/requests")).json()["items"]
        r = await papi.post(f"/api/v1/certificates/requests/{items[0]['id']}/poll")
        assert r.json()["status"] == "denied", r.text
        r = await client.post("/kes/v1/certificate", json=msg)
    assert (r.status_code, error_code(r)) == (422, "certificate_denied"), r.text
    assert "not a managed phone" in r.json()["error"]["message"]
    device, kes = await _device(db, device_id)
    assert kes.cert_fingerprint is None and device.cert_serial is None
    assert await mobile_certificates(db) == 0
    assert [e["purpose"] for e in await _events(db, "cert_request_denied")] == [f"kes:{device_id}"]
