"""Who is calling on the ``kes`` listener: the TLS client certificate, verified and bound to a
device (``mdm.kes.peer.PeerResolver``, set under ``keys.PEERS`` at start-up).

Per request: the peer certificate's DER from the connection's ``SSLObject`` → the PKI's
``ClientCertVerifier`` (chain, validity and revocation; cached by the DER's SHA-256, so a steady
sync costs one hash and a dict look-up) → the platform-neutral binding (``core.identity``: a
bounded cache in front of ``store.bound_device``; dropped at commit, on every replica through
NOTIFY, when the device or its binding changes) → ``KesPeer``.

Every refusal is a ``KesRefused`` with a specific code; ``Rejections`` logs it and writes a
security event (the first few per source and reason, then one aggregate: an unauthenticated flood
is not one database write per request).
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from cachetools import LRUCache
from cryptography import x509
from sqlalchemy.ext.asyncio import AsyncEngine

from mdm.core import events
from mdm.core.errors import ServiceError
from mdm.core.identity import BoundDevice, DeviceBindings
from mdm.core.security_events import RejectionLog
from mdm.db.engine import Database
from mdm.db.models import DeviceStatus
from mdm.kes import store
from mdm.kes.event_types import SECURITY_KES_HANDSHAKE_REJECTED, SECURITY_KES_IDENTITY_REJECTED
from mdm.kes.peer import KesPeer
from mdm.pki import forwarded_cert
from mdm.pki.forwarded_cert import CLIENT_CERT_CHAIN_HEADER, CLIENT_CERT_HEADER
from mdm.pki.trust import ClientCertVerifier, IdentityRejected
from mdm.pki.x509_errors import CERTIFICATE_ERRORS
from mdm.server.kcd import KcdGate, KcdRefused, KcdUser
from mdm.server.peers import Network, peer_in

log = logging.getLogger("mdm.kes.identity")

# A device in one of these states is managed: its certificate may be used.
ACTIVE = frozenset({DeviceStatus.OK.value, DeviceStatus.REMOVING.value, DeviceStatus.REMOVE_FAILED.value})

# The verifier's reasons, as the codes a device gets.
_CODES = {"expired": "certificate_expired", "revoked": "certificate_revoked"}


class KesRefused(ServiceError):
    """A refused request on the KES listener: ``code`` is what the device is told, ``reason`` a
    finer word for the security event and the log."""

    def __init__(self, status: int, code: str, reason: str, message: str, **details: Any) -> None:
        super().__init__(message, **details)
        self.status = status
        self.code = code
        self.reason = reason
        # A 401 for a missing Negotiate asks for it (the middleware's challenge header).
        self.www_authenticate = "Negotiate" if code == "negotiate_required" else None


def no_certificate() -> KesRefused:
    return KesRefused(
        401,
        "client_certificate_required",
        "missing",
        "this endpoint needs the device's client certificate (mutual TLS)",
    )


class Rejections:
    """Logs refused requests and records them as security events, at a bounded cost."""

    def __init__(self, db: Database, log_: RejectionLog) -> None:
        self.db = db
        self.log = log_

    async def identity(
        self,
        exc: KesRefused,
        *,
        peer: str | None,
        path: str,
        identifier: str | None = None,
        serial: str | None = None,
        device_id: int | None = None,
    ) -> None:
        sample = {
            "code": exc.code,
            "message": exc.message,
            "peer": peer,
            "path": path,
            "identifier": identifier,
            "serial": serial,
        }
        name = SECURITY_KES_IDENTITY_REJECTED.name
        if not self.log.admit(name, peer, f"{exc.code}:{exc.reason}", sample):
            log.debug("KES request refused (%s), counted: %s [peer %s]", exc.code, exc.message, peer)
            return
        log.warning(
            "KES request refused (%s/%s): %s [peer %s, %s]", exc.code, exc.reason, exc.message, peer, path
        )
        try:
            async with self.db.transaction() as session:
                events.emit(
                    session,
                    SECURITY_KES_IDENTITY_REJECTED,
                    device_id=device_id,
                    code=exc.code,
                    reason=exc.reason,
                    message=exc.message,
                    peer=peer,
                    path=path,
                    identifier=identifier,
                    serial=serial,
                )
        except Exception:
            log.exception("could not record the security event")

    async def handshake(self, peer: str | None, reason: str, message: str) -> None:
        name = SECURITY_KES_HANDSHAKE_REJECTED.name
        if not self.log.admit(name, peer, reason, {"peer": peer, "message": message}):
            log.debug("KES handshake refused (%s), counted [peer %s]", reason, peer)
            return
        log.warning("KES TLS handshake refused (%s): %s [peer %s]", reason, message, peer)
        try:
            async with self.db.transaction() as session:
                events.emit(
                    session, SECURITY_KES_HANDSHAKE_REJECTED, peer=peer, reason=reason, message=message
                )
        except Exception:
            log.exception("could not record the security event")


class BindingSource:
    """``core.identity.BindingSource`` over ``kes_devices``; remembers each device's owner (the
    certificate's user) for the ``KesPeer``, which the platform-neutral binding does not carry."""

    __slots__ = ("engine", "users")

    def __init__(self, engine: AsyncEngine, size: int) -> None:
        self.engine = engine
        self.users: LRUCache[int, int | None] = LRUCache(maxsize=size)

    async def __call__(self, fingerprint: bytes) -> BoundDevice | None:
        found = await store.bound_device(self.engine, fingerprint)
        if found is None:
            return None
        self.users[found.device.id] = found.user_id
        return found.device


