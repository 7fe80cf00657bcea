"""The KES ``Renewer`` (``mdm.pki.renewers``): the renewal worker asks a device for a new
certificate by setting ``kes_devices.renew_requested_at``; the sync answers
``renew_certificate: true`` while it is set, the agent renews over mutual TLS
(``POST /kes/v1/certificate`` without a token) and the renewal clears it."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core import events
from mdm.db.models import Device, utcnow
from mdm.kes import store
from mdm.kes.event_types import KES_RENEWAL_REQUESTED
from mdm.kes.identity import ACTIVE
from mdm.pki.renewers import RenewalStep, RenewalUnavailable
from mdm.pki.tables import IssuedCertificateRecord


class KesRenewer:
    """``pki.renewers.Renewer`` of ``Protocol.KES``."""

    async def prepare_renewal(self, device: Device, certificate: IssuedCertificateRecord) -> RenewalStep:
        return self._request  # nothing slow: a flag in the transaction

    async def _request(
        self, session: AsyncSession, device: Device, certificate: IssuedCertificateRecord
    ) -> str:
        kes = await store.kes_device(session, device.id, lock=True)
        if kes is None or kes.cert_fingerprint is None or device.status not in ACTIVE:
            raise RenewalUnavailable("the device is not bound to a certificate (not enrolled, or it left)")
        if device.cert_serial is not None and device.cert_serial != certificate.serial:
            raise RenewalUnavailable(
                f"certificate {certificate.serial} is not the device's current one ({device.cert_serial})"
            )
        if kes.renew_requested_at is None:
            kes.renew_requested_at = utcnow()
            events.emit(
                session,
                KES_RENEWAL_REQUESTED,
                device_id=device.id,
                user_id=device.user_id,
                identifier=device.identifier,
                cert_serial=certificate.serial,
            )
        return "renew_certificate set: the agent renews at its next sync"
