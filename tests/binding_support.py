"""Helpers for the binding tests (takeover, delete cut-off, check-in replays): an identity taken
from a real enrollment profile (admin API -> one-time link -> signed profile -> PKCS#12), and an
``Mdm-Signature`` with a chosen CMS signingTime (cryptography's builder always signs "now")."""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime
from typing import Any

import httpx
from asn1crypto import algos
from asn1crypto import cms as acms
from asn1crypto import x509 as ax509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from ios_support import Phone
from sqlalchemy import select

from mdm.config import Config
from mdm.db.engine import Database
from mdm.db.models import Device, Event
from mdm.pki.keys import PrivateKey
from mdm.sim import profile as profiles
from mdm.sim.device import fetch_profile


def roots(config: Config) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates((config.ca_dir / "root.pem").read_bytes())


async def enrollment_identity(
    api: httpx.AsyncClient, config: Config, user: str, udid: str, **body: Any
) -> tuple[Phone, dict[str, Any]]:
    """Create an enrollment through the admin API, download its one-time link like Safari, open
    the signed profile's PKCS#12: the identity a device (or whoever holds the link) gets."""
    created = await api.post("/api/v1/enrollments", json={"platform": "ios", "user": user, **body})
    assert created.status_code == 201, created.text
    trusted = roots(config)
    profile = profiles.parse_enrollment(await fetch_profile(created.json()["url"], trusted), trusted)
    identity = profiles.identity_from_pkcs12(profile.identity_payload)
    phone = Phone(udid, identity.certificate, identity.key, identity.serial_hex)
    return phone, created.json()


def sign_at(body: bytes, cert: x509.Certificate, key: PrivateKey, when: datetime) -> str:
    """A detached CMS SignedData over ``body`` whose signed attributes carry ``when`` as the
    signingTime (content type, signing time, message digest: the attributes iOS sends)."""
    attributes = [
        acms.CMSAttribute({"type": "content_type", "values": ["data"]}),
        acms.CMSAttribute({"type": "signing_time", "values": [acms.Time({"utc_time": when})]}),
        acms.CMSAttribute({"type": "message_digest", "values": [hashlib.sha256(body).digest()]}),
    ]
    to_sign = acms.CMSAttributes(attributes).dump()
    if isinstance(key, ec.EllipticCurvePrivateKey):
        signature = key.sign(to_sign, ec.ECDSA(hashes.SHA256()))
        algorithm = "sha256_ecdsa"
    else:
        assert isinstance(key, rsa.RSAPrivateKey)
        signature = key.sign(to_sign, padding.PKCS1v15(), hashes.SHA256())
        algorithm = "sha256_rsa"
    signer_cert = ax509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))
    signer = acms.SignerInfo(
        {
            "version": "v1",
            "sid": acms.SignerIdentifier(
                {
                    "issuer_and_serial_number": acms.IssuerAndSerialNumber(
                        {"issuer": signer_cert.issuer, "serial_number": signer_cert.serial_number}
                    )
                }
            ),
            "digest_algorithm": algos.DigestAlgorithm({"algorithm": "sha256"}),
            "signed_attrs": acms.CMSAttributes(attributes),
            "signature_algorithm": algos.SignedDigestAlgorithm({"algorithm": algorithm}),
            "signature": signature,
        }
    )
    signed = acms.SignedData(
        {
            "version": "v1",
            "digest_algorithms": [algos.DigestAlgorithm({"algorithm": "sha256"})],
            "encap_content_info": {"content_type": "data"},
            "certificates": [signer_cert],
            "signer_infos": [signer],
        }
    )
    der = acms.ContentInfo({"content_type": "signed_data", "content": signed}).dump()
    return base64.b64encode(der).decode()


async def checkin_at(
    client: httpx.AsyncClient, phone: Phone, message: dict[str, Any], when: datetime
) -> httpx.Response:
    import plistlib

    body = plistlib.dumps({"UDID": phone.udid, **message})
    headers = {
        "Mdm-Signature": sign_at(body, phone.cert, phone.key, when),
        "Content-Type": "application/x-apple-aspen-mdm-checkin",
    }
    return await client.put("/mdm/checkin", content=body, headers=headers)


async def device_of(db: Database, udid: str) -> Device:
    async with db.session() as session:
        device = await session.scalar(select(Device).where(Device.identifier == udid))
        assert device is not None
        return device


async def events_of(db: Database, type_: str) -> list[Event]:
    async with db.session() as session:
        rows = await session.scalars(select(Event).where(Event.type == type_).order_by(Event.id))
        return list(rows.all())


async def rejections(db: Database) -> list[Event]:
    return await events_of(db, "security_identity_rejected")
