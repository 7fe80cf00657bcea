"""SCEP enrollment end to end over the real iOS listener (TLS), with mdm.scep.client."""

from __future__ import annotations

import httpx
import pytest
from conftest import client_ssl_context
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from scep_tools.support import (
    challenge_used,
    make_challenge,
    make_user,
    new_key,
    record_of,
    scep_url,
)
from sqlalchemy import select, update

from mdm.config import Config
from mdm.db.models import Event
from mdm.pki.tables import IssuedCertificateRecord
from mdm.scep import client, messages
from mdm.scep.protocol import FailInfo
from mdm.server.runtime import Server


def _chains_to_ca(cert: x509.Certificate, config: Config) -> None:
    issuing = x509.load_pem_x509_certificate((config.ca_dir / "issuing.pem").read_bytes())
    root = x509.load_pem_x509_certificate((config.ca_dir / "root.pem").read_bytes())
    cert.verify_directly_issued_by(issuing)
    issuing.verify_directly_issued_by(root)


async def test_getcacaps(server: Server, config: Config) -> None:
    async with httpx.AsyncClient(verify=client_ssl_context(config)) as http:
        r = await http.get(scep_url(server), params={"operation": "GetCACaps"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    caps = set(r.text.split())
    assert {"POSTPKIOperation", "SHA-256", "SHA-1", "AES", "DES3", "SCEPStandard", "Renewal"} <= caps


async def test_getcacert_returns_ra_and_chain(server: Server, config: Config) -> None:
    async with httpx.AsyncClient(verify=client_ssl_context(config)) as http:
        r = await http.get(scep_url(server), params={"operation": "GetCACert"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/x-x509-ca-ra-cert"
    certs = messages.certificates_of(r.content)
    assert len(certs) == 4
    issuing = x509.load_pem_x509_certificate((config.ca_dir / "issuing.pem").read_bytes())
    root = x509.load_pem_x509_certificate((config.ca_dir / "root.pem").read_bytes())
    assert certs[2:] == [issuing, root]
    info = client.select_certificates(certs, frozenset())
    assert info.signer == certs[0] and info.recipient == certs[1] and info.issuer == issuing
    sign_usage = info.signer.extensions.get_extension_for_class(x509.KeyUsage).value
    enc_usage = info.recipient.extensions.get_extension_for_class(x509.KeyUsage).value
    assert sign_usage.digital_signature and not sign_usage.key_encipherment
    assert enc_usage.key_encipherment and not enc_usage.digital_signature
    # The RA certificates cannot pass as device identities: no clientAuth.
    eku = info.signer.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH not in eku


@pytest.mark.parametrize("encryption", ["aes", "aes128", "3des"])
async def test_enroll_with_one_time_challenge(server: Server, config: Config, db, encryption: str) -> None:
    user_id = await make_user(db)
    challenge = await make_challenge(db, user_id=user_id)
    key = new_key()
    cert = await client.enroll(
        scep_url(server),
        challenge,
        "device-1",
        key,
        ssl_context=client_ssl_context(config),
        encryption=encryption,
    )
    _chains_to_ca(cert, config)
    assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "device-1"
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    record = await record_of(db, cert)
    assert (
        record is not None
        and record.type == "mobile"
        and record.user_id == user_id
        and record.status == "valid"
    )
    assert await challenge_used(db)
    async with db.session() as session:
        issued = (await session.scalars(select(Event).where(Event.type == "cert_issued"))).all()
    assert [e.body["serial"] for e in issued] == [record.serial]


async def test_renewal(server: Server, config: Config, db) -> None:
    user_id = await make_user(db)
    old_key = new_key()
    ssl_ctx = client_ssl_context(config)
    old = await client.enroll(
        scep_url(server), await make_challenge(db, user_id=user_id), "dev", old_key, ssl_context=ssl_ctx
    )
    new = new_key()
    renewed = await client.renew(scep_url(server), old, old_key, new, ssl_context=ssl_ctx, encryption="3des")
    assert renewed.public_key().public_numbers() == new.public_key().public_numbers()
    _chains_to_ca(renewed, config)
    record = await record_of(db, renewed)
    assert record is not None and record.renews_serial == format(old.serial_number, "x")
    assert record.user_id == user_id
    async with db.session() as session:
        types = [e.type for e in (await session.scalars(select(Event))).all()]
    assert "cert_renewed" in types


async def test_renewal_needs_a_certificate_of_ours(server: Server, config: Config, db) -> None:
    foreign_key = new_key()
    foreign = client.self_signed(foreign_key, "dev")  # not issued by our CA
    with pytest.raises(client.ScepError) as caught:
        await client.renew(
            scep_url(server), foreign, foreign_key, new_key(), ssl_context=client_ssl_context(config)
        )
    assert caught.value.fail_info == FailInfo.BAD_CERT_ID
    # A revoked certificate of ours is refused the same way.
    old_key = new_key()
    old = await client.enroll(
        scep_url(server), await make_challenge(db), "dev", old_key, ssl_context=client_ssl_context(config)
    )
    async with db.transaction() as session:
        await session.execute(
            update(IssuedCertificateRecord)
            .where(IssuedCertificateRecord.serial == format(old.serial_number, "x"))
            .values(status="revoked")
        )
    with pytest.raises(client.ScepError) as caught:
        await client.renew(scep_url(server), old, old_key, new_key(), ssl_context=client_ssl_context(config))
    assert caught.value.fail_info == FailInfo.BAD_CERT_ID
