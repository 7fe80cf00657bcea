"""Authenticate (``PUT /mdm/checkin``): a device enrolls, or re-binds its UDID to an identity.

Identity problems raise ``IdentityError`` before anything is written: a certificate bound to
another device, issued to another device, older than the bound one, a UDID still managed under
another identity (``takeover.py``), another user than the publishing proxy's. The device and its
binding are read as detached snapshots and written with Core statements (only what changed), the
events emitted in the same transaction in the order the ORM version wrote them; a re-bound
identity or a changed status drops the cached binding at commit, here and on the other replicas.
On PostgreSQL a device checking in again under its bound identity is first tried as one guarded
statement outside a transaction block (``checkin_authenticate_direct``); anything else, or rows
that changed in between, come here.
"""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core import events
from mdm.core.event_types import DEVICE_STATUS_CHANGED
from mdm.db.models import Device, DeviceStatus, Protocol, utcnow
from mdm.db.prepared import autocommits
from mdm.enroll.attach import Known, attach_device, normalized_serial
from mdm.ios import checkin_authenticate_direct, store_checkin, store_checkin_writes, takeover
from mdm.ios.checkin_authenticate_direct import rebound
from mdm.ios.checkin_authenticate_rules import (
    apply_enrollment,
    apply_message,
    authenticated_event,
    binding_changes,
    not_replayed_since,
    same_owner,
)
from mdm.ios.identity import Identity, IdentityError
from mdm.ios.messages import CheckinMessage
from mdm.ios.service import IosService
from mdm.ios.state import BINDING_CHANNEL
from mdm.ios.tables import IosDevice


async def authenticate(
    svc: IosService, identity: Identity, msg: CheckinMessage, owner: int | None
) -> None:
    if autocommits(svc.engine) and await checkin_authenticate_direct.authenticated(svc, identity, msg, owner):
        return  # (PostgreSQL: a device checking in again, in one guarded statement)
    try:
        await _authenticate(svc, identity, msg, owner)
    except IntegrityError:
        # A concurrent Authenticate for the same UDID created the device first; this one updates it.
        await _authenticate(svc, identity, msg, owner)


async def _checked(
    session: AsyncSession, identity: Identity, msg: CheckinMessage, owner: int | None
) -> tuple[Device | None, IosDevice | None, store_checkin.CertificateRecord | None, Known]:
    """The device, its binding, the certificate's record and which enrollment issued it (as
    ``attach_device`` takes it), once every identity rule passed."""
    cert, fingerprint = identity.cert, identity.fingerprint
    # A device checking in again: its binding, certificate record, device and binding in one read.
    bound_to, record, device, ios, known = await store_checkin.checked_rows(
        session, fingerprint, cert.serial_hex, msg.identifier, normalized_serial(cert.serial_hex)
    )
    if device is None:
        device = await store_checkin.device_by_identifier(session, msg.identifier)
        ios = await store_checkin.binding_row(session, device.id) if device is not None else None
    if bound_to is not None and (device is None or bound_to != device.id):
        raise IdentityError(
            "identity_in_use", "this certificate is already bound to another device", serial=cert.serial_hex
        )
    other = record is not None and record.device_id is not None
    if other and (device is None or record is None or record.device_id != device.id):
        raise IdentityError(
            "issued_to_other_device", "this certificate was issued to another device", serial=cert.serial_hex
        )
    if (
        ios is not None
        and ios.cert_fingerprint != fingerprint
        and ios.cert_not_before is not None
        and cert.not_before < ios.cert_not_before
    ):
        # A replayed Authenticate signed with an identity older than the bound one.
        raise IdentityError(
            "stale_identity", "an older certificate cannot replace the bound one", serial=cert.serial_hex
        )
    if device is not None:
        await takeover.check(session, device=device, ios=ios, identity=identity, record=record, known=known)
    if ios is not None and ios.cert_fingerprint == fingerprint:
        not_replayed_since(ios.last_signed_at, identity)
    same_owner(owner, device.user_id if device is not None else None)
    same_owner(owner, record.user_id if record is not None else None)
    return device, ios, record, known


async def _authenticate(
    svc: IosService, identity: Identity, msg: CheckinMessage, owner: int | None
) -> None:
    cert = identity.cert
    fingerprint = identity.fingerprint
    old_fingerprint: bytes | None = None
    async with svc.db.transaction(inline=True) as session:
        device, ios, record, known = await _checked(session, identity, msg, owner)
        now = utcnow()
        fresh = device is None
        before = {} if device is None else store_checkin.device_values(device)
        enrolled = device is None or ios is None or device.status == DeviceStatus.UNMANAGED.value
        if device is None:
            device = Device(
                protocol=Protocol.IOS.value,
                identifier=msg.identifier,
                status=DeviceStatus.OK.value,
                enrolled_at=now,
                inventory={},
                attributes={},
            )
        elif enrolled:
            device.enrolled_at = now
        previous_status = device.status
        attributes = apply_message(device, identity, msg, record, owner)
        if previous_status != device.status:
            await store_checkin.insert_event(session, events.event_values(
                DEVICE_STATUS_CHANGED, device_id=device.id, status=device.status,
                previous=previous_status, reason="enrolled",
            ))  # fmt: skip
            await store_checkin.binding_changed(session, device.id, BINDING_CHANNEL)
        if fresh:
            values = store_checkin.device_values(device)
            del values["id"]
            values.update(protocol=device.protocol, inventory={})
            device.id = await store_checkin.insert_device(session, values)
            before = store_checkin.device_values(device)
        # The enrollment this identity came from: owner and the MDM profile's identifier (the
        # target of a later Remove command).
        enrollment = await attach_device(
            session, device_id=device.id, cert_serial=cert.serial_hex, user_id=device.user_id, known=known
        )
        if record is not None and record.device_id != device.id:
            await store_checkin.link_certificate(session, record.id, device.id)
        apply_enrollment(device, attributes, enrollment, owner)
        after = store_checkin.device_values(device)
        device_changes = {c: v for c, v in after.items() if before.get(c, v) != v}
        event = authenticated_event(device, enrolled, identity)
        if ios is None:
            await store_checkin.update_device(session, device.id, device_changes)
            await store_checkin.insert_binding(
                session,
                {
                    "device_id": device.id,
                    "cert_fingerprint": fingerprint,
                    "cert_not_before": cert.not_before,
                    "topic": msg.get("Topic"),
                    "awaiting_configuration": False,
                    "bound_at": now,
                    "updated_at": now,
                    "last_signed_at": identity.signed_at,
                },
            )
            await store_checkin.insert_event(session, event)
        else:
            old_fingerprint = ios.cert_fingerprint
            changes = binding_changes(ios, identity, msg, now)
            if old_fingerprint != fingerprint:
                await store_checkin.binding_changed(session, device.id, BINDING_CHANNEL)
            # (A device checking in again: on PostgreSQL its writes and event are one statement.)
            await store_checkin_writes.write_with_event(
                session, device.id, device=device_changes, binding=changes, event=event
            )
        generation = svc.bindings.generation  # read before the commit
    rebound(svc, fingerprint, old_fingerprint, device, generation)
