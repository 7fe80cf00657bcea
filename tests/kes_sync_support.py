"""Helpers of the KES sync tests: an enrolled agent made straight in the tables (a device, its
``kes_devices`` row bound to a client certificate issued by the test CA), and its HTTPS client
of the ``kes`` listener over mutual TLS."""

from __future__ import annotations

import hashlib
import ssl
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from sqlalchemy import func, select

from mdm.config import Config
from mdm.core import command_enqueue
from mdm.core.library import Translators
from mdm.db.engine import Database
from mdm.db.models import Command, Device, Event, Protocol, utcnow
from mdm.kes.commands import KesCommandTranslator
from mdm.kes.tables import KesDevice
from mdm.pki.ca import CertificateAuthority
from mdm.server.runtime import Server
from tests.conftest import client_ssl_context, listener_url

TRANSLATORS = Translators()
TRANSLATORS.register(Protocol.KES, KesCommandTranslator())


@dataclass
class Agent:
    device_id: int
    identifier: str
    cert_file: Path
    key_file: Path
    config: Config
    sent: list[dict[str, Any]] = field(default_factory=list)

    def ssl_context(self) -> ssl.SSLContext:
        ctx = client_ssl_context(self.config)
        ctx.load_cert_chain(str(self.cert_file), str(self.key_file))
        return ctx

    def client(self, server: Server, **options: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=listener_url(server, "kes"), verify=self.ssl_context(),
                                 timeout=options.pop("timeout", 30), **options)

    @staticmethod
    def message(**fields: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"v": 1, "request_id": str(uuid.uuid4())}
        body.update(fields)
        return body

    async def sync(self, client: httpx.AsyncClient, **fields: Any) -> httpx.Response:
        body = self.message(**fields)
        self.sent.append(body)
        return await client.post("/kes/v1/sync", json=body)


async def new_agent(
    db: Database, config: Config, *, identifier: str | None = None, fcm_token: str | None = None,
    group_id: int | None = None,
) -> Agent:
    identifier = identifier or uuid.uuid4().hex[:16]
    ca = CertificateAuthority.load(config.ca_dir)
    issued = ca.issue_with_key(key_type="ec", common_name=f"KES {identifier}", days=30, client=True)
    directory = config.ca_dir.parent / "agents"
    directory.mkdir(exist_ok=True)
    cert_file, key_file = directory / f"{identifier}.pem", directory / f"{identifier}.key"
    cert_file.write_bytes(issued.certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(issued.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    der = issued.certificate.public_bytes(serialization.Encoding.DER)
    async with db.transaction() as session:
        device = Device(protocol=Protocol.KES.value, identifier=identifier, status="ok", inventory={},
                        attributes={}, push_token=fcm_token, push_valid=fcm_token is not None,
                        group_id=group_id, cert_serial=format(issued.certificate.serial_number, "x"))
        session.add(device)
        await session.flush()
        now = utcnow()
        session.add(KesDevice(device_id=device.id, cert_fingerprint=hashlib.sha256(der).digest(),
                              registered_at=now, bound_at=now, updated_at=now, agent_version="1.0"))
        device_id = device.id
    return Agent(device_id, identifier, cert_file, key_file, config)


async def enqueue(db: Database, device_id: int, type_name: str, args: dict[str, Any] | None = None) -> str:
    """Queue a library command as the admin API does (without the wake-up)."""
    async with db.transaction() as session:
        device = await session.get(Device, device_id)
        assert device is not None
        command = await command_enqueue.enqueue(session, device, type_name, args, created_by="test",
                                         translators=TRANSLATORS)
        return command.guid


async def command(db: Database, guid: str) -> Command:
    async with db.session() as session:
        found = await session.scalar(select(Command).where(Command.guid == guid))
        assert found is not None
        return found


async def device(db: Database, device_id: int) -> Device:
    async with db.session() as session:
        found = await session.get(Device, device_id)
        assert found is not None
        return found


async def kes_row(db: Database, device_id: int) -> KesDevice:
    async with db.session() as session:
        found = await session.get(KesDevice, device_id)
        assert found is not None
        return found


async def event_types(db: Database, device_id: int | None = None) -> list[str]:
    async with db.session() as session:
        stmt = select(Event.type).order_by(Event.id)
        if device_id is not None:
            stmt = stmt.where(Event.device_id == device_id)
        return list((await session.scalars(stmt)).all())


async def count(db: Database, table: Any) -> int:
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(table)) or 0)


def result(guid: str, status: str = "completed", **extra: Any) -> dict[str, Any]:
    return {"command_id": guid, "status": status, "at": utcnow().isoformat(), **extra}
