"""Kerberos Constrained Delegation on a listener (``kcd = true``): the publishing proxy says who
the user is with ``Authorization: Negotiate``; this gate believes it only from the listener's
trusted proxies, accepts the token (``negotiate.Acceptor``), maps the principal to a user of ours
and checks a device's owner. Each listener turns a ``KcdRefused`` into its own answer (400 on
iOS, 401/403 on KES and the web listener) and security event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from aiohttp import web

from mdm.core import store_principals
from mdm.db.engine import Database
from mdm.server.context import ServerContext, ServiceKey
from mdm.server.negotiate import Accepted, Kerberos, NegotiateRefused, load
from mdm.server.peers import Network, networks, peer_in

KcdReason = Literal[
    "malformed", "wrong_service", "expired", "replay", "clock_skew", "no_key", "failed",
    "missing", "untrusted_proxy", "unknown_principal", "no_user", "other_user",
]


class KcdRefused(Exception):
    def __init__(self, reason: KcdReason, message: str, *, principal: str | None = None) -> None:
        super().__init__(message)
        self.reason: KcdReason = reason
        self.message = message
        self.principal = principal


@dataclass(frozen=True, slots=True)
class KcdUser:
    principal: str
    user_id: int
    user_name: str
    accepted: Accepted

    @property
    def www_authenticate(self) -> str:
        return self.accepted.www_authenticate


class KcdGate:
    """One listener's Negotiate gate."""

    def __init__(self, kerberos: Kerberos, db: Database, trusted_proxies: tuple[Network, ...]) -> None:
        self.kerberos = kerberos
        self.db = db
        self.trusted_proxies = trusted_proxies

    def offered(self, request: web.Request) -> bool:
        return "Authorization" in request.headers

    async def user(self, request: web.Request) -> KcdUser:
        """The user the trusted proxy authenticated (``KcdRefused`` otherwise). The proxy check
        comes first: no Kerberos work for a request from anyone else."""
        header = request.headers.get("Authorization")
        if not peer_in(request, self.trusted_proxies):
            raise KcdRefused(
                "untrusted_proxy" if header is not None else "missing",
                f"Negotiate is accepted only from a trusted proxy, not from {request.remote}",
            )
        if header is None:
            raise KcdRefused("missing", "the trusted proxy sent no Authorization: Negotiate")
        try:
            accepted = await self.kerberos.acceptor.accept(header)
        except NegotiateRefused as exc:
            raise KcdRefused(exc.reason, exc.message) from None
        name = self.kerberos.users.user_name(accepted.principal)
        if name is None:
            raise KcdRefused(
                "unknown_principal",
                f"principal {accepted.principal} is not of an accepted realm (kerberos.realms)",
                principal=accepted.principal,
            )
        async with self.db.session() as session:
            user_id = await store_principals.user_id_by_name(session, name)
        if user_id is None:
            raise KcdRefused(
                "no_user", f"principal {accepted.principal} maps to {name!r}, which is no user",
                principal=accepted.principal,
            )
        return KcdUser(accepted.principal, user_id, name, accepted)

    async def check_owner(self, user: KcdUser, device_id: int) -> None:
        """The device must be bound to ``user`` (a binding never moves without proof)."""
        async with self.db.session() as session:
            owner = await store_principals.device_owner(session, device_id)
        if owner != user.user_id:
            raise KcdRefused(
                "other_user",
                f"device {device_id} is not bound to {user.user_name} ({user.principal})",
                principal=user.principal,
            )


KERBEROS = ServiceKey("server.kerberos", Kerberos)


def gate(ctx: ServerContext, trusted_proxies: list[str]) -> KcdGate:
    """A listener's gate; the acceptor (keytab checked once) is shared by the kcd listeners."""
    kerberos = ctx.services.get(KERBEROS)
    if kerberos is None:
        kerberos = load(ctx.config.kerberos, ctx.config.hostname, ctx.config.resolve)
        ctx.services[KERBEROS] = kerberos
    return KcdGate(kerberos, ctx.db, networks(trusted_proxies))
