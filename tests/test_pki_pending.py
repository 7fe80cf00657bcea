"""Outcomes of a certificate source that may pend, deny or be unavailable (issue 16 item 1):
the request row and events, nothing half-recorded, the worker's polls, the administrator's view
(API, CLI), the traffic light, and trust in the enterprise CA's certificates."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from conftest import listener_url
from pki_pending_support import NAME, SwitchableSource, papi, pending_server, source  # noqa: F401
from pki_support import cli
from sqlalchemy import func, select

from mdm.db.engine import Database
from mdm.db.models import Event, User, utcnow
from mdm.pki.services import REQUESTS, VERIFIER
from mdm.pki.tables import CertificateRequestRecord, IssuedCertificateRecord
from mdm.server.runtime import Server


async def _counts(db: Database) -> dict[str, int]:
    async with db.session() as session:
        return {
            "users": await session.scalar(select(func.count(User.id))) or 0,
            "certificates": await session.scalar(select(func.count(IssuedCertificateRecord.id))) or 0,
            "requests": await session.scalar(select(func.count(CertificateRequestRecord.id))) or 0,
        }


async def _events(db: Database, prefix: str = "cert_") -> list[tuple[str, dict[str, object]]]:
    async with db.session() as session:
        rows = (await session.scalars(select(Event).order_by(Event.id))).all()
    return [(e.type, dict(e.body)) for e in rows if e.type.startswith(prefix)]


async def _use_source(api: httpx.AsyncClient, cert_type: str = "vpn") -> httpx.Response:
    r = await api.put(f"/api/v1/certificates/rules/{cert_type}", json={"source": NAME, "template": "VPNUser"})
    assert r.status_code == 200, r.text
    return r


ISSUE = {"user": "dora", "type": "vpn", "p12_password": "pw", "create_user": True}


async def test_denied_at_submission_records_the_event_and_nothing_else(
    papi: httpx.AsyncClient, source: SwitchableSource, db: Database  # noqa: F811
) -> None:
    await _use_source(papi)
    before = await _counts(db)
    source.mode = "deny"
    r = await papi.post("/api/v1/certificates", json=ISSUE)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "certificate_denied"
    assert "Denied by Policy Module: template not allowed" in r.json()["error"]["message"]
    assert await _counts(db) == before  # the user it would have created is rolled back too
    denied = [body for kind, body in await _events(db) if kind == "cert_request_denied"]
    assert denied == [{
        "request_id": None, "source": NAME, "ca_request_id": "77", "cert_type": "vpn", "subject": "dora",
        "purpose": "api", "message": "Denied by Policy Module: template not allowed",
    }]


async def test_unavailable_source_is_503_with_a_failed_event(
    papi: httpx.AsyncClient, source: SwitchableSource, db: Database  # noqa: F811
) -> None:
    await _use_source(papi)
    before = await _counts(db)
    source.mode = "down"
    r = await papi.post("/api/v1/certificates", json=ISSUE)
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "certificate_source_unavailable"
    assert await _counts(db) == before
    assert [k for k, _ in await _events(db) if k.startswith("cert_request")] == ["cert_request_failed"]


async def test_pending_then_approved_is_recorded_like_an_issue(
    papi: httpx.AsyncClient, source: SwitchableSource, db: Database  # noqa: F811
) -> None:
    await _use_source(papi)
    before = await _counts(db)
    source.mode = "pend"
    r = await papi.post("/api/v1/certificates", json=ISSUE)
    assert r.status_code == 202, r.text
    pending = r.json()
    request = pending["request"]
    assert pending["user_created"] is True
    assert (request["status"], request["source"], request["ca_request_id"]) == ("pending", NAME, "100")
    assert request["message"] == "Taken Under Submission" and request["template"] == "VPNUser"
    # visible to the administrator, and the generated key is kept encrypted, never in clear
    listed = (await papi.get("/api/v1/certificates/requests", params={"status": "pending"})).json()
    assert [i["id"] for i in listed["items"]] == [request["id"]]
    issued = await papi.get("/api/v1/certificates/requests", params={"status": "issued"})
    assert issued.json()["items"] == []
    async with db.session() as session:
        row = await session.get(CertificateRequestRecord, request["id"])
        assert row is not None and row.encrypted_key is not None and row.csr_pem is not None
        assert row.encrypted_key.startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert (await _counts(db))["certificates"] == before["certificates"]

    r = await papi.post(f"/api/v1/certificates/requests/{request['id']}/poll")
    assert r.status_code == 200 and r.json()["status"] == "pending" and r.json()["attempts"] == 1

    source.approve("100")
    r = await papi.post(f"/api/v1/certificates/requests/{request['id']}/poll")
    assert r.status_code == 200, r.text
    done = r.json()
    assert done["status"] == "issued" and done["serial"]
    cert = (await papi.get(f"/api/v1/certificates/{done['serial']}")).json()
    assert (cert["source"], cert["type"], cert["user"], cert["status"]) == (NAME, "vpn", "dora", "valid")
    kinds = [k for k, _ in await _events(db)]
    assert kinds[-2:] == ["cert_request_pending", "cert_issued"]
    r = await papi.post(f"/api/v1/certificates/requests/{request['id']}/poll")
    assert r.status_code == 409  # no longer pending


async def test_worker_pass_denied_cancelled_given_up_and_backoff(
    pending_server: Server, papi: httpx.AsyncClient, source: SwitchableSource, db: Database  # noqa: F811
) -> None:
    await _use_source(papi)
    source.mode = "pend"
    ids = []
    for user in ("u1", "u2", "u3", "u4"):
        r = await papi.post("/api/v1/certificates", json={**ISSUE, "user": user})
        assert r.status_code == 202, r.text
        ids.append(r.json()["request"]["id"])
    service = pending_server.ctx.services[REQUESTS]
    source.deny("100", "Denied by Jane (CA manager)")
    r = await papi.delete(f"/api/v1/certificates/requests/{ids[1]}")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert (await papi.delete(f"/api/v1/certificates/requests/{ids[1]}")).status_code == 409
    async with db.transaction() as session:  # u3 has waited longer than request_max_days
        row = await session.get(CertificateRequestRecord, ids[2])
        assert row is not None
        row.created_at = utcnow() - timedelta(days=15)
    now = utcnow() + timedelta(minutes=5)
    report = await service.poll_due(now)
    assert (report.denied, report.failed, report.pending) == (1, 1, 1)
    # nothing is due again before request_poll_seconds: a second pass (another replica) claims nothing
    assert (await service.poll_due(now)).pending == 0
    statuses = {i: (await papi.get(f"/api/v1/certificates/requests/{i}")).json() for i in ids}
    assert statuses[ids[0]]["status"] == "denied"
    assert statuses[ids[0]]["message"] == "Denied by Jane (CA manager)"
    assert statuses[ids[1]]["status"] == "cancelled"
    assert statuses[ids[2]]["status"] == "failed" and "request_max_days" in statuses[ids[2]]["message"]
    assert statuses[ids[3]]["status"] == "pending"
    kinds = [k for k, _ in await _events(db, "cert_request")]
    assert sorted(kinds[4:]) == ["cert_request_cancelled", "cert_request_denied", "cert_request_failed"]
    async with db.session() as session:  # the kept keys are dropped once nothing will be issued
        for i in ids[:3]:
            row = await session.get(CertificateRequestRecord, i)
            assert row is not None and row.encrypted_key is None
    # the CA is down: the request stays pending and is asked again later (backoff)
    source.poll_down = True
    later = now + timedelta(hours=1)
    assert (await service.poll_due(later)).unavailable == 1
    async with db.session() as session:
        row = await session.get(CertificateRequestRecord, ids[3])
        assert row is not None and row.status == "pending" and row.next_poll_at > later
    r = await papi.post(f"/api/v1/certificates/requests/{ids[3]}/poll")
    assert r.status_code == 503


async def test_cli_lists_polls_and_cancels(
    papi: httpx.AsyncClient, source: SwitchableSource, pending_server: Server, config,  # noqa: F811
    admin_token: str,
) -> None:
    await _use_source(papi)
    source.mode = "pend"
    r = await papi.post("/api/v1/certificates", json=ISSUE)
    request_id = r.json()["request"]["id"]
    base = ["--url", listener_url(pending_server, "admin"), "--token", admin_token, "--data-dir",
            str(config.data_path)]
    listed = await cli("certs", "requests", "--status", "pending", *base)
    assert listed.code == 0, listed.err
    assert "Taken Under Submission" in listed.out and NAME in listed.out
    polled = await cli("certs", "requests", "poll", str(request_id), *base)
    assert polled.code == 0 and "pending" in polled.out
    cancelled = await cli("certs", "requests", "cancel", str(request_id), *base)
    assert cancelled.code == 0 and "cancelled" in cancelled.out
    issue = await cli("certs", "issue", "--user", "eve", "--type", "vpn", "--create-user", "--p12",
                      str(config.data_path / "eve.p12"), "--password", "pw", *base)
    assert issue.code == 0 and "pending" in issue.err + issue.out


async def test_light_turns_yellow_with_requests_pending_over_a_day(
    papi: httpx.AsyncClient, source: SwitchableSource, db: Database  # noqa: F811
) -> None:
    await _use_source(papi)
    source.mode = "pend"
    r = await papi.post("/api/v1/certificates", json=ISSUE)
    async with db.transaction() as session:
        row = await session.get(CertificateRequestRecord, r.json()["request"]["id"])
        assert row is not None
        row.created_at = utcnow() - timedelta(days=2)
    status = (await papi.get("/api/v1/status")).json()
    area = next(a for a in status["areas"] if a["area"] == "certificates")
    assert area["light"] == "yellow" and "pending at an enterprise CA" in area["reason"], area


async def test_rule_switch_trusts_the_enterprise_ca_at_once(
    pending_server: Server, papi: httpx.AsyncClient, source: SwitchableSource, config  # noqa: F811
) -> None:
    verifier = pending_server.ctx.services[VERIFIER]
    r = await papi.post("/api/v1/certificates", json={**ISSUE, "type": "mobile"})  # internal CA
    assert r.status_code == 201
    r = await _use_source(papi)
    assert r.json()["trusted_sources"] == [NAME]
    trust_file = (config.ca_dir / "client-trust.pem").read_bytes()
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    assert source.ca.cert.public_bytes(Encoding.PEM) in trust_file
    r = await papi.post("/api/v1/certificates", json={**ISSUE, "user": "fred"})
    assert r.status_code == 201, r.text
    cert = x509.load_pem_x509_certificate(r.json()["certificate_pem"].encode())
    assert verifier.verify(cert).serial_hex == r.json()["certificate"]["serial"]
    # revoked here: refused by our listeners at once (the domain CA's CRL is not ours to change)
    serial = r.json()["certificate"]["serial"]
    assert (await papi.post(f"/api/v1/certificates/{serial}/revoke", json={})).status_code == 200
    with pytest.raises(Exception, match="revoked"):
        verifier.verify(cert)


async def test_a_pass_with_nothing_due_opens_no_write_transaction(
    pending_server: Server, db: Database, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    """The due requests are read outside the write transaction (on SQLite a pass that found
    nothing held the server's one writer up to 1 s on a busy loop); the claim checks again."""
    import asyncio

    service = pending_server.ctx.services[REQUESTS]
    mine: list[bool] = []
    transaction = Database.transaction
    me = asyncio.current_task()

    def counted(self: Database, **kwargs: bool):  # type: ignore[no-untyped-def]
        if asyncio.current_task() is me:
            mine.append(True)
        return transaction(self, **kwargs)

    monkeypatch.setattr(Database, "transaction", counted)
    report = await service.poll_due(utcnow() + timedelta(days=1))
    assert (report.issued, report.pending, report.unavailable) == (0, 0, 0)
    assert mine == []