class KesPeerResolver:
    """``mdm.kes.peer.PeerResolver``."""

    def __init__(
        self,
        verifier: ClientCertVerifier,
        bindings: DeviceBindings,
        source: BindingSource,
        rejections: Rejections,
        *,
        trusted_proxies: tuple[Network, ...] = (),
        kcd: KcdGate | None = None,
    ) -> None:
        self.verifier = verifier
        self.bindings = bindings
        self.source = source
        self.rejections = rejections
        # Plain mode behind a proxy: Client-Cert (RFC 9440) and Negotiate only from these.
        self.trusted_proxies = trusted_proxies
        self.kcd = kcd

    def _certificate(self, request: web.Request) -> tuple[bytes | None, list[x509.Certificate]]:
        """The TLS client certificate, or the one a trusted proxy forwards in Client-Cert."""
        der = peer_certificate(request)
        header = request.headers.get(CLIENT_CERT_HEADER)
        if der is not None or header is None:
            return der, []
        if not peer_in(request, self.trusted_proxies):
            raise KesRefused(
                403, "certificate_untrusted", "untrusted_proxy",
                f"{CLIENT_CERT_HEADER} from {request.remote}, which is not a trusted proxy",
            )
        try:
            der, chain = forwarded_cert.parse(header, request.headers.get(CLIENT_CERT_CHAIN_HEADER))
        except forwarded_cert.ForwardedCertError as exc:
            raise KesRefused(403, "certificate_untrusted", "malformed", str(exc)) from None
        try:
            return der, [x509.load_der_x509_certificate(item) for item in chain]
        except CERTIFICATE_ERRORS:
            raise KesRefused(
                403, "certificate_untrusted", "malformed", f"{CLIENT_CERT_CHAIN_HEADER} is not DER"
            ) from None

    async def _kcd_user(self, request: web.Request) -> KcdUser | None:
        if self.kcd is None:
            return None
        try:
            return await self.kcd.user(request)
        except KcdRefused as exc:
            if exc.reason == "missing" and "Authorization" not in request.headers:
                raise KesRefused(401, "negotiate_required", exc.reason, exc.message) from None
            raise KesRefused(403, "negotiate_rejected", exc.reason, exc.message) from None

    async def require_device(self, request: web.Request) -> KesPeer:
        return await self.resolve(request)

    async def resolve(self, request: web.Request, *, managed: bool = True) -> KesPeer:
        """The request's bound device; with ``managed=False`` also one that left management (an
        unenroll repeated). Refusals are reported before they are raised."""
        serial: str | None = None
        peer: KesPeer | None = None
        try:
            user = await self._kcd_user(request)
            der, chain = self._certificate(request)
            if der is None:
                raise no_certificate()
            try:
                verified = self.verifier.verify_der(der, chain or None)
            except IdentityRejected as exc:
                serial = _serial_of(der)
                raise KesRefused(
                    403, _CODES.get(exc.reason, "certificate_untrusted"), exc.reason, exc.message
                ) from None
            except (ValueError, TypeError):
                raise KesRefused(
                    403, "certificate_untrusted", "malformed", "the client certificate cannot be used"
                ) from None
            serial = verified.serial_hex
            binding = await self.bindings.lookup(verified.fingerprint)
            if binding is None:
                raise KesRefused(
                    403,
                    "certificate_not_bound",
                    "not_bound",
                    f"certificate {serial} is not bound to a KES device",
                )
            user_id = self.source.users.get(binding.device_id, -1)
            if user_id == -1:  # the owner was evicted from its cache: read it again
                found = await store.bound_device(self.source.engine, verified.fingerprint)
                user_id = found.user_id if found is not None else None
            peer = KesPeer(binding.device_id, binding.identifier, user_id, serial, verified.fingerprint)
            if user is not None and user.user_id != user_id:
                raise KesRefused(
                    403, "negotiate_rejected", "other_user",
                    f"device {binding.identifier} is not bound to {user.principal}",
                )
            if managed and binding.status not in ACTIVE:
                raise KesRefused(
                    403,
                    "device_not_managed",
                    binding.status,
                    f"device {binding.identifier} is no longer managed ({binding.status})",
                )
            if user is not None:  # the answer completes the proxy's Negotiate (mutual authentication)
                request[MUTUAL_AUTH_KEY] = user.www_authenticate
            return peer
        except KesRefused as exc:
            await self.rejections.identity(
                exc,
                peer=request.remote,
                path=request.path,
                serial=serial,
                identifier=peer.identifier if peer is not None else None,
                device_id=peer.device_id if peer is not None else None,
            )
            raise


MUTUAL_AUTH_KEY = web.RequestKey("mdm_kes_mutual_auth", str)


async def add_mutual_auth(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: every answer to a request the KCD gate accepted carries
    ``WWW-Authenticate: Negotiate <token>``, whichever handler (or long poll) made it."""
    value = request.get(MUTUAL_AUTH_KEY)
    if value is not None:
        response.headers["WWW-Authenticate"] = value


def peer_certificate(request: web.Request) -> bytes | None:
    """The DER of the client certificate the connection was made with, if any."""
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if ssl_object is None:
        return None
    der: bytes | None = ssl_object.getpeercert(binary_form=True)
    return der


def _serial_of(der: bytes) -> str | None:
    """The serial (hex) of a refused certificate, for the security event."""
    try:
        return format(x509.load_der_x509_certificate(der).serial_number, "x")
    except CERTIFICATE_ERRORS:
        return None
