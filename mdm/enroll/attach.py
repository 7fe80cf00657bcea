"""Which enrollment a device came from, for the check-in service at its first Authenticate."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from mdm.enroll import store
from mdm.enroll.profiles import SCEP_PURPOSE
from mdm.enroll.tables import Enrollment
from mdm.pki.issuance import serial_hex


async def enrollment_of_certificate(session: AsyncSession, cert_serial: int | str) -> Enrollment | None:
    """The enrollment that issued this identity, if one did: a PKCS#12 identity by its serial, a
    SCEP identity through the one-time challenge its SCEP request used (made for one enrollment)."""
    serial = serial_hex(cert_serial) if isinstance(cert_serial, int) else cert_serial.lower().lstrip("0")
    enrollment = await store.enrollment_by_serial(session, serial)
    if enrollment is not None:
        return enrollment
    purpose = await store.scep_purpose_of_serial(session, serial)
    if purpose is None or not purpose.startswith(SCEP_PURPOSE) or not purpose[len(SCEP_PURPOSE):].isdigit():
        return None
    return await store.enrollment_by_id(session, int(purpose[len(SCEP_PURPOSE):]))


async def attach_device(
    session: AsyncSession, *, device_id: int, cert_serial: int | str | None = None, user_id: int | None = None
) -> Enrollment | None:
    """For the check-in service at a device's first Authenticate: the enrollment the device came
    from (user, ``mdm_profile_identifier``, topic), recorded with its device id.

    PKCS#12 identities are found by certificate serial, SCEP identities by the challenge of their
    SCEP request; SCEP identities without one fall back to the user's most recent downloaded SCEP
    enrollment not yet bound.
    """
    enrollment = None
    if cert_serial is not None:
        enrollment = await enrollment_of_certificate(session, cert_serial)
    if enrollment is None and user_id is not None:
        enrollment = await store.latest_unbound_scep_enrollment(session, user_id)
    if enrollment is not None and enrollment.device_id is None:
        enrollment.device_id = device_id
    return enrollment
