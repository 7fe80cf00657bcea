"""Kerberos on the web listener's one-time links (``[listeners.web] kcd = true``): the link must
be opened in the name of its own user.

The handler asks ``mdm.server.kcd.KcdGate`` who the publishing proxy authenticated; this module
says whether that user owns the link (before anything is claimed, so a refusal leaves the link
usable) and records refusals: a log line and a ``security_link_negotiate_rejected`` event, the
first few per source and reason, then one aggregate (``RejectionLog``): an unauthenticated flood
is not one database write per request.
"""

from __future__ import annotations

import logging

from mdm.core import events
from mdm.core.security_events import RejectionLog
from mdm.db.engine import Database
from mdm.enroll import links, store_kcd
from mdm.enroll.event_types_kcd import SECURITY_LINK_NEGOTIATE_REJECTED

log = logging.getLogger("mdm.enroll.kcd")

# The path recorded for a refused link: the token is a credential, it is never written down.
REDACTED_PATH = links.LINK_PATH + "<token>"


class OtherUsersLink(Exception):
    def __init__(self, enrollment_id: int) -> None:
        super().__init__("this enrollment link belongs to another user")
        self.enrollment_id = enrollment_id
        self.message = str(self)


class LinkKerberos:
    def __init__(self, db: Database, rejections: RejectionLog) -> None:
        self.db = db
        self.rejections = rejections

    async def check_owner(self, token: str, user_id: int) -> None:
        """``OtherUsersLink`` when the link is another user's. An unknown or malformed token
        passes: the download answers it (404) as for anyone."""
        if not links.well_formed(token):
            return
        async with self.db.session() as session:
            found = await store_kcd.link_owner(session, links.token_hash(token))
        if found is not None and found[1] != user_id:
            raise OtherUsersLink(found[0])

    async def rejected(
        self, reason: str, message: str, *, peer: str | None, principal: str | None = None,
        enrollment_id: int | None = None,
    ) -> None:
        sample = {"reason": reason, "message": message, "peer": peer, "principal": principal}
        if not self.rejections.admit(SECURITY_LINK_NEGOTIATE_REJECTED.name, peer, reason, sample):
            log.debug("enrollment link refused (kcd %s), counted [peer %s]", reason, peer)
            return
        log.warning(
            "enrollment link refused (kcd %s): %s [peer %s, principal %s]", reason, message, peer, principal
        )
        try:
            async with self.db.transaction() as session:
                events.emit(
                    session, SECURITY_LINK_NEGOTIATE_REJECTED, reason=reason, message=message, peer=peer,
                    path=REDACTED_PATH, principal=principal, enrollment_id=enrollment_id,
                )
        except Exception:
            log.exception("could not record the security event")
