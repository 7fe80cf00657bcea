"""The seam between the KES identity (``plugin``) and the endpoints that need a bound device
(``plugin_sync``): who is calling, proven by the TLS client certificate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from aiohttp import web


@dataclass(frozen=True, slots=True)
class KesPeer:
    """A request's device: its client certificate verified (chain, validity, revocation) and
    bound to ``device_id``; ``user_id`` is the certificate's owner."""

    device_id: int
    identifier: str  # the Android device id
    user_id: int | None
    cert_serial: str  # hex
    fingerprint: bytes  # SHA-256 of the certificate's DER


class PeerResolver(Protocol):
    async def require_device(self, request: web.Request) -> KesPeer:
        """The bound device of the request's client certificate, or a ``ServiceError`` with a
        specific code (``client_certificate_required``, ``certificate_revoked``,
        ``certificate_expired``, ``certificate_untrusted``, ``certificate_not_bound``,
        ``device_not_managed``) after the refusal was logged and reported as a security event."""
        ...
