"""Outbox rows as the direct-statement tests write and read them (``mdm.db.prepared`` on
PostgreSQL's kept autocommit connections: ``test_db_kept_autocommit``, ``test_db_direct_block``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, insert, select

from mdm.db import prepared
from mdm.db.models import Event, utcnow

_events: Any = Event.__table__
# An event's uuid by uuid: as a Core statement (for a session) and prepared (for a direct one).
EVENT_UUID = select(_events.c.uuid).where(_events.c.uuid == bindparam("b_uuid"))
SELECT_EVENT = prepared.Prepared(EVENT_UUID)
INSERT_EVENT = prepared.Prepared(
    insert(_events), ("uuid", "type", "severity", "body", "created_at", "delivery_attempts")
)


def event_row(guid: str) -> dict[str, Any]:
    """The parameters of ``INSERT_EVENT`` for an event ``guid``."""
    return {"uuid": guid, "type": "t", "severity": "info", "body": {"k": 1}, "created_at": utcnow(),
            "delivery_attempts": 0}
