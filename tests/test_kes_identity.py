"""The KES peer identity over real mutual TLS: every refusal is specific, logged, reported as a
security event and writes nothing; renewal moves the binding; unenroll ends it at once."""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select

from mdm.config import Config
from mdm.core import command_enqueue
from mdm.db.engine import Database
from mdm.db.models import Command, Device, DeviceStatus, Event
from mdm.kes.keys import PEERS
from mdm.kes.renewal import KesRenewer
from mdm.kes.tables import KesDevice
from mdm.pki.ca import CertificateAuthority
from mdm.pki.tables import CertStatus, IssuedCertificateRecord
from mdm.server.runtime import Server
from tests import pki_support
from tests.kes_support import (
    EnrolledDevice,
    Identity,
    enroll_device,
    error_code,
    kes_client,
    kes_url,
    key_pem,
    make_csr,
    new_key,
    request_id,
)

UNENROLL = {"v": 1, "request_id": "0b7e6c1c-5d1f-4c57-9a3e-2f1f0c1e9d11"}


def _renewal() -> dict[str, object]:
    return {"v": 1, "request_id": request_id(), "csr": make_csr(new_key())}


async def _rejections(db: Database, type_: str = "security_kes_identity_rejected") -> list[Event]:
    async with db.session() as session:
        return list(
            (await session.scalars(select(Event).where(Event.type == type_).order_by(Event.id))).all()
        )


async def _state(db: Database, device_id: int) -> tuple[Device, KesDevice]:
    async with db.session() as session:
        device = await session.get(Device, device_id)
        kes = await session.get(KesDevice, device_id)
    assert device is not None and kes is not None
    return device, kes


def _internal_identity(config: Config, *, cn: str = "stray", not_after: datetime | None = None) -> Identity:
    """A client certificate of the internal CA that no device is bound to (or expired)."""
    ca = CertificateAuthority.load(config.ca_dir)
    key = new_key()
    now = datetime.now(UTC)
    cert = ca.issue(
        key.public_key(),
        common_name=cn,
        days=30,
        client=True,
        not_before=now - timedelta(days=10) if not_after else None,
        not_after=not_after,
    )
    return Identity(cert.public_bytes(serialization.Encoding.PEM), key_pem(key))


async def test_the_peer_resolver_is_published_for_the_sync(server: Server) -> None:
    assert server.ctx.services[PEERS] is not None


