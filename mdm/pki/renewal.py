"""Automatic renewal before expiry, and the seam where protocols plug in how a device renews.

The renewal worker (every ``pki.renewal_check_seconds``) does three things:

1. marks certificates past their end ``expired`` (``cert_expired`` for those still valid);
2. emits ``cert_expiring`` once per certificate entering its type's renewal window
   (``renewal_days`` of the issuance rule; server certificates and types with automatic renewal
   off get a fixed ``NOTICE_DAYS`` notice);
3. for certificates bound to a device (``device_id``) of a type with ``renewal_days > 0``, asks
   the device's protocol to renew through the registered ``Renewer``, and asks again every
   ``pki.renewal_retry_hours`` until a new certificate replaces it (``cert_renewal_requested``).

A protocol plugs in with ``register_renewer(Protocol.IOS, renewer)``. The renewer acts inside the
worker's transaction (queue a command, set a flag the next sync returns); when the device later
presents its new request, the protocol issues through ``issuance.issue`` with
``renews_serial=<old serial>``, which records the new certificate, marks the old one
``superseded`` and emits ``cert_renewed``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol as TypingProtocol

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core import events
from mdm.db.models import Device, DeviceStatus, Protocol, Severity
from mdm.pki import rules
from mdm.pki.tables import CertStatus, CertType, IssuedCertificateRecord
from mdm.server.context import ServerContext

log = logging.getLogger(__name__)

NOTICE_DAYS = 30
BATCH = 500


class RenewalUnavailable(Exception):
    """This device cannot be asked to renew now (e.g. no push token); retried later."""


class Renewer(TypingProtocol):
    async def request_renewal(
        self, ctx: ServerContext, session: AsyncSession, device: Device, certificate: IssuedCertificateRecord
    ) -> str:
        """Ask ``device`` for a replacement of ``certificate`` within ``session`` and return a short
        note for the event (e.g. ``"InstallProfile queued"``). Raise RenewalUnavailable to skip."""
        ...


_RENEWERS: dict[int, Renewer] = {}


def _protocol(protocol: Protocol | int | str) -> int:
    if isinstance(protocol, str):
        return Protocol[protocol.upper()].value
    return int(protocol)


def register_renewer(protocol: Protocol | int | str, renewer: Renewer) -> None:
    """``protocol``: ``Protocol.IOS``/``"ios"``, ``Protocol.KES``/``"kes"``. One renewer per protocol."""
    _RENEWERS[_protocol(protocol)] = renewer


def unregister_renewer(protocol: Protocol | int | str) -> None:
    _RENEWERS.pop(_protocol(protocol), None)


def renewer_for(protocol: int) -> Renewer | None:
    return _RENEWERS.get(protocol)


@dataclass
class RenewalReport:
    expired: int = 0
    expiring: int = 0
    requested: int = 0
    unrenewable: int = 0
    failed: int = 0


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


async def _expire(session: AsyncSession, now: datetime, report: RenewalReport) -> None:
    rows = (
        await session.scalars(
            select(IssuedCertificateRecord)
            .where(
                IssuedCertificateRecord.status.in_([CertStatus.VALID.value, CertStatus.SUPERSEDED.value]),
                IssuedCertificateRecord.not_after <= now,
            )
            .limit(BATCH)
            .with_for_update(skip_locked=True)
        )
    ).all()
    for record in rows:
        if record.status == CertStatus.VALID.value:
            events.emit(
                session, "cert_expired", Severity.WARNING, device_id=record.device_id, user_id=record.user_id,
                serial=record.serial, cert_type=record.type, subject=record.subject,
                not_after=_iso(record.not_after),
            )
        record.status = CertStatus.EXPIRED.value
        report.expired += 1


def _iso(value: datetime) -> str:
    return (_aware(value) or value).isoformat()


async def renewal_pass(ctx: ServerContext, now: datetime | None = None) -> RenewalReport:
    """One sweep: expire, notify, ask for renewals. Safe to run on several replicas at once."""
    now = now or datetime.now(UTC)
    report = RenewalReport()
    retry = timedelta(hours=ctx.config.pki.renewal_retry_hours)
    async with ctx.db.transaction() as session:
        await _expire(session, now, report)
        windows: list[tuple[str, int, bool]] = [
            (r.type, r.renewal_days or NOTICE_DAYS, r.renewal_days > 0)
            for r in await rules.all_rules(session)
        ]
    windows.append((CertType.SERVER.value, NOTICE_DAYS, False))
    for cert_type, days, automatic in windows:
        async with ctx.db.session() as session:
            due = or_(
                IssuedCertificateRecord.expiring_notified_at.is_(None),
                IssuedCertificateRecord.renewal_requested_at.is_(None),
                IssuedCertificateRecord.renewal_requested_at <= now - retry,
            ) if automatic else IssuedCertificateRecord.expiring_notified_at.is_(None)
            stmt = select(IssuedCertificateRecord.id).where(
                IssuedCertificateRecord.status == CertStatus.VALID.value,
                IssuedCertificateRecord.type == cert_type,
                IssuedCertificateRecord.not_after > now,
                IssuedCertificateRecord.not_after <= now + timedelta(days=days),
                due,
            )
            if automatic:
                # Certificates without a device only need the notice.
                stmt = stmt.where(
                    or_(IssuedCertificateRecord.device_id.is_not(None),
                        IssuedCertificateRecord.expiring_notified_at.is_(None))
                )
            stmt = stmt.order_by(IssuedCertificateRecord.not_after).limit(BATCH)
            ids = list((await session.scalars(stmt)).all())
        for cert_id in ids:
            await _handle(ctx, cert_id, now, retry, automatic, report)
    if report.expired or report.expiring or report.requested or report.failed:
        log.info(
            "renewal pass: %d expired, %d entered their renewal window, %d renewals requested, "
            "%d not renewable now, %d failed",
            report.expired, report.expiring, report.requested, report.unrenewable, report.failed,
        )
    return report


async def _handle(
    ctx: ServerContext, cert_id: int, now: datetime, retry: timedelta, automatic: bool, report: RenewalReport
) -> None:
    noticed = report.expiring
    try:
        async with ctx.db.transaction() as session:
            record = await _claim(session, cert_id)
            if record is None:
                return
            _notify(session, record, now, report)
            if automatic and record.device_id is not None and _retry_due(record, now, retry):
                record.renewal_requested_at = now
                device = await session.get(Device, record.device_id)
                await _ask(ctx, session, device, record, report)
    except Exception:
        log.exception("renewal of certificate id %d failed; retrying after pki.renewal_retry_hours", cert_id)
        report.failed += 1
        report.expiring = noticed  # the notice was rolled back with the rest; counted again below
        # Keep the bookkeeping (notice, retry time) so a failing renewer is not called every pass.
        async with ctx.db.transaction() as session:
            record = await _claim(session, cert_id)
            if record is not None:
                _notify(session, record, now, report)
                record.renewal_requested_at = now


async def _claim(session: AsyncSession, cert_id: int) -> IssuedCertificateRecord | None:
    record = await session.scalar(
        select(IssuedCertificateRecord)
        .where(
            IssuedCertificateRecord.id == cert_id,
            IssuedCertificateRecord.status == CertStatus.VALID.value,
        )
        .with_for_update(skip_locked=True)
    )
    return record


def _retry_due(record: IssuedCertificateRecord, now: datetime, retry: timedelta) -> bool:
    last = _aware(record.renewal_requested_at)
    return last is None or last <= now - retry


def _notify(
    session: AsyncSession, record: IssuedCertificateRecord, now: datetime, report: RenewalReport
) -> None:
    if record.expiring_notified_at is not None:
        return
    record.expiring_notified_at = now
    not_after = _aware(record.not_after) or now
    events.emit(
        session, "cert_expiring", Severity.WARNING, device_id=record.device_id, user_id=record.user_id,
        serial=record.serial, cert_type=record.type, subject=record.subject, not_after=not_after.isoformat(),
        days_left=max(0, (not_after - now).days),
    )
    report.expiring += 1


async def _ask(
    ctx: ServerContext, session: AsyncSession, device: Device | None, record: IssuedCertificateRecord,
    report: RenewalReport,
) -> None:
    if device is None or device.status != DeviceStatus.OK.value:
        report.unrenewable += 1
        return
    renewer = renewer_for(device.protocol)
    if renewer is None:
        log.warning(
            "certificate %s of device %d is due for renewal but protocol %s has no renewer",
            record.serial, device.id, Protocol(device.protocol).name.lower(),
        )
        report.unrenewable += 1
        return
    try:
        note = await renewer.request_renewal(ctx, session, device, record)
    except RenewalUnavailable as exc:
        log.info("certificate %s of device %d: renewal not possible now: %s", record.serial, device.id, exc)
        report.unrenewable += 1
        return
    events.emit(
        session, "cert_renewal_requested", Severity.INFO, device_id=device.id, user_id=record.user_id,
        serial=record.serial, cert_type=record.type, protocol=Protocol(device.protocol).name.lower(),
        note=note,
    )
    report.requested += 1


async def renewal_worker(ctx: ServerContext) -> None:
    while True:
        try:
            await renewal_pass(ctx)
        except Exception:
            log.exception("renewal pass failed")
        await asyncio.sleep(ctx.config.pki.renewal_check_seconds)
