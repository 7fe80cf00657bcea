"""Which identity may take over a UDID in ``Authenticate``.

A UDID bound to an active device (status ok, removing or remove_failed, with a live binding)
moves to another certificate only when that certificate's enrollment is

- one of the device owner's enrollments, or
- one an administrator made for that very device (``Enrollment.for_device_id``),

or when the old binding has ended: the device checked out, was removed or wiped (then it is not
active), was deleted (then there is no device), or its bound certificate was revoked or expired.
Anything else is someone else's identity (any unused one-time link gives one) claiming a device
that is still managed: ``IdentityError("takeover")``, raised before anything is written.

A certificate not issued through an enrollment counts as the owner's when our CA issued it to
that user (``certificates.user_id``). A device without an owner can only be taken over through an
enrollment made for it.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from mdm.db.models import Device, DeviceStatus, utcnow
from mdm.enroll.attach import Known, enrollment_of_certificate
from mdm.ios import store
from mdm.ios.identity import Identity, IdentityError
from mdm.ios.store_checkin import CertificateRecord
from mdm.ios.tables import IosDevice
from mdm.pki.tables import CertStatus

ACTIVE = frozenset({DeviceStatus.OK.value, DeviceStatus.REMOVING.value, DeviceStatus.REMOVE_FAILED.value})
_ENDED_CERTIFICATE = frozenset({CertStatus.REVOKED.value, CertStatus.EXPIRED.value})


async def check(
    session: AsyncSession,
    *,
    device: Device,
    ios: IosDevice | None,
    identity: Identity,
    record: CertificateRecord | None,
    known: Known | None = None,
) -> None:
    """Raise unless ``identity`` may replace the identity ``device`` is bound to."""
    if ios is None or device.status not in ACTIVE or ios.cert_fingerprint == identity.fingerprint:
        return
    if await _bound_certificate_ended(session, device):
        return
    enrollment = await enrollment_of_certificate(session, identity.cert.serial_hex, known)
    if enrollment is not None:
        if enrollment.for_device_id is not None:
            allowed = enrollment.for_device_id == device.id
        else:
            allowed = device.user_id is not None and enrollment.user_id == device.user_id
    else:
        allowed = record is not None and device.user_id is not None and record.user_id == device.user_id
    if not allowed:
        raise IdentityError(
            "takeover",
            "this device is enrolled with another identity; only an enrollment of the device's owner, "
            "or one made for this device, may replace it",
            serial=identity.cert.serial_hex,
            bound_serial=device.cert_serial,
            enrollment_id=enrollment.id if enrollment is not None else None,
        )


async def _bound_certificate_ended(session: AsyncSession, device: Device) -> bool:
    now = utcnow()
    if device.cert_not_after is not None and device.cert_not_after <= now:
        return True
    if device.cert_serial is None:
        return False
    row = await store.certificate_state(session, device.cert_serial)
    return row is not None and (row.status in _ENDED_CERTIFICATE or row.not_after <= now)
