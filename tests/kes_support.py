"""Helpers of the KES tests (identity, sync, agent): HTTPS clients of the ``kes`` listener over real
TLS, with or without a client certificate; an Android enrollment with its one-time token; a device
enrolled end to end through ``/kes/v1/register`` and ``/kes/v1/certificate``.

    async with kes_client(server, config) as one_way: ...
    device = await enroll_device(server, config, db, identifier="a1b2c3d4e5f60718")
    async with kes_client(server, config, device) as mutual:
        await mutual.post("/kes/v1/sync", json={...})
"""

from __future__ import annotations

import ssl
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from sqlalchemy import func, select

from mdm.config import Config
from mdm.db.engine import Database
from mdm.db.models import User, utcnow
from mdm.enroll.seams import KES_TOKEN_PURPOSE
from mdm.enroll.tables import Enrollment
from mdm.scep.challenges import create_challenge
from mdm.server.runtime import Server
from tests.conftest import listener_url

KeyType = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class Identity:
    """A client certificate (PEM) and its key (PEM), as an agent holds them."""

    certificate: bytes
    key: bytes
    chain: tuple[bytes, ...] = ()

    @property
    def cert(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.certificate)

    @property
    def serial_hex(self) -> str:
        return format(self.cert.serial_number, "x")


@dataclass(frozen=True)
class EnrolledDevice(Identity):
    identifier: str = ""
    device_id: int = 0
    user_id: int = 0
    enrollment_id: int = 0
    private_key: Any = None


@dataclass(frozen=True)
class AndroidEnrollment:
    id: int
    token: str
    user_id: int


def kes_url(server: Server) -> str:
    return listener_url(server, "kes")


def kes_ssl_context(config: Config, identity: Identity | None = None) -> ssl.SSLContext:
    """Trusts the internal root (what signs the ``M`` certificate in tests); presents ``identity``."""
    ctx = ssl.create_default_context(cafile=str(config.ca_dir / "root.pem"))
    if identity is not None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "id.pem"
            path.write_bytes(identity.certificate + b"".join(identity.chain) + identity.key)
            ctx.load_cert_chain(str(path))
    return ctx


@asynccontextmanager
async def kes_client(
    server: Server, config: Config, identity: Identity | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTPS client of the kes listener (one connection reused); mutual TLS with ``identity``."""
    async with httpx.AsyncClient(
        base_url=kes_url(server), verify=kes_ssl_context(config, identity), timeout=30
    ) as client:
        yield client


def new_key(kind: str = "ec") -> KeyType:
    return ec.generate_private_key(ec.SECP256R1()) if kind == "ec" else rsa.generate_private_key(65537, 2048)


def make_csr(key: KeyType, common_name: str | None = "agent") -> str:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)] if common_name else [])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def key_pem(key: KeyType) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def request_id() -> str:
    return str(uuid.uuid4())


def register_message(
    token: str, identifier: str, *, fcm_token: str | None = "fcm-token-1", **facts: Any
) -> dict[str, Any]:
    device = {
        "device_id": identifier,
        "manufacturer": "samsung",
        "model": "SM-G991B",
        "os_version": "14",
        "serial": "R58N90ABCDE",
        "agent_version": "1.0.0",
        **facts,
    }
    msg: dict[str, Any] = {"v": 1, "request_id": request_id(), "token": token, "device": device}
    if fcm_token is not None:
        msg["fcm_token"] = fcm_token
    return msg


def certificate_message(token: str, identifier: str, csr: str) -> dict[str, Any]:
    return {"v": 1, "request_id": request_id(), "token": token, "device_id": identifier, "csr": csr}


async def user(db: Database, name: str = "alice") -> int:
    async with db.transaction() as session:
        found = await session.scalar(select(User.id).where(User.name == name))
        if found is not None:
            return int(found)
        row = User(name=name, email=f"{name}@example.com")
        session.add(row)
        await session.flush()
        return row.id


async def android_enrollment(
    db: Database, *, user_name: str = "alice", ttl_seconds: int = 3600, for_device_id: int | None = None
) -> AndroidEnrollment:
    """An Android enrollment and its one-time token (a challenge of purpose ``kes-enrollment:<id>``)."""
    user_id = await user(db, user_name)
    async with db.transaction() as session:
        enrollment = Enrollment(
            uuid=str(uuid.uuid4()),
            platform="android",
            user_id=user_id,
            delivery="link",
            identity="pkcs12",
            expires_at=utcnow() + timedelta(seconds=ttl_seconds),
            mdm_profile_identifier=f"kes.{uuid.uuid4()}",
            for_device_id=for_device_id,
        )
        session.add(enrollment)
        await session.flush()
        token = await create_challenge(
            session, user_id=user_id, purpose=f"{KES_TOKEN_PURPOSE}{enrollment.id}", ttl_seconds=ttl_seconds
        )
        return AndroidEnrollment(enrollment.id, token, user_id)


async def enroll_device(
    server: Server,
    config: Config,
    db: Database,
    *,
    identifier: str | None = None,
    user_name: str = "alice",
    fcm_token: str | None = "fcm-token-1",
    key_kind: str = "ec",
    enrollment: AndroidEnrollment | None = None,
) -> EnrolledDevice:
    """Register and get the certificate over one-way TLS, as the agent does; asserts each step."""
    identifier = identifier or uuid.uuid4().hex[:16]
    enrollment = enrollment or await android_enrollment(db, user_name=user_name)
    key = new_key(key_kind)
    async with kes_client(server, config) as client:
        answer = await client.post(
            "/kes/v1/register", json=register_message(enrollment.token, identifier, fcm_token=fcm_token)
        )
        assert answer.status_code == 200, answer.text
        device_id = int(answer.json()["device_ref"])
        answer = await client.post(
            "/kes/v1/certificate", json=certificate_message(enrollment.token, identifier, make_csr(key))
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
    return EnrolledDevice(
        certificate=body["certificate"].encode(),
        key=key_pem(key),
        chain=tuple(c.encode() for c in body["chain"]),
        identifier=identifier,
        device_id=device_id,
        user_id=enrollment.user_id,
        enrollment_id=enrollment.id,
        private_key=key,
    )


async def renew(server: Server, config: Config, device: EnrolledDevice) -> EnrolledDevice:
    """Renew over mutual TLS with a new key; the device with its new certificate."""
    key = new_key()
    async with kes_client(server, config, device) as client:
        answer = await client.post(
            "/kes/v1/certificate", json={"v": 1, "request_id": request_id(), "csr": make_csr(key)}
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
    return replace(device, certificate=body["certificate"].encode(), key=key_pem(key), private_key=key)


async def count(db: Database, table: Any) -> int:
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(table)) or 0)


async def mobile_certificates(db: Database) -> int:
    """Device certificates issued (the server certificates of the test PKI are recorded too)."""
    from mdm.pki.tables import IssuedCertificateRecord

    async with db.session() as session:
        stmt = (
            select(func.count())
            .select_from(IssuedCertificateRecord)
            .where(IssuedCertificateRecord.type == "mobile")
        )
        return int(await session.scalar(stmt) or 0)


def error_code(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])
