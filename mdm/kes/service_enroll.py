"""KES identity: register, certificate (first one with the enrollment token, renewal over mutual
TLS), unenroll and info (docs/kes-protocol.md). Each state change and its events commit in one
transaction; a refused request writes nothing (its security event aside, see ``identity``)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core import commands, events, store_devices
from mdm.core.device_status import set_status
from mdm.db.engine import Database
from mdm.db.models import Device, DeviceStatus, Protocol, utcnow
from mdm.enroll.seams import KES_TOKEN_PURPOSE
from mdm.enroll.tables import Enrollment, EnrollmentStatus
from mdm.kes import service_certificates, store
from mdm.kes.certificates import Csr, answer, parse_csr, pem
from mdm.kes.event_types import (
    KES_DEVICE_REGISTERED,
    KES_DEVICE_UNENROLLED,
)
from mdm.kes.identity import ACTIVE, KesRefused
from mdm.kes.messages import PROTOCOL_VERSION
from mdm.kes.peer import KesPeer
from mdm.kes.tables import KesDevice
from mdm.pki import rules
from mdm.pki.ca import CertificateAuthority
from mdm.pki.requests import PendingCertificate, refusals_recorded, request_certificate
from mdm.pki.sources import SourceSet
from mdm.pki.tables import CertStatus
from mdm.scep import challenges

_ENDED_CERTIFICATE = frozenset({CertStatus.REVOKED.value, CertStatus.EXPIRED.value})


def _refused_token(code: str, reason: str, message: str) -> KesRefused:
    return KesRefused(403, code, reason, message)


class KesEnrollService:
    def __init__(self, *, db: Database, ca: CertificateAuthority, sources: SourceSet) -> None:
        self.db = db
        self.ca = ca
        self.sources = sources

    # ---- info --------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        return {
            "v": PROTOCOL_VERSION,
            "protocol_versions": [PROTOCOL_VERSION],
            "server_time": datetime.now(UTC).isoformat(),
            "ca_certificates": [pem(c) for c in self.ca.chain],
        }

    # ---- the enrollment token ------------------------------------------------------------------
    async def _token(self, session: AsyncSession, token: str) -> tuple[challenges.ChallengeMatch, Enrollment]:
        found = await challenges.match(session, token)
        if found is None:
            raise _refused_token("token_unknown", "unknown", "this enrollment token is not known")
        if not found.purpose.startswith(KES_TOKEN_PURPOSE):
            raise _refused_token("token_unknown", "wrong_purpose", "this is not an Android enrollment token")
        try:
            enrollment_id = int(found.purpose[len(KES_TOKEN_PURPOSE) :])
        except ValueError:
            raise _refused_token(
                "token_unknown", "wrong_purpose", "this is not an Android enrollment token"
            ) from None
        if found.problem == "used":
            raise _refused_token("token_used", "used", "this enrollment token was already used")
        if found.problem == "expired":
            raise _refused_token("token_expired", "expired", "this enrollment token has expired")
        enrollment = await store.enrollment(session, enrollment_id)
        if enrollment is None or enrollment.platform != "android":
            raise _refused_token(
                "token_unknown", "no_enrollment", "this enrollment token has no Android enrollment"
            )
        if enrollment.status in (EnrollmentStatus.REVOKED.value, EnrollmentStatus.EXPIRED.value):
            raise _refused_token(
                "token_expired", enrollment.status, f"the enrollment was {enrollment.status}"
            )
        return found, enrollment

    async def _precheck(self, token: str, *, unknown_only: bool = False) -> None:
        """Refuse a bad token from a read-only session, before the write transaction (on SQLite a
        queued writer): a flood of bad tokens costs reads only. The transaction checks again.
        ``unknown_only``: refuse only what no retry can redeem (a used token may still answer a
        repeated certificate request)."""
        async with self.db.session() as session:
            try:
                await self._token(session, token)
            except KesRefused as exc:
                if not unknown_only or exc.code == "token_unknown":
                    raise

    # ---- register ------------------------------------------------------------------------------
    async def register(self, msg: dict[str, Any]) -> dict[str, Any]:
        for attempt in (1, 2):
            try:
                return await self._register(msg)
            except IntegrityError:  # two first registers of one Android id at once: the loser re-reads
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _register(self, msg: dict[str, Any]) -> dict[str, Any]:
        facts: dict[str, Any] = msg["device"]
        identifier: str = facts["device_id"]
        now = utcnow()
        await self._precheck(msg["token"])
        async with self.db.transaction() as session:
            _, enrollment = await self._token(session, msg["token"])
            if await store.other_registered(session, enrollment.id, identifier) is not None:
                # One token, one device: a leaked token must not mint device rows.
                raise KesRefused(
                    409, "token_registered_another_device", "token_reuse",
                    "this enrollment token already registered another device; ask for a new enrollment",
                )
            device = await store.device_by_identifier(session, identifier, lock=True)
            created = device is None
            takeover: str | None = None
            if device is None:
                device = Device(
                    protocol=Protocol.KES.value,
                    identifier=identifier,
                    status=DeviceStatus.OK.value,
                    user_id=None,
                    enrolled_at=now,
                    inventory={},
                    attributes={},
                )
                await store.add(session, device)
                kes = KesDevice(
                    device_id=device.id, enrollment_id=enrollment.id, registered_at=now, updated_at=now
                )
                await store.add(session, kes)
            else:
                found = await store.kes_device(session, device.id, lock=True)
                if found is None:
                    kes = KesDevice(
                        device_id=device.id, enrollment_id=enrollment.id, registered_at=now, updated_at=now
                    )
                    await store.add(session, kes)
                else:
                    kes = found
                if kes.enrollment_id != enrollment.id:
                    takeover = await self._takeover(session, device, kes, enrollment)
                    kes.enrollment_id = enrollment.id
                if device.status not in ACTIVE:  # the old binding ended: start over, unbound
                    kes.cert_fingerprint = kes.previous_fingerprint = kes.bound_at = None
                    kes.renew_requested_at = None
                    set_status(session, device, DeviceStatus.OK, "registered")
                    device.user_id = device.cert_serial = device.cert_not_after = None
                    device.enrolled_at = now
            push_changed = self._facts(device, kes, facts, msg.get("fcm_token"), now)
            events.emit(
                session,
                KES_DEVICE_REGISTERED,
                device_id=device.id,
                user_id=enrollment.user_id,
                identifier=identifier,
                enrollment_id=enrollment.id,
                created=created,
                manufacturer=facts.get("manufacturer"),
                model=facts.get("model"),
                os_version=facts.get("os_version"),
                agent_version=facts.get("agent_version"),
                push_token_changed=push_changed,
                takeover=takeover,
            )
            return {"v": PROTOCOL_VERSION, "device_ref": str(device.id), "status": "registered"}

    async def _takeover(
        self, session: AsyncSession, device: Device, kes: KesDevice, enrollment: Enrollment
    ) -> str:
        """Why the Android id may move to ``enrollment`` (mirrors ``ios.takeover``), or 409."""
        if kes.cert_fingerprint is None or device.status not in ACTIVE:
            return "unbound" if device.status in ACTIVE else "ended"
        if await self._binding_ended(session, device):
            return "certificate_ended"
        if enrollment.for_device_id == device.id:
            return "for_device"
        if (
            enrollment.for_device_id is None
            and device.user_id is not None
            and enrollment.user_id == device.user_id
        ):
            return "owner"
        raise KesRefused(
            409,
            "device_bound_elsewhere",
            "takeover",
            "this device is enrolled with another identity; only an enrollment of the device's "
            "owner, or one made for this device, may replace it",
        )

    async def _binding_ended(self, session: AsyncSession, device: Device) -> bool:
        now = utcnow()
        if device.cert_not_after is not None and device.cert_not_after <= now:
            return True
        if device.cert_serial is None:
            return False
        record = await store.certificate(session, device.cert_serial)
        return record is not None and (record.status in _ENDED_CERTIFICATE or record.not_after <= now)

    @staticmethod
    def _facts(
        device: Device, kes: KesDevice, facts: dict[str, Any], fcm_token: str | None, now: datetime
    ) -> bool:
        device.model = facts["model"]
        device.os_name = "Android"
        device.os_version = facts["os_version"]
        for column, key in (("serial_number", "serial"), ("imei", "imei"), ("phone_number", "phone_number")):
            if key in facts:
                setattr(device, column, facts[key])
        device.attributes = {
            **(device.attributes or {}),
            "manufacturer": facts["manufacturer"],
            "agent_version": facts["agent_version"],
        }
        kes.agent_version = facts["agent_version"]
        kes.updated_at = now
        if fcm_token is None or (fcm_token == device.push_token and device.push_valid):
            return False
        device.push_token = fcm_token
        device.push_valid = True
        device.push_changed_at = now
        return True

    # ---- certificate ---------------------------------------------------------------------------
    async def enroll_certificate(self, msg: dict[str, Any]) -> dict[str, Any]:
        """The first certificate: the token redeemed (exactly once), the device bound. A source
        that holds the request pending: the token is redeemed by the request, the device is bound
        when the agent repeats it after the CA issued (``service_certificates``)."""
        identifier: str = msg["device_id"]
        await self._precheck(msg["token"], unknown_only=True)
        async with refusals_recorded(self.db), self.db.transaction() as session:
            device = await store.device_by_identifier(session, identifier, lock=True)
            kes = await store.kes_device(session, device.id, lock=True) if device is not None else None
            if device is not None and kes is not None and kes.cert_request_id == msg["request_id"]:
                found = await challenges.match(session, msg["token"])
                if found is not None and found.purpose == f"{KES_TOKEN_PURPOSE}{kes.enrollment_id}":
                    return await self._repeat(session, device, kes, msg["csr"])
            token, enrollment = await self._token(session, msg["token"])
            if (
                device is None
                or kes is None
                or kes.enrollment_id != enrollment.id
                or device.status not in ACTIVE
            ):
                raise KesRefused(
                    409,
                    "not_registered",
                    "not_registered",
                    f"device {identifier} was not registered with this enrollment token",
                )
            csr = parse_csr(msg["csr"])
            assert token.id is not None
            if not await challenges.consume(session, token.id):
                raise _refused_token("token_used", "used", "this enrollment token was already used")
            rule = await rules.get_rule(session, "mobile")
            owner = await store_devices.user(session, enrollment.user_id)
            outcome = await request_certificate(
                session,
                self.sources.get(rule.source),
                replace(
                    rules.request_for(
                        rule,
                        common_name=csr.common_name or identifier,
                        user_id=enrollment.user_id,
                        device_id=device.id,
                        public_key=csr.key,
                        emails=(owner.email,) if owner is not None and owner.email else (),
                        uid=owner.name if owner is not None else None,
                    ),
                    csr=csr.request,  # an enterprise CA checks the agent's own signature
                ),
                purpose=service_certificates.purpose(device.id),
            )
            self._requested(kes, msg["request_id"], csr, None)
            if isinstance(outcome, PendingCertificate):
                kes.updated_at = utcnow()
                pending = service_certificates.still_pending(outcome)
            else:
                service_certificates.bind_first(session, device, kes, enrollment, outcome.certificate)
                return answer(outcome.certificate, outcome.chain, rule.renewal_days)
        raise pending  # after the commit: the request and its token stay recorded

    async def renew_certificate(self, peer: KesPeer, msg: dict[str, Any]) -> dict[str, Any]:
        """A renewal over mutual TLS: the binding moves to the new certificate; the one that made
        the request stays bound as the previous one until it expires or is revoked."""
        async with refusals_recorded(self.db), self.db.transaction() as session:
            device = await store.device(session, peer.device_id, lock=True)
            kes = await store.kes_device(session, peer.device_id, lock=True)
            if device is None or kes is None:
                raise KesRefused(403, "certificate_not_bound", "not_bound", "the device is gone")
            if kes.cert_request_id == msg["request_id"]:
                return await self._repeat(session, device, kes, msg["csr"])
            csr = parse_csr(msg["csr"])
            rule = await rules.get_rule(session, "mobile")
            owner = await store_devices.user(session, device.user_id) if device.user_id is not None else None
            outcome = await request_certificate(
                session,
                self.sources.get(rule.source),
                replace(
                    rules.request_for(
                        rule,
                        common_name=csr.common_name or device.identifier,
                        user_id=device.user_id,
                        device_id=device.id,
                        public_key=csr.key,
                        emails=(owner.email,) if owner is not None and owner.email else (),
                        uid=owner.name if owner is not None else None,
                        renews_serial=peer.cert_serial,
                    ),
                    csr=csr.request,
                ),
                purpose=service_certificates.purpose(device.id),
            )
            self._requested(kes, msg["request_id"], csr, None)
            if isinstance(outcome, PendingCertificate):
                kes.updated_at = utcnow()
                pending = service_certificates.still_pending(outcome)
            else:
                service_certificates.bind_renewal(
                    session, device, kes, outcome.certificate, peer.fingerprint, peer.cert_serial
                )
                return answer(outcome.certificate, outcome.chain, rule.renewal_days)
        raise pending

    @staticmethod
    def _requested(kes: KesDevice, request_id: str, csr: Csr, serial: str | None) -> None:
        kes.cert_request_id = request_id
        kes.cert_request_hash = csr.digest
        kes.cert_request_serial = serial

    async def _repeat(
        self, session: AsyncSession, device: Device, kes: KesDevice, csr_pem: str
    ) -> dict[str, Any]:
        return await service_certificates.repeat(session, self.ca, self.sources, device, kes, csr_pem)

    # ---- unenroll ------------------------------------------------------------------------------
    async def unenroll(self, peer: KesPeer, msg: dict[str, Any]) -> dict[str, Any]:
        left = {"v": PROTOCOL_VERSION, "status": "unenrolled"}
        async with self.db.transaction() as session:
            device = await store.device(session, peer.device_id, lock=True)
            kes = await store.kes_device(session, peer.device_id, lock=True)
            if device is None or kes is None or device.status not in ACTIVE:
                return left  # left already: a repeat changes nothing
            active = await store.active_commands(session, device.id)
            for command in active:
                await commands.complete(session, command, success=False, info="the device unenrolled")
            now = utcnow()
            set_status(session, device, DeviceStatus.UNMANAGED, "unenrolled")
            device.push_token = None
            device.push_valid = False
            device.push_changed_at = now
            kes.renew_requested_at = None
            kes.updated_at = now
            events.emit(
                session,
                KES_DEVICE_UNENROLLED,
                device_id=device.id,
                user_id=device.user_id,
                identifier=device.identifier,
                reason=msg.get("reason"),
                commands_failed=len(active),
            )
        return left
