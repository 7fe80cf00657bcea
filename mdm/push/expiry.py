"""Warnings before the APNs push certificate expires (``push.expiry_warning_days``: 30, 7, 1) and
an alert once it has: a WARNING log and PUSH_CERTIFICATE_EXPIRING, then an ERROR log and
PUSH_CERTIFICATE_EXPIRED. Each threshold is reported once per certificate.

Only the certificate is needed (not its key): the configured one is read with ``read_topic``.
What was reported is kept in ``DATA/run/push-expiry.json`` (the certificate's topic and expiry,
and the thresholds reported), written atomically after the events commit, so that a restart does not
repeat a warning. A file rather than a table: it is one fact about the files this data directory
holds, and losing it costs at most one repeated warning. A renewed certificate (another
expiry) starts afresh. With several replicas on one database each data directory warns once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from mdm.core import events
from mdm.push.config import push_config
from mdm.push.event_types import PUSH_CERTIFICATE_EXPIRED, PUSH_CERTIFICATE_EXPIRING
from mdm.push.topic import TopicError, read_topic
from mdm.server.context import ServerContext

log = logging.getLogger("mdm.push")

STATE_FILE = "push-expiry.json"
EXPIRED = 0  # the mark of the "expired" alert in ``already_warned`` (thresholds are >= 1 day)
CHECK_SECONDS = 24 * 3600.0


class Certificate(Protocol):
    """What expiry needs of a push certificate: ``ApnsIdentity`` and ``PushTopic`` both qualify."""

    @property
    def topic(self) -> str: ...

    @property
    def not_after(self) -> datetime: ...


@dataclass(frozen=True)
class ExpiryWarning:
    topic: str
    not_after: datetime
    days_left: int
    threshold: int  # the threshold in days, or EXPIRED
    message: str

    @property
    def expired(self) -> bool:
        return self.threshold == EXPIRED


def check(
    identity: Certificate, now: datetime, already_warned: set[int], days: Sequence[int] = (30, 7, 1)
) -> list[ExpiryWarning]:
    """The warning due now (at most one: the tightest threshold crossed, or the expiry alert) and
    adds what it covers to ``already_warned``: a certificate found with 5 days left gets the 7-day
    warning, not the 30-day one as well."""
    left = identity.not_after - now
    if left <= timedelta(0):
        if EXPIRED in already_warned:
            return []
        already_warned.update({EXPIRED, *days})
        return [ExpiryWarning(identity.topic, identity.not_after, 0, EXPIRED, (
            f"the APNs push certificate (topic {identity.topic}) EXPIRED on {identity.not_after:%Y-%m-%d}: "
            "no iOS device can be woken by push until it is renewed at https://identity.apple.com/pushcert "
            "(same topic) and installed with `mdm push apns set-cert FILE`"))]
    crossed = sorted(d for d in days if d > 0 and left <= timedelta(days=d))
    if not crossed or crossed[0] in already_warned:
        return []
    tightest = crossed[0]
    already_warned.update(crossed)
    days_left = left.days
    return [ExpiryWarning(identity.topic, identity.not_after, days_left, tightest, (
        f"the APNs push certificate (topic {identity.topic}) expires on {identity.not_after:%Y-%m-%d} "
        f"({days_left} day(s) left): renew it at https://identity.apple.com/pushcert with the SAME topic "
        "(renew, do not create a new one) and install it with `mdm push apns set-cert FILE`"))]


def fingerprint(identity: Certificate) -> str:
    """One certificate: Apple renews with the same topic and a later expiry."""
    return f"{identity.topic}|{identity.not_after.isoformat()}"


def read_warned(data_dir: Path, identity: Certificate) -> set[int]:
    """The thresholds already reported for this certificate (none after a renewal)."""
    try:
        state: Any = json.loads((data_dir / "run" / STATE_FILE).read_text())
    except (OSError, ValueError):
        return set()
    if not isinstance(state, dict) or state.get("certificate") != fingerprint(identity):
        return set()
    warned = state.get("warned")
    return {int(x) for x in warned if isinstance(x, int)} if isinstance(warned, list) else set()


def write_warned(data_dir: Path, identity: Certificate, warned: set[int]) -> None:
    directory = data_dir / "run"
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)  # like the server's run files
    path = directory / STATE_FILE
    tmp = path.with_name(f".{STATE_FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"certificate": fingerprint(identity), "topic": identity.topic,
                               "not_after": identity.not_after.isoformat(), "warned": sorted(warned)}))
    tmp.replace(path)


async def expiry_pass(ctx: ServerContext, now: datetime | None = None) -> list[ExpiryWarning]:
    """One check of the configured certificate: log, emit and remember what is due."""
    try:
        identity = await asyncio.to_thread(read_topic, ctx.config)
    except TopicError:
        return []  # nothing usable is configured: start-up and reload report that
    if identity.development:
        return []  # the self-signed stand-in lasts ten years and cannot push anyway
    data_dir = ctx.config.data_path
    warned = await asyncio.to_thread(read_warned, data_dir, identity)
    due = check(identity, now or datetime.now(UTC), warned, push_config(ctx.config).expiry_warning_days)
    if not due:
        return []
    async with ctx.db.transaction() as session:
        for w in due:
            if w.expired:
                events.emit(session, PUSH_CERTIFICATE_EXPIRED, topic=w.topic,
                            not_after=w.not_after.isoformat())
            else:
                events.emit(session, PUSH_CERTIFICATE_EXPIRING, topic=w.topic,
                            not_after=w.not_after.isoformat(), days_left=w.days_left)
    for w in due:
        log.log(logging.ERROR if w.expired else logging.WARNING, "%s", w.message)
    await asyncio.to_thread(write_warned, data_dir, identity, warned)
    return due


async def check_at_start(ctx: ServerContext) -> None:
    """The first check, before the listeners open: an expired or expiring certificate is reported
    at every start-up that has not reported it yet, deterministically."""
    try:
        await expiry_pass(ctx)
    except Exception:
        log.exception("push certificate expiry check failed")


async def expiry_worker(ctx: ServerContext) -> None:
    """Daily after the start-up check: ``expiry_pass``; a failing pass is logged and tried again
    the next day."""
    while True:
        await asyncio.sleep(CHECK_SECONDS)
        try:
            await expiry_pass(ctx)
        except Exception:
            log.exception("push certificate expiry check failed")
