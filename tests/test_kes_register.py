"""KES register, certificate and info over real TLS on the kes listener: what each writes, what a
retry answers, and the token's one-time use."""

from __future__ import annotations

import asyncio
import hashlib
import ssl

import jsonschema_rs
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import select

from mdm.config import Config
from mdm.db.engine import Database
from mdm.db.models import Device, Event, Protocol
from mdm.enroll.tables import Enrollment
from mdm.kes.messages import schema
from mdm.kes.tables import KesDevice
from mdm.pki.tables import IssuedCertificateRecord
from mdm.server.runtime import Server
from tests.kes_support import (
    android_enrollment,
    certificate_message,
    count,
    enroll_device,
    error_code,
    kes_client,
    make_csr,
    mobile_certificates,
    new_key,
    register_message,
)


async def _events(db: Database, type_: str) -> list[Event]:
    async with db.session() as session:
        return list(
            (await session.scalars(select(Event).where(Event.type == type_).order_by(Event.id))).all()
        )


async def test_info_answers_versions_time_and_the_ca_without_a_client_certificate(
    server: Server, config: Config
) -> None:
    async with kes_client(server, config) as client:
        answer = await client.get("/kes/v1/info")
    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == {"v", "protocol_versions", "server_time", "ca_certificates"}
    assert body["protocol_versions"] == [1]
    jsonschema_rs.validator_for(schema("info_answer")).validate(body)
    assert server.ctx.tls["kes"].front.minimum_version >= ssl.TLSVersion.TLSv1_2
    root = x509.load_pem_x509_certificate((config.ca_dir / "root.pem").read_bytes())
    served = [x509.load_pem_x509_certificate(c.encode()) for c in body["ca_certificates"]]
    assert root in served


async def test_register_creates_the_device_unowned_with_its_push_token(
    server: Server, config: Config, db: Database
) -> None:
    enrollment = await android_enrollment(db)
    async with kes_client(server, config) as client:
        answer = await client.post(
            "/kes/v1/register",
            json=register_message(
                enrollment.token, "9774d56d682e549c", fcm_token="fcm-1", imei="356938035643809"
            ),
        )
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "registered"
    async with db.session() as session:
        device = await session.get(Device, int(answer.json()["device_ref"]))
        kes = await session.get(KesDevice, device.id if device else 0)
    assert device is not None and kes is not None
    assert (device.protocol, device.identifier, device.user_id) == (
        Protocol.KES.value,
        "9774d56d682e549c",
        None,
    )
    assert (device.model, device.os_version, device.imei) == ("SM-G991B", "14", "356938035643809")
    assert (device.push_token, device.push_valid) == ("fcm-1", True) and device.push_changed_at is not None
    assert (
        kes.enrollment_id == enrollment.id and kes.cert_fingerprint is None and kes.agent_version == "1.0.0"
    )
    [event] = await _events(db, "kes_device_registered")
    assert event.device_id == device.id and event.body["created"] is True


async def test_register_again_updates_and_does_not_consume_the_token(
    server: Server, config: Config, db: Database
) -> None:
    enrollment = await android_enrollment(db)
    async with kes_client(server, config) as client:
        first = await client.post("/kes/v1/register", json=register_message(enrollment.token, "dev-1"))
        again = await client.post(
            "/kes/v1/register",
            json=register_message(enrollment.token, "dev-1", fcm_token="fcm-2", os_version="15"),
        )
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json()
    async with db.session() as session:
        device = await session.scalar(select(Device).where(Device.identifier == "dev-1"))
    assert device is not None and (device.os_version, device.push_token) == ("15", "fcm-2")
    assert await count(db, Device.__table__) == 1
    events = await _events(db, "kes_device_registered")
    assert [e.body["created"] for e in events] == [True, False]
    assert events[1].body["push_token_changed"] is True


async def test_certificate_binds_the_device_to_the_user_in_one_go(
    server: Server, config: Config, db: Database
) -> None:
    device = await enroll_device(server, config, db, identifier="abcdef0123456789")
    cert = device.cert
    async with db.session() as session:
        row = await session.get(Device, device.device_id)
        kes = await session.get(KesDevice, device.device_id)
        enrollment = await session.get(Enrollment, device.enrollment_id)
        record = await session.scalar(
            select(IssuedCertificateRecord).where(IssuedCertificateRecord.serial == device.serial_hex)
        )
    assert row is not None and kes is not None and enrollment is not None and record is not None
    assert row.user_id == device.user_id and row.cert_serial == device.serial_hex
    assert row.cert_not_after == cert.not_valid_after_utc
    assert kes.cert_fingerprint == hashlib.sha256(cert.public_bytes(Encoding.DER)).digest()
    assert kes.bound_at is not None and enrollment.device_id == device.device_id
    assert (record.type, record.user_id, record.device_id) == ("mobile", device.user_id, device.device_id)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH in eku
    root = x509.load_pem_x509_certificate((config.ca_dir / "root.pem").read_bytes())
    assert root in [x509.load_pem_x509_certificate(c) for c in device.chain]
    [enrolled] = await _events(db, "kes_device_enrolled")
    assert enrolled.user_id == device.user_id and enrolled.body["cert_serial"] == device.serial_hex
    assert len(await _events(db, "cert_issued")) == 1


