"""What the admin API shows of discovery's results: mailboxes (cursor pages), a mailbox with its
partnerships, an EAS device with its partnerships and wipe state. Reads only; no HTTP here."""

from __future__ import annotations

from dataclasses import dataclass

from mdm.core.errors import NotFound
from mdm.db.engine import Database
from mdm.db.enums import Protocol
from mdm.db.models import Device
from mdm.eas import store, store_devices
from mdm.eas.tables import EasMailbox, EasPartnership


@dataclass(frozen=True, slots=True)
class DeviceView:
    device: Device
    partnerships: list[tuple[EasPartnership, str]]


class EasViews:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def mailboxes(self, *, limit: int, after: int | None, query: str | None) -> list[EasMailbox]:
        async with self.db.session() as session:
            return await store.mailbox_page(session, limit=limit, after=after, query=query)

    async def mailbox(self, mailbox_id: int) -> tuple[EasMailbox, list[EasPartnership]]:
        async with self.db.session() as session:
            row = await store.mailbox(session, mailbox_id)
            if row is None:
                raise NotFound(f"no EAS mailbox {mailbox_id}")
            return row, await store.partnerships_of_mailbox(session, mailbox_id)

    async def device(self, device_id: int) -> DeviceView:
        async with self.db.session() as session:
            device = await store_devices.device(session, device_id)
            if device is None or device.protocol != Protocol.EAS.value:
                raise NotFound(f"no EAS device {device_id}")
            return DeviceView(device, await store_devices.partnerships_of_device(session, device_id))
