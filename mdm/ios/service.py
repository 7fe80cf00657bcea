"""The iOS service object built at start-up: configuration, caches and the binding look-up that
every check-in and command-channel request goes through."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from cachetools import LRUCache
from sqlalchemy.ext.asyncio import AsyncEngine

from mdm.core import events
from mdm.core.identity import Binding, BindingCache, DeviceBindings
from mdm.core.identity_invalidation import track_bindings
from mdm.core.library import Translators
from mdm.core.push import Pushers
from mdm.core.security_events import RejectionLog
from mdm.db.engine import Database
from mdm.db.models import DeviceStatus, utcnow
from mdm.ios import store
from mdm.ios.config import IosConfig
from mdm.ios.event_types import DEVICE_IDENTITY_RENEWED, SECURITY_IDENTITY_REJECTED, SECURITY_MESSAGE_REJECTED
from mdm.ios.identity import Identity, IdentityError, IdentityResolver
from mdm.ios.messages import CommandReport
from mdm.ios.state import LastSeen, QueueHint
from mdm.ios.store_binding_probe import ProbingBindingSource
from mdm.pki.tables import CertStatus

log = logging.getLogger("mdm.ios")


# The enrollment is over (removed by the Remove command): the identity may still send the
# CheckOut its removal triggers, nothing else. (An erased device keeps answering until it is gone;
# its binding only counts as ended for the takeover rule in ``takeover.py``.)
ENDED = frozenset({DeviceStatus.UNMANAGED.value})


@dataclass
class IosService:
    db: Database
    config: IosConfig
    resolver: IdentityResolver
    bindings: BindingCache
    hint: QueueHint
    last_seen: LastSeen = field(default_factory=LastSeen)
    # Idle bodies repeat byte for byte per device: body -> parsed report (bounded).
    idle_reports: LRUCache[bytes, CommandReport] = field(default_factory=lambda: LRUCache(maxsize=10_000))
    extra: dict[str, Any] = field(default_factory=dict)
    # The command translators (``ServerContext.translators``): late translation at delivery.
    translators: Translators = field(default_factory=Translators)
    # The push clients (``ServerContext.pushers``): the NotNow back-off asks for a later wake-up.
    pushers: Pushers = field(default_factory=Pushers)
    # Security events of rejected requests: the first few verbatim, the rest aggregated.
    rejections: RejectionLog = field(default_factory=RejectionLog)
    # The binding look-up: ``bindings`` in front of ``ios_devices`` (built from the fields above).
    device_bindings: DeviceBindings = field(init=False)

    def __post_init__(self) -> None:
        # Transactions on this database that end a binding drop it from this cache at commit.
        track_bindings(self.db.engine.sync_engine, self.bindings)
        # Revocation is checked by the resolver's ClientCertVerifier on every request. The look-up
        # also tells the queue hint when nothing is queued (a cold Idle poll: one statement).
        source = ProbingBindingSource(self.db.engine, self.hint)
        self.device_bindings = DeviceBindings(self.bindings, source)

    @property
    def engine(self) -> AsyncEngine:
        return self.db.engine

    async def binding_of(self, identity: Identity, identifier: str, *, check_out: bool = False) -> Binding:
        """The enrollment this certificate is bound to; it must be the one the message names and
        still be managed (``check_out``: the CheckOut of a removed enrollment is let through)."""
        binding = await self.device_bindings.lookup(identity.fingerprint)
        if binding is None:
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
            device = await store.device_by_identifier(session, identifier)
            ios = await store.ios_device(session, device.id, lock=True) if device else None
            record = await store.issued_certificate(session, cert.serial_hex)
            # Only a newer certificate, issued by us to this device as the renewal of the one it is
            # bound to, may take over (not a superseded one, nor an identity the device was
            # re-enrolled away from).
            newer = ios is not None and (
                ios.cert_not_before is None
                or cert.not_before >= ios.cert_not_before
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
            events.emit(session, DEVICE_IDENTITY_RENEWED, device_id=device.id, serial=cert.serial_hex)
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
                    device_id = await store.device_id_by_identifier(session, identifier)
                events.emit(
                    session,
                    SECURITY_IDENTITY_REJECTED,
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
                    SECURITY_MESSAGE_REJECTED,
                    device_id=device_id,
                    reason=reason,
                    message=message,
                    path=path,
                )
        except Exception:
            log.exception("could not record the security event")