async def test_a_repeated_certificate_request_gets_the_same_certificate(
    server: Server, config: Config, db: Database
) -> None:
    enrollment = await android_enrollment(db)
    csr = make_csr(new_key())
    async with kes_client(server, config) as client:
        assert (
            await client.post("/kes/v1/register", json=register_message(enrollment.token, "dev-r"))
        ).is_success
        msg = certificate_message(enrollment.token, "dev-r", csr)
        first = await client.post("/kes/v1/certificate", json=msg)
        again = await client.post("/kes/v1/certificate", json=msg)
        other = await client.post("/kes/v1/certificate", json={**msg, "csr": make_csr(new_key())})
        fresh = await client.post("/kes/v1/certificate", json={**msg, "request_id": "another-request-id"})
    assert first.status_code == again.status_code == 200
    assert first.json()["certificate"] == again.json()["certificate"]
    assert (other.status_code, error_code(other)) == (409, "request_id_reused")
    assert (fresh.status_code, error_code(fresh)) == (403, "token_used")
    assert await mobile_certificates(db) == 1


async def test_two_concurrent_certificate_requests_with_one_token_issue_exactly_one(
    server: Server, config: Config, db: Database
) -> None:
    enrollment = await android_enrollment(db)
    async with kes_client(server, config) as client:
        assert (
            await client.post("/kes/v1/register", json=register_message(enrollment.token, "dev-c"))
        ).is_success
    async with kes_client(server, config) as a, kes_client(server, config) as b:
        answers = await asyncio.gather(
            a.post(
                "/kes/v1/certificate",
                json=certificate_message(enrollment.token, "dev-c", make_csr(new_key())),
            ),
            b.post(
                "/kes/v1/certificate",
                json=certificate_message(enrollment.token, "dev-c", make_csr(new_key())),
            ),
        )
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200, 403], [a.text for a in answers]
    loser = next(a for a in answers if a.status_code == 403)
    assert error_code(loser) == "token_used"
    assert await mobile_certificates(db) == 1
    assert len(await _events(db, "kes_device_enrolled")) == 1


async def test_certificate_for_a_device_not_registered_with_this_token_is_refused(
    server: Server, config: Config, db: Database
) -> None:
    first = await android_enrollment(db)
    second = await android_enrollment(db)
    async with kes_client(server, config) as client:
        assert (await client.post("/kes/v1/register", json=register_message(first.token, "dev-n"))).is_success
        unknown = await client.post(
            "/kes/v1/certificate",
            json=certificate_message(first.token, "never-registered", make_csr(new_key())),
        )
        crossed = await client.post(
            "/kes/v1/certificate", json=certificate_message(second.token, "dev-n", make_csr(new_key()))
        )
    assert (unknown.status_code, error_code(unknown)) == (409, "not_registered")
    assert (crossed.status_code, error_code(crossed)) == (409, "not_registered")
    assert await mobile_certificates(db) == 0
    # Neither consumed its token: the right device still gets its certificate.
    async with kes_client(server, config) as client:
        ok = await client.post(
            "/kes/v1/certificate", json=certificate_message(first.token, "dev-n", make_csr(new_key()))
        )
    assert ok.status_code == 200, ok.text


async def test_an_rsa_key_and_a_csr_without_common_name_are_certified(
    server: Server, config: Config, db: Database
) -> None:
    enrollment = await android_enrollment(db)
    async with kes_client(server, config) as client:
        assert (
            await client.post("/kes/v1/register", json=register_message(enrollment.token, "rsa-dev"))
        ).is_success
        answer = await client.post(
            "/kes/v1/certificate",
            json=certificate_message(enrollment.token, "rsa-dev", make_csr(new_key("rsa"), common_name=None)),
        )
    assert answer.status_code == 200, answer.text
    cert = x509.load_pem_x509_certificate(answer.json()["certificate"].encode())
    assert cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)[0].value == "rsa-dev"
    assert answer.json()["renew_after"] < answer.json()["not_after"]


async def test_one_token_registers_one_device(server: Server, config: Config, db: Database) -> None:
    """A leaked token must not mint device rows: a second Android id under the same enrollment
    is refused, and nothing is written for it."""
    enrollment = await android_enrollment(db)
    async with kes_client(server, config) as client:
        first = await client.post("/kes/v1/register", json=register_message(enrollment.token, "dev-1"))
        others = [
            await client.post("/kes/v1/register", json=register_message(enrollment.token, f"dev-{n}"))
            for n in range(2, 5)
        ]
    assert first.status_code == 200
    assert [(r.status_code, error_code(r)) for r in others] == [(409, "token_registered_another_device")] * 3
    assert await count(db, Device.__table__) == 1
