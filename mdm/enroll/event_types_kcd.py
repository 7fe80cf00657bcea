"""The security event of the web listener's Kerberos gate (``[listeners.web] kcd = true``): a
one-time link refused because the publishing proxy's Negotiate did not name the link's user."""

from __future__ import annotations

from mdm.core.events import EventBody, EventType
from mdm.db.enums import Severity


class LinkNegotiateRejected(EventBody):
    reason: str
    message: str
    peer: str | None = None
    path: str
    principal: str | None = None  # the authenticated principal, when the ticket was good
    enrollment_id: int | None = None  # the link's, when the principal was of another user


SECURITY_LINK_NEGOTIATE_REJECTED = EventType(
    "security_link_negotiate_rejected", Severity.WARNING, LinkNegotiateRejected,
    "A one-time link was refused on a web listener with kcd = true: no Negotiate from a trusted "
    "proxy, a ticket that did not authenticate, or the principal of another user (the link stays "
    "usable; the first few per source and reason, then security_rejections_aggregated)",
    example={
        "reason": "other_user",
        "message": "this enrollment link belongs to another user",
        "peer": "10.0.0.5",
        "path": "/e/<token>",
        "principal": "bob@EXAMPLE.COM",
        "enrollment_id": 17,
    },
)
