"""Refused TLS handshakes on the ``kes`` listener, made visible.

A client certificate that does not chain to a trust anchor (a foreign CA), or, with ``[pki]
kes_tls_crl_check``, a revoked one, fails in OpenSSL's handshake: asyncio closes the connection
and tells nobody (it logs handshake errors only in debug mode), so the device gets no HTTP code
and the administrator nothing. The listener's context gets an ``SSLObject`` class of its own
whose handshake reports such a failure — a log line and a rate-limited security event
(``security_kes_handshake_rejected``) naming the peer's address — before it is raised as before.

The peer's address is read from the asyncio SSL protocol that drives the handshake (the caller of
``do_handshake``); where it cannot be found the event says so (peer null).
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import logging
import ssl
import sys
from types import FrameType

from mdm.kes.identity import Rejections
from mdm.server.tls import ReloadableContext

log = logging.getLogger("mdm.kes.handshake")

_TASKS: set[asyncio.Task[None]] = set()


def _peer_of_caller() -> str | None:
    """The peer address of the asyncio SSL protocol a few frames up, if there is one."""
    frame: FrameType | None = sys._getframe(2)
    for _ in range(6):
        if frame is None:
            return None
        owner = frame.f_locals.get("self")
        if isinstance(owner, asyncio.sslproto.SSLProtocol):
            transport = getattr(owner, "_transport", None)
            peer = transport.get_extra_info("peername") if transport is not None else None
            return str(peer[0]) if isinstance(peer, tuple) and peer else None
        frame = frame.f_back
    return None


def _reason(exc: ssl.SSLCertVerificationError) -> str:
    message = (exc.verify_message or exc.reason or "verify_failed").lower()
    if "revoked" in message:
        return "revoked"
    if "issuer" in message or "self-signed" in message or "self signed" in message:
        return "untrusted"
    return "_".join(message.split())[:64]


def watch(context: ReloadableContext, rejections: Rejections) -> None:
    """Report every client-certificate failure of ``context``'s handshakes (idempotent)."""

    class WatchedSSLObject(ssl.SSLObject):
        def do_handshake(self) -> None:
            try:
                super().do_handshake()
            except ssl.SSLCertVerificationError as exc:
                _report(rejections, _peer_of_caller(), _reason(exc), str(exc.verify_message or exc))
                raise

    front = context.front
    if getattr(front, "kes_watched", False):
        return
    front.sslobject_class = WatchedSSLObject
    front.kes_watched = True  # type: ignore[attr-defined]


def _report(rejections: Rejections, peer: str | None, reason: str, message: str) -> None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        log.warning("KES TLS handshake refused (%s): %s [peer %s]", reason, message, peer)
        return
    task = loop.create_task(rejections.handshake(peer, reason, message))
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)