async def test_a_mutual_endpoint_without_a_client_certificate_is_401_and_reported(
    server: Server, config: Config, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with kes_client(server, config) as client:
        answer = await client.post("/kes/v1/unenroll", json=UNENROLL)
        renewal = await client.post("/kes/v1/certificate", json=_renewal())
    assert (answer.status_code, error_code(answer)) == (401, "client_certificate_required")
    assert (renewal.status_code, error_code(renewal)) == (401, "client_certificate_required")
    [first, second] = await _rejections(db)
    assert first.body["code"] == "client_certificate_required" and first.body["peer"] == "127.0.0.1"
    assert second.body["path"] == "/kes/v1/certificate"
    assert "client_certificate_required" in caplog.text


async def test_an_expired_certificate_completes_the_handshake_and_gets_403_certificate_expired(
    server: Server, config: Config, db: Database
) -> None:
    expired = _internal_identity(config, not_after=datetime.now(UTC) - timedelta(days=1))
    async with kes_client(server, config, expired) as client:
        answer = await client.post("/kes/v1/unenroll", json=UNENROLL)
    assert (answer.status_code, error_code(answer)) == (403, "certificate_expired")
    [event] = await _rejections(db)
    assert event.body["reason"] == "expired" and event.body["serial"] is not None


async def test_a_revoked_certificate_gets_403_certificate_revoked_at_once(
    server: Server, config: Config, db: Database, api: httpx.AsyncClient
) -> None:
    device = await enroll_device(server, config, db)
    async with kes_client(server, config, device) as client:
        assert (await client.post("/kes/v1/certificate", json=_renewal())).status_code == 200  # cached now
        revoked = await api.post(
            f"/api/v1/certificates/{device.serial_hex}/revoke", json={"reason": "key_compromise"}
        )
        assert revoked.status_code == 200, revoked.text
        answer = await client.post("/kes/v1/unenroll", json=UNENROLL)
    assert (answer.status_code, error_code(answer)) == (403, "certificate_revoked")
    device_row, _ = await _state(db, device.device_id)
    assert device_row.status == DeviceStatus.OK.value  # the refused unenroll changed nothing
    assert [e.body["code"] for e in await _rejections(db)] == ["certificate_revoked"]


async def test_a_foreign_ca_certificate_fails_the_handshake_visibly(
    server: Server, config: Config, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    foreign_ca = pki_support.make_ca("Foreign CA")
    leaf = pki_support.make_leaf(foreign_ca, "intruder", eku=[], sans=[])
    identity = Identity(pki_support.pem(leaf.cert), pki_support.key_pem(leaf.key))
    with pytest.raises((ssl.SSLError, httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
        async with kes_client(server, config, identity) as client:
            await client.post("/kes/v1/unenroll", json=UNENROLL)
    for _ in range(50):
        events = await _rejections(db, "security_kes_handshake_rejected")
        if events:
            break
        await asyncio.sleep(0.05)
    [event] = events
    assert event.body["peer"] == "127.0.0.1" and event.body["reason"] == "untrusted"
    assert "KES TLS handshake refused" in caplog.text
    async with db.session() as session:
        assert await session.scalar(select(Device.id)) is None


async def test_a_certificate_bound_to_no_kes_device_is_403_certificate_not_bound(
    server: Server, config: Config, db: Database
) -> None:
    await enroll_device(server, config, db)  # another device is bound; this certificate is not
    async with kes_client(server, config, _internal_identity(config)) as client:
        answer = await client.post("/kes/v1/certificate", json=_renewal())
    assert (answer.status_code, error_code(answer)) == (403, "certificate_not_bound")
    assert [e.body["code"] for e in await _rejections(db)] == ["certificate_not_bound"]


async def test_a_wiped_device_is_refused_at_once_even_with_its_binding_cached(
    server: Server, config: Config, db: Database
) -> None:
    device = await enroll_device(server, config, db)
    async with kes_client(server, config, device) as client:
        first = await client.post("/kes/v1/certificate", json=_renewal())
        assert first.status_code == 200
        async with db.transaction() as session:
            row = await session.get(Device, device.device_id)
            assert row is not None
            row.status = DeviceStatus.WIPED.value
        answer = await client.post("/kes/v1/certificate", json=_renewal())
    assert (answer.status_code, error_code(answer)) == (403, "device_not_managed")


async def test_renewal_moves_the_binding_and_the_previous_certificate_keeps_working(
    server: Server, config: Config, db: Database
) -> None:
    device = await enroll_device(server, config, db)
    async with db.transaction() as session:
        kes = await session.get(KesDevice, device.device_id)
        assert kes is not None
        kes.renew_requested_at = datetime.now(UTC)
    new_private = new_key()
    renewed_request = {"v": 1, "request_id": request_id(), "csr": make_csr(new_private)}
    async with kes_client(server, config, device) as client:
        answer = await client.post("/kes/v1/certificate", json=renewed_request)
    assert answer.status_code == 200, answer.text
    renewed = replace(device, certificate=answer.json()["certificate"].encode(), key=key_pem(new_private))
    assert renewed.serial_hex != device.serial_hex
    row, kes = await _state(db, device.device_id)
    assert row.cert_serial == renewed.serial_hex and kes.renew_requested_at is None
    assert kes.previous_fingerprint is not None and kes.previous_fingerprint != kes.cert_fingerprint
    async with db.session() as session:
        old = await session.scalar(
            select(IssuedCertificateRecord).where(IssuedCertificateRecord.serial == device.serial_hex)
        )
        new = await session.scalar(
            select(IssuedCertificateRecord).where(IssuedCertificateRecord.serial == renewed.serial_hex)
        )
    assert old is not None and old.status == CertStatus.SUPERSEDED.value
    assert new is not None and new.renews_serial == device.serial_hex and new.user_id == device.user_id
    # Both certificates are this device's: the old one (retrying the renewal it made) and the new one.
    async with kes_client(server, config, device) as client:
        retry = await client.post("/kes/v1/certificate", json=renewed_request)
    assert retry.status_code == 200 and retry.json()["certificate"].encode() == renewed.certificate
    async with kes_client(server, config, renewed) as client:
        answer = await client.post("/kes/v1/certificate", json=_renewal())
    assert answer.status_code == 200, answer.text
    # That renewal was made with the new certificate: the old one is unbound now.
    async with kes_client(server, config, device) as client:
        gone = await client.post("/kes/v1/certificate", json=_renewal())
    assert (gone.status_code, error_code(gone)) == (403, "certificate_not_bound")


async def test_a_retried_renewal_returns_the_same_certificate(
    server: Server, config: Config, db: Database
) -> None:
    device = await enroll_device(server, config, db)
    msg = _renewal()
    async with kes_client(server, config, device) as client:
        first = await client.post("/kes/v1/certificate", json=msg)
        again = await client.post("/kes/v1/certificate", json=msg)
    assert first.status_code == again.status_code == 200
    assert first.json()["certificate"] == again.json()["certificate"]


async def test_unenroll_fails_pending_commands_clears_push_and_ends_the_binding(
    server: Server, config: Config, db: Database
) -> None:
    device = await enroll_device(server, config, db)
    async with db.transaction() as session:
        row = await session.get(Device, device.device_id)
        assert row is not None
        await command_enqueue.enqueue(
            session, row, "Block", {}, created_by="test", translators=server.ctx.translators
        )
    async with kes_client(server, config, device) as client:
        first = await client.post("/kes/v1/unenroll", json={**UNENROLL, "reason": "user"})
        again = await client.post("/kes/v1/unenroll", json=UNENROLL)
        after = await client.post("/kes/v1/certificate", json=_renewal())
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json() == {"v": 1, "status": "unenrolled"}
    assert (after.status_code, error_code(after)) == (403, "device_not_managed")
    row, _ = await _state(db, device.device_id)
    assert row.status == DeviceStatus.UNMANAGED.value and row.push_token is None and not row.push_valid
    async with db.session() as session:
        command = await session.scalar(select(Command).where(Command.device_id == device.device_id))
        events = (await session.scalars(select(Event).where(Event.type == "kes_device_unenrolled"))).all()
    assert command is not None and command.status == "failed"
    assert len(events) == 1 and events[0].body["commands_failed"] == 1 and events[0].body["reason"] == "user"


async def test_the_renewer_sets_the_flag_the_sync_answers(
    server: Server, config: Config, db: Database
) -> None:
    device: EnrolledDevice = await enroll_device(server, config, db)
    async with db.transaction() as session:
        row = await session.get(Device, device.device_id)
        record = await session.scalar(
            select(IssuedCertificateRecord).where(IssuedCertificateRecord.serial == device.serial_hex)
        )
        assert row is not None and record is not None
        step = await KesRenewer().prepare_renewal(row, record)
        note = await step(session, row, record)
    assert "renew" in note
    _, kes = await _state(db, device.device_id)
    assert kes.renew_requested_at is not None
    assert kes_url(server).startswith("https://")
