"""Helpers for the iOS tests: a device identity issued by the test CA, signed requests
(Mdm-Signature made with cryptography's PKCS#7 builder, as a device's Security framework does),
and queue set-up. No server behaviour is imitated here."""

from __future__ import annotations

import base64
import plistlib
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs7
from sqlalchemy import func, select

from mdm.db.engine import Database
from mdm.db.models import (
    Command,
    CommandJournalEntry,
    CommandQueueEntry,
    CommandStatus,
    Device,
    Event,
    utcnow,
)
from mdm.pki import services as pki_services
from mdm.pki.ca import CertificateAuthority
from mdm.pki.issuance import CertificateRequest, InternalCASource, issue
from mdm.pki.keys import PrivateKey
from mdm.pki.tables import CertType
from mdm.schema import metadata
from mdm.server.runtime import Server

FIXTURES = Path(__file__).parent / "fixtures" / "apple"
TOPIC = "com.apple.mgmt.External.e0bd1eac-1f17-4c8e-8a63-dd17d3dd35d9"


def sign(body: bytes, cert: x509.Certificate, key: PrivateKey, *, attributes: bool = True) -> str:
    options = [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary]
    if not attributes:
        options.append(pkcs7.PKCS7Options.NoAttributes)
    der = (
        pkcs7.PKCS7SignatureBuilder()
        .set_data(body)
        .add_signer(cert, key, hashes.SHA256())  # type: ignore[arg-type]
        .sign(serialization.Encoding.DER, options)
    )
    return base64.b64encode(der).decode()


@dataclass
class Phone:
    """An enrolled-looking device: UDID plus the identity the enrollment profile gave it."""

    udid: str
    cert: x509.Certificate
    key: PrivateKey
    serial: str
    extra_headers: dict[str, str] = field(default_factory=dict)

    def signed(self, message: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
        body = plistlib.dumps(message)
        return body, {"Mdm-Signature": sign(body, self.cert, self.key), **self.extra_headers}

    async def checkin(self, client: httpx.AsyncClient, message: dict[str, Any]) -> httpx.Response:
        message = {"UDID": self.udid, **message}
        body, headers = self.signed(message)
        headers["Content-Type"] = "application/x-apple-aspen-mdm-checkin"
        return await client.put("/mdm/checkin", content=body, headers=headers)

    async def report(
        self, client: httpx.AsyncClient, status: str = "Idle", uuid_: str | None = None, **extra: Any
    ) -> httpx.Response:
        message: dict[str, Any] = {"UDID": self.udid, "Status": status, **extra}
        if uuid_ is not None:
            message["CommandUUID"] = uuid_
        body, headers = self.signed(message)
        headers["Content-Type"] = "application/x-apple-aspen-mdm"
        return await client.put("/mdm/server", content=body, headers=headers)

    def authenticate(self, **extra: Any) -> dict[str, Any]:
        return {
            "MessageType": "Authenticate",
            "Topic": TOPIC,
            "OSVersion": "17.5",
            "BuildVersion": "21F79",
            "ProductName": "iPhone15,2",
            "SerialNumber": "F2LXJ0Q1HG7F",
            "DeviceName": "Alice's iPhone",
            **extra,
        }

    def token_update(self, token: bytes = b"\x01" * 32, **extra: Any) -> dict[str, Any]:
        return {
            "MessageType": "TokenUpdate",
            "Topic": TOPIC,
            "Token": token,
            "PushMagic": "5A2A8D45-1D1A-4D62-A6A4-4F2E1E6B0F11",
            **extra,
        }

    async def enroll(self, client: httpx.AsyncClient) -> None:
        response = await self.checkin(client, self.authenticate())
        assert response.status_code == 200, response.text
        response = await self.checkin(client, self.token_update(UnlockToken=b"unlock-secret"))
        assert response.status_code == 200, response.text


async def new_phone(
    db: Database,
    ca: CertificateAuthority,
    udid: str | None = None,
    *,
    key_type: str = "ec",
    user_id: int | None = None,
) -> Phone:
    udid = udid or uuid.uuid4().hex + "00000000"
    async with db.transaction() as session:
        issued = await issue(
            session,
            InternalCASource(ca),
            CertificateRequest(
                type=CertType.MOBILE,
                common_name=f"iOS {udid[:16]}",
                key_type=key_type,
                days=30,
                user_id=user_id,
            ),
        )
    assert issued.key is not None
    return Phone(udid, issued.certificate, issued.key, issued.serial_hex)


async def enrolled_phone(server: Server, db: Database, ios: httpx.AsyncClient) -> Phone:
    """A phone enrolled on the running server (Authenticate, then TokenUpdate with UnlockToken
    b"unlock-secret"): the ``phone`` fixture of tests/conftest.py."""
    p = await new_phone(db, pki_services.ca(server.ctx))
    await p.enroll(ios)
    return p


async def device_id_of(db: Database, udid: str) -> int:
    """The server's id of the device with this UDID (it must exist)."""
    async with db.session() as session:
        value = await session.scalar(select(Device.id).where(Device.identifier == udid))
        assert value is not None
        return int(value)


async def queue_command(
    db: Database, device_id: int, payload: dict[str, Any], *, type_: str = "Raw", priority: int = 0
) -> str:
    """Put a translated command in the hot queue the way ``core.command_enqueue.enqueue`` does."""
    async with db.transaction() as session:
        now = utcnow()
        command = Command(
            guid=str(uuid.uuid4()).upper(),
            device_id=device_id,
            type=type_,
            args={},
            payload=payload,
            priority=priority,
            status=CommandStatus.PROCESSING.value,
            created_at=now,
            updated_at=now,
            active=True,
        )
        session.add(command)
        await session.flush()
        session.add(
            CommandQueueEntry(command_id=command.id, device_id=device_id, priority=priority, created_at=now)
        )
        session.add(CommandJournalEntry(command_id=command.id, status="processing", detail="queued"))
        return command.guid


async def table_counts(db: Database) -> dict[str, int]:
    async with db.session() as session:
        return {
            t.name: int(await session.scalar(select(func.count()).select_from(t)) or 0)
            for t in metadata.sorted_tables
        }


async def snapshot(db: Database, skip: tuple[str, ...] = ("events",)) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table (but ``skip``), for "nothing changed" assertions."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    async with db.session() as session:
        for table in metadata.sorted_tables:
            if table.name in skip:
                continue
            rows = (await session.execute(select(table))).all()
            out[table.name] = sorted(tuple(repr(v) for v in r) for r in rows)
    return out


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def offered(response: httpx.Response) -> str | None:
    """The CommandUUID a command-channel answer offers (None: an empty answer)."""
    assert response.status_code == 200, response.text
    return plistlib.loads(response.content)["CommandUUID"] if response.content else None


async def command_records(
    db: Database, guid: str, *, event_prefix: str = ""
) -> tuple[Command, list[str], list[str]]:
    """A command, its journal's statuses and its device's event types (those starting with
    ``event_prefix``), each in the order written."""
    async with db.session() as session:
        command = await session.scalar(select(Command).where(Command.guid == guid))
        assert command is not None
        journal = await session.scalars(
            select(CommandJournalEntry.status)
            .where(CommandJournalEntry.command_id == command.id)
            .order_by(CommandJournalEntry.id)
        )
        types = await session.scalars(
            select(Event.type).where(Event.device_id == command.device_id).order_by(Event.id)
        )
        return command, list(journal.all()), [t for t in types.all() if t.startswith(event_prefix)]
