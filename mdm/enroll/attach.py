"""Which enrollment a device came from, for the check-in service at its first Authenticate."""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy.ext.asyncio import AsyncSession

from mdm.enroll import store
from mdm.enroll.profiles import SCEP_PURPOSE
from mdm.enroll.store import Attached
from mdm.pki.issuance import serial_hex

Known = tuple[Attached | None, str | None]  # what ``store.ENROLLMENT_OF_SERIAL`` read


def normalized_serial(cert_serial: int | str) -> str:
    """The serial as enrollments and SCEP transactions record it (lower-case hex, no leading 0)."""
    return serial_hex(cert_serial) if isinstance(cert_serial, int) else cert_serial.lower().lstrip("0")


async def enrollment_of_certificate(
    session: AsyncSession, cert_serial: int | str, known: Known | None = None
) -> Attached | None:
    """The enrollment that issued this identity, if one did: a PKCS#12 identity by its serial, a
    SCEP identity through the one-time challenge its SCEP request used (made for one enrollment).
    Both are asked in one statement (or were already, ``known``, by the caller's own read of
    ``store.ENROLLMENT_OF_SERIAL`` in this transaction); a SCEP identity's enrollment is then
    read by its id."""
    if known is None:
        known = await store.enrollment_or_purpose_of_serial(session, normalized_serial(cert_serial))
    enrollment, purpose = known
    if enrollment is not None:
        return enrollment
    if purpose is None or not purpose.startswith(SCEP_PURPOSE) or not purpose[len(SCEP_PURPOSE):].isdigit():
        return None
    return await store.attached_by_id(session, int(purpose[len(SCEP_PURPOSE):]))


async def attach_device(
    session: AsyncSession,
    *,
    device_id: int,
    cert_serial: int | str | None = None,
    user_id: int | None = None,
    known: Known | None = None,
) -> Attached | None:
    """For the check-in service at a device's first Authenticate: the enrollment the device came
    from (user, ``mdm_profile_identifier``, topic), recorded with its device id.

    PKCS#12 identities are found by certificate serial, SCEP identities by the challenge of their
    SCEP request; SCEP identities without one fall back to the user's most recent downloaded SCEP
    enrollment not yet bound. ``known``: the serial's look-up, read already in this transaction.
    """
    enrollment = None
    if cert_serial is not None:
        enrollment = await enrollment_of_certificate(session, cert_serial, known)
    if enrollment is None and user_id is not None:
        enrollment = await store.latest_unbound_scep_enrollment(session, user_id)
    if enrollment is not None and enrollment.device_id is None:
        await store.set_enrollment_device(session, enrollment.id, device_id)
        enrollment = replace(enrollment, device_id=device_id)
    return enrollment
