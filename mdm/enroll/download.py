"""Serving a one-time link: the profile, exactly once.

The one-time claim, the certificate record and the ``enrollment_downloaded`` event commit
together; if building fails the claim rolls back and the link stays usable. When the identity's
CA holds the certificate request pending (``mdm.enroll.identity``) the request commits without the
claim: 503 with ``Retry-After``, and a later download hands the certificate out. A denial or an
unavailable CA rolls everything back; its ``cert_request_*`` event is written after the rollback.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from mdm.core import events
from mdm.core.errors import Conflict, Gone, NotFound, ServiceError
from mdm.db.engine import Database
from mdm.db.models import utcnow
from mdm.enroll import links, store
from mdm.enroll.event_types import ENROLLMENT_DOWNLOAD_FAILED, ENROLLMENT_DOWNLOADED
from mdm.enroll.expiry import expire
from mdm.enroll.identity import IdentityPending, stored_identity_waits
from mdm.enroll.profiles import build_profile, event_fields, new_identity_key, prepare
from mdm.enroll.seams import Env
from mdm.enroll.tables import EnrollmentStatus
from mdm.pki.requests import PendingCertificate, refusals_recorded
from mdm.scep import token_reuse

log = logging.getLogger("mdm.enroll")


class Unavailable(ServiceError):
    status = 503
    code = "unavailable"


class LinkUnknown(NotFound):
    pass


class LinkGone(Gone):
    pass


def _gone_message(status: str) -> str:
    return {
        EnrollmentStatus.DOWNLOADED.value: "this enrollment link has already been used",
        EnrollmentStatus.EXPIRED.value: "this enrollment link has expired",
        EnrollmentStatus.REVOKED.value: "this enrollment link has been revoked",
    }.get(status, "this enrollment link is no longer valid")


async def _pending_link(db: Database, token_hash: bytes, peer: str | None = None) -> store.LinkState:
    """The pending enrollment behind a link, or LinkUnknown / LinkGone (an expired link
    is marked expired on the way)."""
    now = utcnow()
    async with db.session() as session:
        found = await store.link_state(session, token_hash)
    if found is None:
        raise LinkUnknown("no such enrollment link")
    if found.status == EnrollmentStatus.PENDING.value and found.expires_at <= now:
        async with db.transaction() as session:
            await expire(session, found.id, now)
        raise LinkGone(_gone_message(EnrollmentStatus.EXPIRED.value))
    if found.status != EnrollmentStatus.PENDING.value:
        if found.status == EnrollmentStatus.DOWNLOADED.value:
            await token_reuse.report(
                db, _REUSED, token_hash, kind="enrollment_link", enrollment_id=found.id, peer=peer
            )
        raise LinkGone(_gone_message(found.status))
    return found


_REUSED = token_reuse.ReuseReports()  # downloaded links presented again, by token hash


# Downloads being built in this process, by token hash. Concurrent requests for the same link
# wait for the first instead of each generating a key pair only to lose the claim; across
# processes and replicas the database claim alone decides.
_IN_FLIGHT: dict[bytes, asyncio.Event] = {}


@dataclass(frozen=True)
class Served:
    body: bytes
    platform: str


async def download(env: Env, db: Database, token: str, *, peer: str | None = None) -> Served:
    """Serve a link once: the profile, or LinkUnknown (404) / LinkGone (410) / Unavailable (503,
    the link stays valid)."""
    if not links.well_formed(token):
        raise LinkUnknown("no such enrollment link")
    token_hash = links.token_hash(token)
    while True:
        pending = await _pending_link(db, token_hash, peer)
        running = _IN_FLIGHT.get(token_hash)
        if running is None:
            break
        await running.wait()
    done = _IN_FLIGHT[token_hash] = asyncio.Event()
    try:
        body = await build_download(env, db, token_hash, pending.id, peer, pending.platform,
                                    identity=pending.identity, link_token=token)
        return Served(body, pending.platform)
    finally:
        done.set()
        del _IN_FLIGHT[token_hash]


async def build_download(env: Env, db: Database, token_hash: bytes, enrollment_id: int,
                         peer: str | None, platform: str = "ios", *, identity: str | None = None,
                         link_token: str | None = None) -> bytes:
    """Claim the link and build its profile (without the per-process guard of ``download``).
    ``identity``: the enrollment's, for platforms that record it per enrollment (Android);
    ``link_token``: the link's clear token (an agent's enrollment token derives from it)."""
    try:
        prepared = await asyncio.to_thread(prepare, env, platform)
    except Conflict as exc:
        await _download_failed(db, enrollment_id, exc.message)
        raise Unavailable(f"the enrollment profile cannot be built right now: {exc.message}") from None
    # A request the CA holds (or refused) answers before any work; a certificate it issued since
    # comes with the key stored in its request row.
    stored = await stored_identity_waits(db, enrollment_id)
    # The key pair is made before the claim so the claiming transaction stays short (SQLite
    # serialises writers for its whole duration).
    key = None if stored else await new_identity_key(env, identity if platform == "android" else None)
    try:
        async with refusals_recorded(db), db.transaction() as session:
            claimed = await store.claim_link(session, token_hash, utcnow())
            if claimed is None:
                raise LinkGone(_gone_message(EnrollmentStatus.DOWNLOADED.value))
            enrollment = await store.enrollment_by_id(session, claimed)
            assert enrollment is not None
            owner = await store.user_by_id(session, enrollment.user_id)
            if owner is None:  # the user was deleted: the link went with it (cascade)
                raise LinkUnknown("no such enrollment link")
            profile = await build_profile(env, session, enrollment, owner, prepared, key, link_token)
            if isinstance(profile, PendingCertificate):
                # The request row, its sealed key and cert_request_pending commit; the link does not.
                await store.release_link(session, claimed)
            else:
                events.emit(
                    session, ENROLLMENT_DOWNLOADED, user_id=owner.id, cert_serial=enrollment.cert_serial,
                    peer=peer, **event_fields(enrollment, owner),
                )
    except ServiceError:
        raise
    except Exception as exc:
        log.exception("enrollment %s: building the profile failed", enrollment_id)
        await _download_failed(db, enrollment_id, f"{type(exc).__name__}: {exc}")
        raise Unavailable("the enrollment profile could not be built; the link is still valid") from None
    if isinstance(profile, PendingCertificate):
        log.info("enrollment %s: %s", enrollment_id, profile.description)
        raise IdentityPending(profile.id)
    return profile


async def _download_failed(db: Database, enrollment_id: int, reason: str) -> None:
    async with db.transaction() as session:
        events.emit(session, ENROLLMENT_DOWNLOAD_FAILED, enrollment_id=enrollment_id, error=reason)
