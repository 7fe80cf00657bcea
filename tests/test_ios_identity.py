"""Device identity: mutual TLS, Mdm-Signature (RSA/EC, with and without signed attributes),
RFC 9440 Client-Cert from trusted proxies only; expired, revoked, untrusted, tampered and
replayed signatures answer 400 (never 401) with a security event; renewal re-binds."""

from __future__ import annotations

import asyncio
import base64
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from conftest import client_ssl_context, listener_url
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from ios_support import Phone, new_phone, sign
from sqlalchemy import select

from mdm.db.engine import Database
from mdm.db.models import Device, Event
from mdm.ios import plugin as ios_plugin
from mdm.pki import services as pki_plugin
from mdm.pki import services as pki_services
from mdm.pki.issuance import CertificateRequest, InternalCASource, issue
from mdm.pki.tables import CertType
from mdm.server.runtime import Server


@pytest.fixture
def extra_config() -> str:
    return "[ios]\nsignature_max_age = 2\n"


async def _reasons(db: Database) -> list[str]:
    async with db.session() as session:
        rows = (
            await session.scalars(
                select(Event).where(Event.type == "security_identity_rejected").order_by(Event.id)
            )
        ).all()
    return [e.body["reason"] for e in rows]


def _pem_files(tmp_path: Path, phone: Phone) -> tuple[str, str]:
    cert_file, key_file = tmp_path / "id.pem", tmp_path / "id.key"
    cert_file.write_bytes(phone.cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        phone.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return str(cert_file), str(key_file)


async def test_rsa_identity_and_signature_without_attributes(ios, server: Server, db: Database) -> None:
    phone = await new_phone(db, pki_services.ca(server.ctx), key_type="rsa")
    await phone.enroll(ios)
    body = b'<?xml version="1.0"?><plist version="1.0"><dict><key>Status</key><string>Idle</string>' + (
        f"<key>UDID</key><string>{phone.udid}</string></dict></plist>".encode()
    )
    header = sign(body, phone.cert, phone.key, attributes=False)
    response = await ios.put("/mdm/server", content=body, headers={"Mdm-Signature": header})
    assert response.status_code == 200


async def test_mutual_tls_identity(server: Server, config, db: Database, tmp_path: Path) -> None:
    phone = await new_phone(db, pki_services.ca(server.ctx))
    context = client_ssl_context(config)
    context.load_cert_chain(*_pem_files(tmp_path, phone))
    phone.extra_headers = {}
    async with httpx.AsyncClient(base_url=listener_url(server, "ios"), verify=context, timeout=30) as client:
        import plistlib

        for message in (phone.authenticate(), phone.token_update()):
            body = plistlib.dumps({"UDID": phone.udid, **message})
            response = await client.put("/mdm/checkin", content=body)
            assert response.status_code == 200, response.text
        idle = plistlib.dumps({"UDID": phone.udid, "Status": "Idle"})
        assert (await client.put("/mdm/server", content=idle)).status_code == 200
    async with db.session() as session:
        device = await session.scalar(select(Device).where(Device.identifier == phone.udid))
    assert device is not None and device.push_valid


async def test_no_identity_is_400_never_401(ios, server: Server, db: Database) -> None:
    import plistlib

    body = plistlib.dumps({"UDID": "X", "Status": "Idle"})
    response = await ios.put("/mdm/server", content=body)
    assert response.status_code == 400
    assert await _reasons(db) == ["missing"]


async def test_tampered_truncated_and_garbage_signatures(ios, server: Server, db: Database) -> None:
    phone = await new_phone(db, pki_services.ca(server.ctx))
    await phone.enroll(ios)
    body, headers = phone.signed({"UDID": phone.udid, "Status": "Idle"})
    tampered = body.replace(b"<dict>", b"<dict> ")
    assert tampered != body
    assert (await ios.put("/mdm/server", content=tampered, headers=headers)).status_code == 400
    der = base64.b64decode(headers["Mdm-Signature"])
    for bad in (
        base64.b64encode(der[: len(der) // 2]).decode(),
        "!!!not base64!!!",
        "",
        base64.b64encode(b"\x30\x03\x02\x01\x01").decode(),
    ):
        response = await ios.put("/mdm/server", content=body, headers={"Mdm-Signature": bad})
        assert response.status_code == 400, bad
    reasons = await _reasons(db)
    assert reasons[0] == "bad_signature" and set(reasons[1:]) == {"malformed"} and len(reasons) == 5


async def test_signature_of_another_body_is_rejected(ios, server: Server, db: Database) -> None:
    phone = await new_phone(db, pki_services.ca(server.ctx))
    await phone.enroll(ios)
    _, headers = phone.signed({"UDID": phone.udid, "Status": "Idle"})
    other, _ = phone.signed({"UDID": phone.udid, "Status": "Idle", "X": 1})
    assert (await ios.put("/mdm/server", content=other, headers=headers)).status_code == 400
    assert await _reasons(db) == ["bad_signature"]


async def test_old_signature_is_a_replay(ios, server: Server, db: Database) -> None:
    phone = await new_phone(db, pki_services.ca(server.ctx))
    await phone.enroll(ios)
    body, headers = phone.signed({"UDID": phone.udid, "Status": "Idle"})
    assert (await ios.put("/mdm/server", content=body, headers=headers)).status_code == 200
    await asyncio.sleep(3.2)  # signature_max_age = 2 in this module
    response = await ios.put("/mdm/server", content=body, headers=headers)
    assert response.status_code == 400 and response.json()["error"]["details"]["reason"] == "replayed"


async def test_revoked_identity_is_rejected(ios, server: Server, db: Database) -> None:
    phone = await new_phone(db, pki_services.ca(server.ctx))
    await phone.enroll(ios)
    verifier = pki_plugin.verifier(server.ctx)
    verifier.set_revoked(set(verifier.revoked) | {phone.serial})
    assert (await phone.report(ios)).status_code == 400
    assert await _reasons(db) == ["revoked"]


def _foreign_or_expired(server: Server, *, expired: bool) -> Phone:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    ca = pki_services.ca(server.ctx)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "device")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    )
    if expired:
        cert = (
            builder.issuer_name(ca.issuing.subject)
            .not_valid_before(now - timedelta(days=10))
            .not_valid_after(now - timedelta(days=1))
            .sign(ca.issuing_key, hashes.SHA256())
        )
    else:
        cert = (
            builder.issuer_name(subject)
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=1))
            .sign(key, hashes.SHA256())
        )
    return Phone("EXPIRED" if expired else "FOREIGN", cert, key, format(cert.serial_number, "x"))


