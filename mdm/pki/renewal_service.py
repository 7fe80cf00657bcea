"""Automatic renewal before expiry: one sweep of the renewal worker (``mdm.pki.renewal``).

A sweep does three things:

1. marks certificates past their end ``expired`` (``cert_expired`` for those still valid);
2. emits ``cert_expiring`` once per certificate entering its type's renewal window
   (``renewal_days`` of the issuance rule; server certificates and types with automatic renewal
   off get a fixed ``NOTICE_DAYS`` notice);
3. for certificates bound to a device (``device_id``) of a type with ``renewal_days > 0``, asks
   the device's protocol to renew through its ``Renewer`` (``mdm.pki.renewers``), and asks again
   every ``retry`` until a new certificate replaces it (``cert_renewal_requested``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core import events
from mdm.db.engine import Database
from mdm.db.models import Device, DeviceStatus, Protocol
from mdm.pki import rules, store, store_renewal
from mdm.pki.event_types import CERT_EXPIRED, CERT_EXPIRING, CERT_RENEWAL_REQUESTED
from mdm.pki.renewers import RenewalUnavailable, Renewer
from mdm.pki.tables import CertStatus, CertType, IssuedCertificateRecord

log = logging.getLogger("mdm.pki.renewal")

NOTICE_DAYS = 30
BATCH = 500
# Expired certificates marked per write transaction: the sweep's reads run outside the write
# transactions (on SQLite they held the server's one writer, 1.2-2.7 s seen on a busy server
# with nothing to do), and each write re-checks what it was given.
EXPIRE_CHUNK = 100

RenewerLookup = Callable[[int], Renewer | None]


@dataclass
class RenewalReport:
    expired: int = 0
    expiring: int = 0
    requested: int = 0
    unrenewable: int = 0
    failed: int = 0


class RenewalSweep:
    """Sweeps over the certificates of ``db``; ``renewer_for`` gives a protocol's renewer."""

    def __init__(self, db: Database, renewer_for: RenewerLookup) -> None:
        self.db = db
        self.renewer_for = renewer_for

    async def run(self, now: datetime, retry: timedelta) -> RenewalReport:
        """One sweep: expire, notify, ask for renewals. Safe to run on several replicas at once."""
        report = RenewalReport()
        async with self.db.session() as session:
            expired = await store_renewal.expired_ids(session, now, BATCH)
            windows: list[tuple[str, int, bool]] = [
                (r.type, r.renewal_days or NOTICE_DAYS, r.renewal_days > 0)
                for r in await rules.all_rules(session)
            ]
        for start in range(0, len(expired), EXPIRE_CHUNK):
            async with self.db.transaction(inline=True) as session:
                await _expire(session, now, expired[start : start + EXPIRE_CHUNK], report)
        windows.append((CertType.SERVER.value, NOTICE_DAYS, False))
        for cert_type, days, automatic in windows:
            async with self.db.session() as session:
                ids = await store_renewal.due_ids(
                    session, cert_type, now, timedelta(days=days), retry, automatic, BATCH
                )
            for cert_id in ids:
                await self._handle(cert_id, now, retry, automatic, report)
        if report.expired or report.expiring or report.requested or report.failed:
            log.info(
                "renewal pass: %d expired, %d entered their renewal window, %d renewals requested, "
                "%d not renewable now, %d failed",
                report.expired, report.expiring, report.requested, report.unrenewable, report.failed,
            )
        return report

    async def _handle(
        self, cert_id: int, now: datetime, retry: timedelta, automatic: bool, report: RenewalReport
    ) -> None:
        """Notice and claim (one transaction), prepare outside any transaction, then ask the
        device in a second one that finds the certificate still valid: a renewer's slow part
        (a key pair, an enterprise CA across the network) never holds the write transaction."""
        asked: tuple[Renewer, Device, IssuedCertificateRecord] | None = None
        async with self.db.transaction() as session:
            record = await store_renewal.claim_valid(session, cert_id)
            if record is None:
                return
            _notify(session, record, now, report)
            if automatic and record.device_id is not None and _retry_due(record, now, retry):
                # Claimed until the retry time, also if what follows fails: a failing renewer is
                # not called every pass, and no other replica asks meanwhile.
                record.renewal_requested_at = now
                device = await store.device(session, record.device_id)
                renewer = self._renewer(device, record, report)
                if renewer is not None and device is not None:
                    asked = renewer, device, record
        if asked is None:
            return
        renewer, device, record = asked
        try:
            step = await renewer.prepare_renewal(device, record)
            async with self.db.transaction() as session:
                now_record = await store_renewal.claim_valid(session, cert_id)
                now_device = await store.device(session, device.id)
                if now_record is None or now_device is None or now_device.status != DeviceStatus.OK.value:
                    # Revoked, renewed or deleted while it was prepared: whatever the renewer made
                    # (a key that never left this process) is dropped.
                    report.unrenewable += 1
                    return
                note = await step(session, now_device, now_record)
                events.emit(
                    session, CERT_RENEWAL_REQUESTED, device_id=device.id, user_id=now_record.user_id,
                    serial=now_record.serial, cert_type=now_record.type,
                    protocol=Protocol(now_device.protocol).name.lower(), note=note,
                )
                report.requested += 1
        except RenewalUnavailable as exc:
            log.info(
                "certificate %s of device %d: renewal not possible now: %s", record.serial, device.id, exc
            )
            report.unrenewable += 1
        except Exception:
            log.exception(
                "renewal of certificate id %d failed; retrying after pki.renewal_retry_hours", cert_id
            )
            report.failed += 1

    def _renewer(
        self, device: Device | None, record: IssuedCertificateRecord, report: RenewalReport
    ) -> Renewer | None:
        if device is None or device.status != DeviceStatus.OK.value:
            report.unrenewable += 1
            return None
        renewer = self.renewer_for(device.protocol)
        if renewer is None:
            log.warning(
                "certificate %s of device %d is due for renewal but protocol %s has no renewer",
                record.serial, device.id, Protocol(device.protocol).name.lower(),
            )
            report.unrenewable += 1
        return renewer


async def _expire(session: AsyncSession, now: datetime, ids: list[int], report: RenewalReport) -> None:
    for record in await store_renewal.claim_expired(session, now, ids):
        if record.status == CertStatus.VALID.value:
            events.emit(
                session, CERT_EXPIRED, device_id=record.device_id, user_id=record.user_id,
                serial=record.serial, cert_type=record.type, subject=record.subject,
                not_after=record.not_after.isoformat(),
            )
        record.status = CertStatus.EXPIRED.value
        report.expired += 1


def _retry_due(record: IssuedCertificateRecord, now: datetime, retry: timedelta) -> bool:
    last = record.renewal_requested_at
    return last is None or last <= now - retry


def _notify(
    session: AsyncSession, record: IssuedCertificateRecord, now: datetime, report: RenewalReport
) -> None:
    if record.expiring_notified_at is not None:
        return
    record.expiring_notified_at = now
    not_after = record.not_after
    events.emit(
        session, CERT_EXPIRING, device_id=record.device_id, user_id=record.user_id,
        serial=record.serial, cert_type=record.type, subject=record.subject, not_after=not_after.isoformat(),
        days_left=max(0, (not_after - now).days),
    )
    report.expiring += 1
