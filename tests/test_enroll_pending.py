"""The iOS enrollment profile's PKCS#12 through the ``mobile`` rule's source when that source
pends, denies or is down (issue 16 item 1): the one-time link is never used up by a refusal, a
pending identity's key waits encrypted in its request row, and the download after the CA's
approval carries the enterprise CA's certificate with that key."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import client_ssl_context
from cryptography.hazmat.primitives import serialization
from enroll_support import APNS_TOML, open_pkcs12, openssl_verify, parse, payloads
from pki_pending_support import NAME, SwitchableSource, papi, pending_server, source  # noqa: F401
from sqlalchemy import func, select

from mdm.config import Config
from mdm.db.engine import Database
from mdm.db.models import Event
from mdm.enroll.tables import Enrollment
from mdm.pki.tables import CertificateRequestRecord, IssuedCertificateRecord
from mdm.server.runtime import Server

TEMPLATE = "MdmUser"
MOBILE = IssuedCertificateRecord.type == "mobile"


@pytest.fixture
def extra_config() -> str:
    return APNS_TOML


@pytest.fixture
async def web(pending_server: Server, config: Config) -> AsyncIterator[httpx.AsyncClient]:  # noqa: F811
    async with httpx.AsyncClient(verify=client_ssl_context(config), timeout=60) as client:
        yield client


async def _enrollment(api: httpx.AsyncClient) -> tuple[int, str]:
    r = await api.put("/api/v1/certificates/rules/mobile", json={"source": NAME, "template": TEMPLATE})
    assert r.status_code == 200, r.text
    r = await api.post("/api/v1/enrollments", json={"platform": "ios", "user": "alice"})
    assert r.status_code == 201, r.text
    return r.json()["id"], r.json()["url"].replace("localhost", "127.0.0.1")


async def _state(db: Database, enrollment_id: int) -> dict[str, Any]:
    async with db.session() as session:
        enrollment = await session.get(Enrollment, enrollment_id)
        assert enrollment is not None
        mine = CertificateRequestRecord.purpose == f"enrollment:{enrollment_id}"
        requests = (await session.scalars(select(CertificateRequestRecord).where(mine))).all()
        events = (await session.scalars(select(Event).order_by(Event.id))).all()
        return {
            "status": enrollment.status, "cert_serial": enrollment.cert_serial,
            "requests": [(r.id, r.status, r.encrypted_key) for r in requests],
            "certificates": await session.scalar(
                select(func.count()).select_from(IssuedCertificateRecord).where(MOBILE)),
            "events": [
                (e.type, dict(e.body)) for e in events if e.type.startswith(("cert_", "enrollment_"))
            ],
        }


def _kinds(state: dict[str, Any]) -> list[str]:
    return [kind for kind, _ in state["events"]]


def _identity(body: bytes, config: Config, tmp: Path) -> Any:
    """The PKCS#12 of a signed profile (its signature checked with openssl)."""
    profile = parse(openssl_verify(body, config.ca_dir / "root.pem", tmp))
    return open_pkcs12(payloads(profile)["com.apple.security.pkcs12"])


def _spki(key: Any) -> bytes:
    der: bytes = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return der


