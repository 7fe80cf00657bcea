"""Helpers shared by the SCEP tests."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import func, select

from mdm.db.engine import Database
from mdm.db.models import User
from mdm.pki.tables import IssuedCertificateRecord
from mdm.scep import challenges
from mdm.scep.tables import ScepChallenge, ScepTransaction
from mdm.server.runtime import Server

_KEYS: list[rsa.RSAPrivateKey] = []


def new_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def scep_url(server: Server, *, tls: bool | None = None) -> str:
    from conftest import listener_url

    return listener_url(server, "ios", tls=tls) + "/scep"


async def make_user(db: Database, name: str = "alice") -> int:
    async with db.transaction() as session:
        user = User(name=name)
        session.add(user)
        await session.flush()
        return user.id


async def make_challenge(
    db: Database, user_id: int | None = None, ttl: int = 600, purpose: str = "test"
) -> str:
    async with db.transaction() as session:
        return await challenges.create_challenge(session, user_id=user_id, purpose=purpose, ttl_seconds=ttl)


async def challenge_used(db: Database, purpose: str = "test") -> bool:
    async with db.session() as session:
        row = await session.scalar(select(ScepChallenge).where(ScepChallenge.purpose == purpose))
        assert row is not None
        return row.used_at is not None


async def certificate_count(db: Database) -> int:
    """User/device certificates on record (server certificates are recorded at start-up too)."""
    async with db.session() as session:
        stmt = (
            select(func.count())
            .select_from(IssuedCertificateRecord)
            .where(IssuedCertificateRecord.type != "server")
        )
        return int(await session.scalar(stmt) or 0)


async def transaction_count(db: Database) -> int:
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(ScepTransaction)) or 0)


async def record_of(db: Database, cert: x509.Certificate) -> IssuedCertificateRecord | None:
    async with db.session() as session:
        return await session.scalar(
            select(IssuedCertificateRecord).where(
                IssuedCertificateRecord.serial == format(cert.serial_number, "x")
            )
        )
