"""Mugshots: the picture of a Mugshot command (``POST /kes/v1/mugshot?command_id=GUID``) and the
admin API's reading of them.

The picture must be JPEG or PNG, checked on its first bytes (the declared ``Content-Type`` must
agree), at most ``[kes] max_mugshot_bytes`` (refused before it is read whole, by the handler). The
command must be this device's delivered Mugshot: the picture is stored and the command completed
in one transaction. The same picture uploaded again for a completed command (a retry after a lost
answer) gets the same answer; anything else for it is refused (409 ``unknown_command``).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from mdm.core import commands, devices, events
from mdm.core.errors import NotFound
from mdm.db.engine import Database
from mdm.db.models import CommandStatus
from mdm.kes import store_mugshots
from mdm.kes.event_types_sync import KES_MUGSHOT_RECEIVED
from mdm.kes.messages import PROTOCOL_VERSION
from mdm.kes.peer import KesPeer
from mdm.kes.sync_errors import UnknownCommand, UnsupportedMediaType
from mdm.kes.tables import KesMugshot

log = logging.getLogger("mdm.kes.mugshot")

JPEG, PNG = "image/jpeg", "image/png"
_MAGIC = {JPEG: b"\xff\xd8\xff", PNG: b"\x89PNG\r\n\x1a\n"}
CONTENT_TYPES = tuple(_MAGIC)


def media_type(declared: str) -> str:
    """The declared content type, if it is one a mugshot may have (415 otherwise)."""
    kind = declared.split(";", 1)[0].strip().lower()
    if kind not in _MAGIC:
        raise UnsupportedMediaType(f"a mugshot is {' or '.join(CONTENT_TYPES)}, not {kind or 'untyped'}",
                                   allowed=list(CONTENT_TYPES))
    return kind


def check_picture(kind: str, data: bytes) -> None:
    if not data.startswith(_MAGIC[kind]) or len(data) <= len(_MAGIC[kind]):
        raise UnsupportedMediaType(f"the body is not a {kind} picture", allowed=list(CONTENT_TYPES))


class MugshotService:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def receive(
        self, peer: KesPeer, command_guid: str, kind: str, data: bytes, taken_at: datetime | None = None
    ) -> dict[str, Any]:
        check_picture(kind, data)
        guid = command_guid.upper()
        async with self.db.transaction(inline=True) as session:
            command = await commands.lock_by_guid(session, guid)
            if command is None or command.device_id != peer.device_id or command.type != "Mugshot":
                raise UnknownCommand(f"no Mugshot command {guid} for this device", command=guid)
            if command.status == CommandStatus.COMPLETED:
                known = await store_mugshots.by_command(session, guid)
                if known is not None and known.data == data:
                    return {"v": PROTOCOL_VERSION, "mugshot_id": known.id}
                raise UnknownCommand(f"Mugshot command {guid} already has its picture", command=guid)
            mugshot_id = await store_mugshots.insert(
                session, device_id=peer.device_id, command_guid=guid, content_type=kind, data=data,
                taken_at=taken_at,
            )
            result = {"mugshot_id": mugshot_id, "content_type": kind, "size": len(data)}
            if not await commands.complete(session, command, success=True, info=None, data=result, take=True):
                raise UnknownCommand(f"Mugshot command {guid} was not delivered to this device", command=guid)
            events.emit(session, KES_MUGSHOT_RECEIVED, device_id=peer.device_id, command=guid,
                        mugshot_id=mugshot_id, content_type=kind, size=len(data))
        log.info("kes device %d: mugshot %d received (%d bytes, %s)",
                 peer.device_id, mugshot_id, len(data), kind)
        return {"v": PROTOCOL_VERSION, "mugshot_id": mugshot_id}

    # ---- the admin API ------------------------------------------------------------------------
    async def list(self, device_id: int, *, limit: int, before_id: int | None) -> tuple[list[Any], bool]:
        async with self.db.session() as session:
            await devices.get(session, device_id)
            rows = await store_mugshots.page(session, device_id, limit=limit + 1, before_id=before_id)
        return rows[:limit], len(rows) > limit

    async def picture(self, device_id: int, mugshot_id: int) -> KesMugshot:
        async with self.db.session() as session:
            mugshot = await store_mugshots.one(session, device_id, mugshot_id)
        if mugshot is None:
            raise NotFound(f"no mugshot {mugshot_id} of device {device_id}")
        return mugshot
