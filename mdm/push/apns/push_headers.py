"""A push's HTTP/2 header block, joined from cached parts.

Every push to APNs carries the same fields but three: its ``:path`` (the device token), its
``apns-expiration`` and its ``apns-id``. ``LiteralEncoder`` keeps no state (literal fields, no
dynamic table), so the constant fields are encoded once and a push's block is their bytes joined
around its own three: hpack's encoder per push was a large share of a push's CPU.
"""

from __future__ import annotations

import uuid

from mdm.push.apns.connection import Headers
from mdm.push.apns.hpackfast import LiteralEncoder, literal

# apns-id's name and length (a UUID, 36 characters) in a push's header block
_APNS_ID_NAME = literal(b"apns-id", b"")[:-1] + bytes((36,))


class PushHeaders:
    """The header blocks of one client's pushes (``authority``: the gateway's, ``topic``: the
    push certificate's)."""

    __slots__ = ("_expiration", "_head", "_tail_block", "base", "id_prefix", "ids", "tail")

    def __init__(self, authority: bytes, topic: str) -> None:
        self.base: Headers = [(b":method", b"POST"), (b":scheme", b"https"), (b":authority", authority)]
        self.tail: Headers = [
            (b"apns-topic", topic.encode()),
            (b"apns-push-type", b"mdm"),
            (b"apns-priority", b"10"),
        ]
        encoder = LiteralEncoder()
        self._head = encoder.encode(self.base)
        self._tail_block = encoder.encode(self.tail)
        # A random (version 4) UUID per client, its last 48 bits a counter: unique, and far
        # cheaper than uuid4() per push.
        first = uuid.uuid4()
        self.id_prefix = str(first)[:24].encode()  # "xxxxxxxx-xxxx-4xxx-yxxx-"
        self.ids = first.int & 0xFFFFFFFFFFFF
        self._expiration = (-1, b"")

    def block(self, token: str, expiration: int) -> bytes:
        """The HPACK block of a push to ``token`` expiring at ``expiration`` (Unix seconds, 0:
        now or never): ``LiteralEncoder``'s encoding of ``base``, ``:path``, ``tail``,
        ``apns-expiration`` and ``apns-id``, each push its own ``apns-id``."""
        if expiration != self._expiration[0]:  # (the same second for a batch of pushes)
            self._expiration = (expiration, literal(b"apns-expiration", str(expiration).encode()))
        self.ids = (self.ids + 1) & 0xFFFFFFFFFFFF
        return b"".join((
            self._head, literal(b":path", b"/3/device/" + token.lower().encode()), self._tail_block,
            self._expiration[1], _APNS_ID_NAME + self.id_prefix + b"%012x" % self.ids,
        ))