async def test_pending_then_approved_hands_out_the_enterprise_identity(
    papi: httpx.AsyncClient, web: httpx.AsyncClient, source: SwitchableSource, db: Database,  # noqa: F811
    config: Config, tmp_path: Path,
) -> None:
    enrollment_id, url = await _enrollment(papi)
    source.mode = "pend"
    r = await web.get(url)
    assert r.status_code == 503, r.text
    assert r.headers["Retry-After"] == "300" and r.headers["Cache-Control"] == "no-store"
    state = await _state(db, enrollment_id)
    [(request_id, status, sealed)] = state["requests"]
    assert f"Certificate request {request_id} is pending approval at the CA; try again later." in r.text
    assert status == "pending" and sealed is not None
    assert sealed.startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert state["status"] == "pending" and state["cert_serial"] is None  # the link is not used up
    assert state["certificates"] == 0
    assert _kinds(state) == ["cert_rule_changed", "enrollment_created", "cert_request_pending"]
    # The request went to the CA for the user, with the rule's template and our key's PKCS#10.
    [asked] = source.signed or [held.request for held in source.held.values()]
    assert (asked.uid, asked.template, asked.user_id is not None) == ("alice", TEMPLATE, True)

    # Asked again while pending: the same answer, nothing new at the CA or in the database.
    r = await web.get(url)
    assert r.status_code == 503 and r.headers["Retry-After"] == "300"
    assert len(source.held) == 1 and await _state(db, enrollment_id) == state

    source.approve("100")
    r = await papi.post(f"/api/v1/certificates/requests/{request_id}/poll")
    assert r.status_code == 200 and r.json()["status"] == "issued", r.text

    r = await web.get(url)
    assert r.status_code == 200, r.text
    identity = _identity(r.content, config, tmp_path)
    assert identity.cert is not None and identity.key is not None
    cert = identity.cert.certificate
    cert.verify_directly_issued_by(source.ca.cert)  # from the enterprise CA
    assert _spki(identity.key.public_key()) == _spki(cert.public_key())  # the key sealed at the request
    state = await _state(db, enrollment_id)
    assert state["status"] == "downloaded" and state["cert_serial"] == format(cert.serial_number, "x")
    assert state["requests"] == [(request_id, "issued", None)]  # the stored key is dropped
    assert _kinds(state)[-2:] == ["cert_issued", "enrollment_downloaded"]
    record = (await papi.get(f"/api/v1/certificates/{state['cert_serial']}")).json()
    assert (record["source"], record["type"], record["user"]) == (NAME, "mobile", "alice")
    assert (await web.get(url)).status_code == 410  # used once, as any link


async def test_denied_at_submission_leaves_the_link_and_records_the_event(
    papi: httpx.AsyncClient, web: httpx.AsyncClient, source: SwitchableSource, db: Database,  # noqa: F811
    config: Config, tmp_path: Path,
) -> None:
    enrollment_id, url = await _enrollment(papi)
    before = await _state(db, enrollment_id)
    source.mode = "deny"
    r = await web.get(url)
    assert r.status_code == 422, r.text
    assert "Denied by Policy Module: template not allowed" in r.text
    after = await _state(db, enrollment_id)
    assert after | {"events": None} == before | {"events": None}  # nothing written but the event
    assert after["events"][len(before["events"]):] == [("cert_request_denied", {
        "request_id": None, "source": NAME, "ca_request_id": "77", "cert_type": "mobile",
        "subject": f"alice device {enrollment_id}", "purpose": f"enrollment:{enrollment_id}",
        "message": "Denied by Policy Module: template not allowed",
    })]

    source.mode = "down"
    r = await web.get(url)
    assert r.status_code == 503 and "unavailable" in r.text
    assert _kinds(await _state(db, enrollment_id))[-1] == "cert_request_failed"

    source.mode = "issue"  # the link was not used up by either refusal
    r = await web.get(url)
    assert r.status_code == 200, r.text
    cert = _identity(r.content, config, tmp_path).cert
    assert cert is not None
    cert.certificate.verify_directly_issued_by(source.ca.cert)


async def test_denied_after_pending_refuses_the_link_with_the_ca_message(
    pending_server: Server, papi: httpx.AsyncClient, web: httpx.AsyncClient,  # noqa: F811
    source: SwitchableSource, db: Database,  # noqa: F811
) -> None:
    enrollment_id, url = await _enrollment(papi)
    source.mode = "pend"
    assert (await web.get(url)).status_code == 503
    [(request_id, _, _)] = (await _state(db, enrollment_id))["requests"]
    source.deny("100", "Denied by a CA manager: not in the MDM group")
    r = await papi.post(f"/api/v1/certificates/requests/{request_id}/poll")
    assert r.status_code == 200 and r.json()["status"] == "denied", r.text
    r = await web.get(url)
    assert r.status_code == 422, r.text
    assert "Denied by a CA manager: not in the MDM group" in r.text
    state = await _state(db, enrollment_id)
    assert state["status"] == "pending" and state["requests"] == [(request_id, "denied", None)]
    assert state["certificates"] == 0 and "enrollment_downloaded" not in _kinds(state)