async def test_expired_and_untrusted_identities(ios, server: Server, db: Database) -> None:
    for expired in (True, False):
        phone = _foreign_or_expired(server, expired=expired)
        response = await phone.checkin(ios, phone.authenticate())
        assert response.status_code == 400
    assert await _reasons(db) == ["expired", "untrusted"]
    async with db.session() as session:
        assert (await session.scalars(select(Device))).all() == []


async def test_client_cert_header_only_from_trusted_proxy(server: Server, config, db: Database) -> None:
    import plistlib

    phone = await new_phone(db, pki_services.ca(server.ctx))
    der = phone.cert.public_bytes(serialization.Encoding.DER)
    header = {"Client-Cert": ":" + base64.b64encode(der).decode() + ":"}
    url = listener_url(server, "ios")
    body = plistlib.dumps({"UDID": phone.udid, **phone.authenticate()})
    # From 127.0.0.1 (not in trusted_proxies = ["127.0.0.2/32"]): refused.
    async with httpx.AsyncClient(base_url=url, verify=client_ssl_context(config)) as client:
        response = await client.put("/mdm/checkin", content=body, headers=header)
    assert response.status_code == 400 and response.json()["error"]["details"]["reason"] == "untrusted_proxy"
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2", verify=client_ssl_context(config))
    async with httpx.AsyncClient(base_url=url, transport=transport) as client:
        response = await client.put("/mdm/checkin", content=body, headers=header)
        assert response.status_code == 200, response.text
        bad = await client.put("/mdm/checkin", content=body, headers={"Client-Cert": "not-a-byte-sequence"})
        assert bad.status_code == 400
    assert await _reasons(db) == ["untrusted_proxy", "malformed"]


async def test_renewed_certificate_takes_over_the_binding(ios, server: Server, db: Database) -> None:
    phone = await new_phone(db, pki_services.ca(server.ctx))
    await phone.enroll(ios)
    async with db.session() as session:
        device_id = await session.scalar(select(Device.id).where(Device.identifier == phone.udid))
    await asyncio.sleep(1.1)  # a later notBefore than the bound certificate
    async with db.transaction() as session:
        renewed = await issue(
            session,
            InternalCASource(pki_services.ca(server.ctx)),
            CertificateRequest(
                type=CertType.MOBILE,
                common_name="renewed",
                key_type="ec",
                device_id=device_id,
                renews_serial=phone.serial,
            ),
        )
    assert renewed.key is not None
    new = Phone(phone.udid, renewed.certificate, renewed.key, renewed.serial_hex)
    assert (await new.report(ios)).status_code == 200
    async with db.session() as session:
        device = await session.get(Device, device_id)
        renewed_events = (
            await session.scalars(select(Event).where(Event.type == "device_identity_renewed"))
        ).all()
    assert device is not None and device.cert_serial == renewed.serial_hex and len(renewed_events) == 1
    # The superseded certificate no longer identifies the device.
    ios_plugin.service(server.ctx).bindings.clear()
    assert (await phone.report(ios)).status_code == 400
    # A certificate issued for the same user but not to this device cannot take over.
    stranger = await new_phone(db, pki_services.ca(server.ctx))
    assert (
        await Phone(phone.udid, stranger.cert, stranger.key, stranger.serial).report(ios)
    ).status_code == 400


async def test_stale_authenticate_cannot_rebind_an_older_identity(ios, server: Server, db: Database) -> None:
    old = await new_phone(db, pki_services.ca(server.ctx))
    await asyncio.sleep(1.1)
    new = await new_phone(db, pki_services.ca(server.ctx), udid=old.udid)
    await new.enroll(ios)
    # The old identity (enrolled earlier, e.g. a captured profile) tries to Authenticate the same UDID.
    response = await old.checkin(ios, old.authenticate())
    assert response.status_code == 400 and response.json()["error"]["details"]["reason"] == "stale_identity"
    assert (await new.report(ios)).status_code == 200


async def test_expired_tls_client_certificate_gets_400_not_a_failed_handshake(
    server: Server, config, db: Database, tmp_path: Path
) -> None:
    import plistlib

    phone = _foreign_or_expired(server, expired=True)
    context = client_ssl_context(config)
    context.load_cert_chain(*_pem_files(tmp_path, phone))
    async with httpx.AsyncClient(base_url=listener_url(server, "ios"), verify=context, timeout=30) as client:
        body = plistlib.dumps({"UDID": phone.udid, **phone.authenticate()})
        response = await client.put("/mdm/checkin", content=body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "identity_rejected" and "expired" in response.text
    assert await _reasons(db) == ["expired"]
    async with db.session() as session:
        assert (await session.scalars(select(Device))).all() == []


def test_tls_listener_requests_but_does_not_require_client_certs(server: Server) -> None:
    context = server.ctx.tls["ios"].front
    assert context.verify_mode == ssl.CERT_OPTIONAL
