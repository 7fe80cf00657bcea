"""Renewal of an enrolled iOS device's identity before it expires.

Apple's documented way: install the MDM enrollment profile again over MDM (InstallProfile) with
the PayloadIdentifier of the installed one and a new identity; the device replaces the profile
in place and continues with the new identity, keeping its enrollment. The new certificate is
issued here, under the ``mobile`` rule, with ``renews_serial`` (the old one becomes superseded,
still accepted until it expires); the iOS listener lets the new certificate take over the
device's binding at its first use.

The identity always travels as PKCS#12, also for fleets enrolled with ``[enroll] identity =
"scep"``: a SCEP challenge does not carry the device and the certificate it renews, so the
certificate SCEP would issue could not take over the binding.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import uuid

from cryptography import x509
from cryptography.x509.oid import NameOID
from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core import command_enqueue
from mdm.core.errors import Conflict
from mdm.db.models import Device, Protocol
from mdm.enroll import links
from mdm.enroll.seams import env_of
from mdm.ios import enrollment_profile as ep
from mdm.ios import store
from mdm.ios.enroll_profiles import check_prerequisites
from mdm.ios.signing import sign_profile
from mdm.pki import issuance, rules
from mdm.pki import services as pki_plugin
from mdm.pki.renewers import RenewalStep, RenewalUnavailable
from mdm.pki.services import RENEWERS
from mdm.pki.tables import IssuedCertificateRecord
from mdm.server.context import ServerContext

COMMAND = "InstallConfProf"
CREATED_BY = "renewal"


def _common_name(certificate: IssuedCertificateRecord, device: Device) -> str:
    """The renewed certificate keeps the old one's common name."""
    if certificate.pem:
        names = x509.load_pem_x509_certificate(certificate.pem.encode()).subject.get_attributes_for_oid(
            NameOID.COMMON_NAME
        )
        if names:
            return str(names[0].value)
    return device.identifier


class IosRenewer:
    """``pki.renewers.Renewer`` of ``Protocol.IOS``."""

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx

    async def prepare_renewal(self, device: Device, certificate: IssuedCertificateRecord) -> RenewalStep:
        """The new identity and the signed profile that carries it, outside any transaction:
        a key pair, the certificate source (an enterprise CA is a network round trip) and the
        profile signature. Recorded and queued by the returned step, which checks again."""
        ctx = self.ctx
        attributes = device.attributes or {}
        identifier = attributes.get("mdm_profile_identifier")
        if not identifier:
            raise RenewalUnavailable(
                "the device has no known MDM profile identifier (it did not enroll through an "
                "enrollment link or file), so its enrollment profile cannot be replaced in place"
            )
        env = env_of(ctx)
        try:
            prereq = await asyncio.to_thread(check_prerequisites, env)
        except Conflict as exc:
            raise RenewalUnavailable(exc.message) from None
        topic = prereq.topic.topic
        device_topic = attributes.get("topic")
        if device_topic and device_topic != topic:
            raise RenewalUnavailable(
                f"the device's push topic {device_topic!r} is not the configured {topic!r}; "
                "a profile with another topic cannot replace its MDM profile"
            )
        async with ctx.db.session() as session:
            await _no_pending_install(session, device.id)
            rule = await rules.get_rule(session, "mobile")
            user = await store.user(session, device.user_id) if device.user_id is not None else None
        source = pki_plugin.sources(ctx).get(rule.source)
        prepared = await issuance.prepare(
            source,
            rules.request_for(
                rule,
                common_name=_common_name(certificate, device),
                user_id=device.user_id,
                device_id=device.id,
                emails=(user.email,) if user is not None and user.email else (),
                # the account an enterprise CA requests on behalf of (DOMAIN\user)
                uid=user.name if user is not None else None,
                renews_serial=certificate.serial,
            ),
        )
        cert, chain = await issuance.sign(source, prepared)
        assert prepared.key is not None  # no public key in the request: the key was generated
        settings = env.settings
        spec = ep.EnrollmentProfileSpec(
            identifier=str(identifier),
            profile_uuid=str(uuid.uuid4()).upper(),
            organization=settings.organization,
            server_url=links.server_url(env.config, env.bound_ports),
            checkin_url=links.checkin_url(env.config, env.bound_ports),
            topic=topic,
            identity=ep.Pkcs12Identity(
                certificate=cert,
                key=prepared.key,
                chain=tuple(c for c in chain if c.subject != c.issuer),  # the root has its own payload
                password=secrets.token_urlsafe(18),
                encryption=settings.pkcs12_encryption,
                friendly_name=f"{user.name if user else device.identifier} MDM identity",
            ),
            root_certificates=[env.ca.root],
            access_rights=settings.access_rights,
            per_user_connections=settings.per_user_connections,
        )
        signed = await asyncio.to_thread(lambda: sign_profile(ep.build_bytes(spec), prereq.signer))

        async def record_and_queue(
            session: AsyncSession, device: Device, certificate: IssuedCertificateRecord
        ) -> str:
            await _no_pending_install(session, device.id)
            issued = await issuance.record_issued(
                session, source.name, prepared.request, cert, chain, prepared.key
            )
            command = await command_enqueue.enqueue(
                session, device, COMMAND, {"mobileconfig_base64": base64.b64encode(signed).decode()},
                created_by=CREATED_BY, translators=ctx.translators,
            )
            return f"{COMMAND} {command.guid} queued with a new identity {issued.serial_hex}"

        return record_and_queue


async def _no_pending_install(session: AsyncSession, device_id: int) -> None:
    active = await store.active_command_guid(session, device_id, COMMAND)
    if active is not None:
        raise RenewalUnavailable(f"an {COMMAND} command ({active}) is still pending for the device")


def register(ctx: ServerContext) -> None:
    """Plug the iOS renewer into the PKI's renewal worker (at start-up; the PKI plugin starts first)."""
    ctx.services[RENEWERS].register(Protocol.IOS, IosRenewer(ctx))
