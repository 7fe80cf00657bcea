"""The check-in storm path (issue 12): Authenticate caches the binding it made, so the TokenUpdate
that follows needs no look-up, and a deletion still cuts the device off at once; the device
channel's TokenUpdate writes only what changed."""

from __future__ import annotations

import hashlib

import httpx
from cryptography.hazmat.primitives.serialization import Encoding
from ios_support import Phone, new_phone
from sqlalchemy import select

from mdm.db.engine import Database
from mdm.db.models import Device, Event
from mdm.ios.plugin import service
from mdm.ios.tables import IosDevice
from mdm.pki import services as pki_services
from mdm.server.runtime import Server


async def _device(db: Database, udid: str) -> Device:
    async with db.session() as session:
        device = await session.scalar(select(Device).where(Device.identifier == udid))
        assert device is not None
        return device


async def _token_events(db: Database) -> list[Event]:
    async with db.session() as session:
        stmt = select(Event).where(Event.type == "push_token_updated").order_by(Event.id)
        return list((await session.scalars(stmt)).all())


async def test_authenticate_caches_its_binding_and_a_deletion_still_cuts_off(
    api: httpx.AsyncClient, ios: httpx.AsyncClient, server: Server, db: Database
) -> None:
    svc = service(server.ctx)
    phone = await new_phone(db, pki_services.ca(server.ctx))
    fingerprint = hashlib.sha256(phone.cert.public_bytes(Encoding.DER)).digest()
    assert (await phone.checkin(ios, phone.authenticate())).status_code == 200
    device = await _device(db, phone.udid)
    cached = svc.bindings.get(fingerprint)
    assert cached is not None and (cached.device_id, cached.identifier, cached.status) == (
        device.id,
        phone.udid,
        "ok",
    )
    # Deleted before its TokenUpdate: the binding Authenticate cached goes with the device.
    assert (await api.delete(f"/api/v1/devices/{device.id}")).status_code == 204
    assert svc.bindings.get(fingerprint) is None
    response = await phone.checkin(ios, phone.token_update())
    assert response.status_code == 400
    assert response.json()["error"]["details"]["reason"] == "unbound"


async def test_token_update_writes_only_what_changed(
    ios: httpx.AsyncClient, server: Server, db: Database
) -> None:
    phone = await new_phone(db, pki_services.ca(server.ctx))
    assert (await phone.checkin(ios, phone.authenticate())).status_code == 200
    first = phone.token_update(token=b"\x01" * 32, UnlockToken=b"u1", AwaitingConfiguration=True)
    assert (await phone.checkin(ios, first)).status_code == 200
    device = await _device(db, phone.udid)
    assert (device.push_token, device.push_valid) == ("01" * 32, True)
    changed_at = device.push_changed_at
    assert changed_at is not None
    # The same again: nothing written, no event.
    assert (await phone.checkin(ios, first)).status_code == 200
    assert len(await _token_events(db)) == 1
    # Only AwaitingConfiguration: recorded, the token's change time kept.
    second = phone.token_update(token=b"\x01" * 32, AwaitingConfiguration=False)
    assert (await phone.checkin(ios, second)).status_code == 200
    device = await _device(db, phone.udid)
    async with db.session() as session:
        row = await session.get(IosDevice, device.id)
    assert row is not None and (row.awaiting_configuration, row.unlock_token) == (False, b"u1")
    assert device.push_changed_at == changed_at
    # A new token: changed, and its time moves.
    third = phone.token_update(token=b"\x02" * 32)
    assert (await phone.checkin(ios, third)).status_code == 200
    device = await _device(db, phone.udid)
    assert device.push_token == "02" * 32 and device.push_changed_at is not None
    assert device.push_changed_at >= changed_at
    bodies = [e.body for e in await _token_events(db)]
    assert [(b["changed"], b["unlock_token"]) for b in bodies] == [
        (True, True),
        (False, False),
        (True, False),
    ]


async def test_concurrent_authenticates_each_cache_their_binding(server: Server, db: Database) -> None:
    """A storm: Authenticates of many devices commit while the others' are awaited, each dropping
    its own fingerprint; each still caches its binding, so no TokenUpdate reads it again."""
    import asyncio

    from mdm.ios import checkin
    from mdm.ios.messages import load_plist, parse_checkin

    svc = service(server.ctx)
    phones = [await new_phone(db, pki_services.ca(server.ctx)) for _ in range(12)]

    async def authenticate(phone: Phone) -> None:
        body, headers = phone.signed({"UDID": phone.udid, **phone.authenticate()})
        identity = svc.resolver.from_signature(headers["Mdm-Signature"], body)
        await checkin.handle(svc, identity, parse_checkin(load_plist(body)))

    for _ in range(2):  # enrolled, then checking in again (a fleet back after an outage)
        await asyncio.gather(*(authenticate(p) for p in phones))
        fingerprints = [hashlib.sha256(p.cert.public_bytes(Encoding.DER)).digest() for p in phones]
        cached = [svc.bindings.get(fp) for fp in fingerprints]
        assert all(b is not None for b in cached)
