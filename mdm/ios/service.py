"""The iOS service object built at start-up: configuration, caches and the binding look-up that
every check-in and command-channel request goes through."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncEngine

from mdm.core import events
from mdm.core.security_events import RejectionLog
from mdm.db.engine import Database
from mdm.db.models import Device, DeviceStatus, Protocol, Severity, utcnow
from mdm.ios.config import IosConfig
from mdm.ios.identity import LRU, Binding, BindingCache, Identity, IdentityError, IdentityResolver
from mdm.ios.state import LastSeen, QueueHint, track_bindings
from mdm.ios.tables import IosDevice
from mdm.pki.tables import CertStatus, IssuedCertificateRecord

log = logging.getLogger("mdm.ios")

_devices = Device.__table__.c
_ios = IosDevice.__table__.c
# Built once: the hot path's only query when the binding is not cached.
BINDING_STMT = (
    select(_devices.id, _devices.identifier, _devices.status)
    .select_from(IosDevice.__table__.join(Device.__table__, _devices.id == _ios.device_id))
    .where(_ios.cert_fingerprint == bindparam("fp"))
)


# The enrollment is over (removed by the Remove command): the identity may still send the
# CheckOut its removal triggers, nothing else. (An erased device keeps answering until it is gone;
# its binding only counts as ended for the takeover rule in ``takeover.py``.)
ENDED = frozenset({DeviceStatus.UNMANAGED.value})


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass
class IosService:
    db: Database
    config: IosConfig
    resolver: IdentityResolver
    bindings: BindingCache
    hint: QueueHint
    last_seen: LastSeen = field(default_factory=LastSeen)
    # Idle bodies repeat byte for byte per device: body -> parsed report (bounded).
    idle_reports: LRU = field(default_factory=lambda: LRU(10_000))
    extra: dict[str, Any] = field(default_factory=dict)
    # Security events of rejected requests: the first few verbatim, the rest aggregated.
    rejections: RejectionLog = field(default_factory=RejectionLog)

    def __post_init__(self) -> None:
        # Transactions on this database that end a binding drop it from this cache at commit.
        track_bindings(self.db.engine.sync_engine, self.bindings)

    @property
    def engine(self) -> AsyncEngine:
        return self.db.engine

    async def binding_of(self, identity: Identity, identifier: str, *, check_out: bool = False) -> Binding:
        """The enrollment this certificate is bound to; it must be the one the message names and
        still be managed (``check_out``: the CheckOut of a removed enrollment is let through)."""
        fingerprint = identity.fingerprint
        binding = self.bindings.get(fingerprint)
        if binding is None:
            generation = self.bindings.generation
            async with self.engine.connect() as conn:
                row = (await conn.execute(BINDING_STMT, {"fp": fingerprint})).first()
            if row is not None:
                binding = self.bindings.put(fingerprint, row.id, row.identifier, row.status, generation)
            else:
                binding = await self._renewed(identity, identifier)
        if binding.identifier != identifier:
            raise IdentityError(
                "mismatch",
                "the certificate is bound to another device than the one this message names",
                serial=identity.cert.serial_hex,
            )
        if binding.status in ENDED and not check_out:
            raise IdentityError(
                "binding_ended",
                f"the enrollment of this device has ended (device {binding.status}); enroll again",
                serial=identity.cert.serial_hex,
            )
        return binding

    async def _renewed(self, identity: Identity, identifier: str) -> Binding:
        """A certificate we issued to this very device (renewal) takes over its binding."""
        cert = identity.cert
        async with self.db.transaction() as session:
            device = await session.scalar(
                select(Device).where(Device.protocol == Protocol.IOS.value, Device.identifier == identifier)
            )
            ios = await session.get(IosDevice, device.id, with_for_update=True) if device else None
            record = await session.scalar(
                select(IssuedCertificateRecord).where(IssuedCertificateRecord.serial == cert.serial_hex)
            )
            # Only a newer certificate, issued by us to this device as the renewal of the one it is
            # bound to, may take over (not a superseded one, nor an identity the device was
            # re-enrolled away from).
            newer = ios is not None and (
                ios.cert_not_before is None
                or cert.not_before >= _aware(ios.cert_not_before)
            )
            if (
                device is None
                or ios is None
                or record is None
                or record.device_id != device.id
                or record.renews_serial != device.cert_serial
                or record.status != CertStatus.VALID.value
                or not newer
                or device.status in ENDED
            ):
                raise IdentityError(
                    "unbound",
                    "this certificate is not bound to an enrollment (send Authenticate first)",
                    serial=cert.serial_hex,
                )
            old = ios.cert_fingerprint
            ios.cert_fingerprint = identity.fingerprint
            ios.cert_not_before = cert.not_before
            ios.updated_at = utcnow()
            device.cert_serial = cert.serial_hex
            device.cert_not_after = cert.not_after
            events.emit(session, "device_identity_renewed", device_id=device.id, serial=cert.serial_hex)
            binding = Binding(device.id, device.identifier, device.status, 0.0)
        self.bindings.drop(old)
        return self.bindings.put(identity.fingerprint, binding.device_id, binding.identifier, binding.status)

    async def identity_rejected(
        self, exc: IdentityError, *, peer: str | None, path: str, identifier: str | None
    ) -> None:
        """A security event for the rejection, in a transaction of its own; beyond the first few
        per source and reason in an interval, only counted for one aggregate event (no write)."""
        details = {k: v for k, v in exc.details.items() if k != "reason"}
        sample = {"message": exc.message, "peer": peer, "path": path, "identifier": identifier, **details}
        if not self.rejections.admit("security_identity_rejected", peer, exc.reason, sample):
            log.debug("iOS identity rejected (%s), counted: %s [peer %s]", exc.reason, exc.message, peer)
            return
        log.warning("iOS identity rejected (%s): %s [peer %s, %s]", exc.reason, exc.message, peer, path)
        try:
            async with self.db.transaction() as session:
                device_id = None
                if identifier:
                    device_id = await session.scalar(
                        select(Device.id).where(
                            Device.protocol == Protocol.IOS.value, Device.identifier == identifier
                        )
                    )
                events.emit(
                    session,
                    "security_identity_rejected",
                    Severity.WARNING,
                    device_id=device_id,
                    reason=exc.reason,
                    message=exc.message,
                    peer=peer,
                    path=path,
                    identifier=identifier,
                    **details,
                )
        except Exception:
            log.exception("could not record the security event")

    async def message_rejected(
        self, reason: str, message: str, *, device_id: int, path: str, peer: str | None = None
    ) -> None:
        """A well-identified device sent something that is not acceptable now (e.g. a replay).
        Rate-limited like ``identity_rejected``."""
        sample = {"message": message, "device_id": device_id, "path": path, "peer": peer}
        if not self.rejections.admit("security_message_rejected", peer, reason, sample):
            log.debug("iOS message rejected (%s), counted: %s [device %s]", reason, message, device_id)
            return
        log.warning("iOS message rejected (%s): %s [device %s, %s]", reason, message, device_id, path)
        try:
            async with self.db.transaction() as session:
                events.emit(
                    session,
                    "security_message_rejected",
                    Severity.WARNING,
                    device_id=device_id,
                    reason=reason,
                    message=message,
                    path=path,
                )
        except Exception:
            log.exception("could not record the security event")
