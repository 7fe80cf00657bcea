"""The event types of the core link (``mdm.reporting``): the link going down and coming back,
and dead letters an administrator put back in the outbox. Declared once; ``events.emit`` takes
these values."""

from __future__ import annotations

from mdm.core.events import EventBody, EventType
from mdm.db.enums import Severity


class CoreLinkDown(EventBody):
    reason: str  # the transport's short reason: "tls_error", "http_503", "connect_error", ...
    detail: str = ""  # one line, never a secret
    since: str  # ISO 8601: the first failure of this outage
    attempts: int  # consecutive failed attempts so far
    transport: str  # "generic" | "ksc"


class CoreLinkUp(EventBody):
    down_since: str  # ISO 8601
    down_seconds: float
    attempts: int  # failed attempts during the outage
    transport: str


class EventsReplayed(EventBody):
    count: int  # dead letters put back in the outbox by this request (or chunk of "all")
    by: str  # the API token's name
    all: bool = False


CORE_LINK_DOWN = EventType(
    "core_link_down", Severity.FUNCTIONAL_FAILURE, CoreLinkDown,
    "The core server could not be reached (or refused our credentials or TLS) for several attempts "
    "in a row: events wait in the outbox and are delivered, in order, once the link is back. "
    "Delivered after the outage like every other event",
    example={"reason": "tls_error", "detail": "certificate verify failed",
             "since": "2026-12-03T12:03:00+00:00", "attempts": 5, "transport": "generic"},
)
CORE_LINK_UP = EventType(
    "core_link_up", Severity.INFO, CoreLinkUp,
    "The core server accepts events again after an outage (core_link_down)",
    example={"down_since": "2026-12-03T12:03:00+00:00", "down_seconds": 312.5, "attempts": 41,
             "transport": "generic"},
)
EVENTS_REPLAYED = EventType(
    "events_replayed", Severity.INFO, EventsReplayed,
    "An administrator put dead-lettered events back in the outbox (they are delivered after the "
    "events that were created meanwhile: receivers order by created_at or id)",
    example={"count": 3, "by": "admin", "all": False},
)
