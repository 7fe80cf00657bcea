"""An outbox backlog for ``mdm bench outbox`` (and the SIGKILL trials): D enrolled iOS devices and
N undelivered events about them, written straight to the tables in chunks (Core executemany,
one transaction per chunk, in one process; not through the API).

The events are declared types of the catalog, built by ``events.event_values`` as ``emit`` builds
them (body checked against its model, a fresh uuid): a realistic mix of inventory updates,
command life cycle (created, completed, failed) and security rejections, spread over the devices
in a random but reproducible order, ``created_at`` rising with the id over the last hour (a
backlog piled up during an outage).

A data directory is reused: the events the server wrote of its own in an earlier run are deleted;
when it then holds exactly N events they are made undelivered again (chunked by id range),
otherwise the outbox is emptied (chunked) and N events written.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from mdm.bench import store_outbox_bench as store
from mdm.config import Config
from mdm.core.event_types import COMMAND_COMPLETED, COMMAND_CREATED, COMMAND_FAILED
from mdm.core.events import event_values
from mdm.db.engine import Database
from mdm.db.models import DeviceStatus, Protocol, utcnow
from mdm.ios.event_types import INVENTORY_UPDATED, SECURITY_IDENTITY_REJECTED

CHIP = "0000E0B0"
FIRST, LAST = f"{CHIP}-{0:016X}", f"{CHIP}-{16**16 - 1:016X}"
CHUNK = 10_000  # events per transaction
SPAN = timedelta(hours=1)  # created_at of the backlog: the last hour, rising with the id
COMMAND_TYPES = ("DeviceInformation", "InstalledApplicationList", "ProfileList", "InstallProfile",
                 "DeviceLock", "SecurityInfo", "CertificateList")
PARTS = ("device_info", "apps", "profiles", "certificates", "security")


class OutboxPrepareError(Exception):
    pass


@dataclass
class Prepared:
    events: int
    devices: int
    written: int  # events written now (0: an existing backlog was re-queued)
    seconds: float


def udid(index: int) -> str:
    return f"{CHIP}-{index:016X}"


def _device_row(i: int, now: datetime) -> dict[str, Any]:
    return {
        "protocol": Protocol.IOS.value, "identifier": udid(i), "user_id": None, "group_id": None,
        "name": f"iPhone ({i})", "model": "iPhone15,2", "os_name": "iOS", "os_version": "17.4",
        "build_version": "21E219", "serial_number": f"F0B{i:09d}", "imei": None, "phone_number": None,
        "status": DeviceStatus.OK.value, "supported_commands": 0, "enrolled_at": now, "last_seen_at": now,
        "push_token": None, "push_magic": None, "push_valid": False, "push_changed_at": None,
        "cert_serial": None, "cert_not_after": None, "inventory": {}, "attributes": {},
    }


def event_row(rng: random.Random, device_id: int, index: int, created_at: datetime) -> dict[str, Any]:
    """One outbox row of the mix: 50 % inventory, 40 % command life cycle, 10 % security."""
    roll = rng.random()
    if roll < 0.5:
        row = event_values(INVENTORY_UPDATED, device_id=device_id, part=rng.choice(PARTS),
                           count=rng.randint(1, 250))
    elif roll < 0.9:
        guid = str(uuid.UUID(int=rng.getrandbits(128), version=4)).upper()
        kind = rng.choice(COMMAND_TYPES)
        if roll < 0.7:
            row = event_values(COMMAND_CREATED, device_id=device_id, command=guid, command_type=kind,
                               created_by="core-server")
        elif roll < 0.87:
            row = event_values(COMMAND_COMPLETED, device_id=device_id, command=guid, command_type=kind,
                               status="Acknowledged")
        else:
            row = event_values(COMMAND_FAILED, device_id=device_id, command=guid, command_type=kind,
                               status="Error", info="MCProfileErrorDomain 1009: the profile is malformed")
    else:
        row = event_values(SECURITY_IDENTITY_REJECTED, device_id=device_id, reason="unknown_certificate",
                           message="the client certificate is not bound to this device",
                           peer=f"198.51.100.{index % 250 + 1}", path="/mdm/server",
                           identifier=udid(index % 997), serial=f"{rng.getrandbits(64):016X}")
    row["created_at"] = created_at
    return row


async def prepare(config: Config, events: int, devices: int, *, seed: int = 14,
                  progress: Callable[[int], None] | None = None) -> Prepared:
    """Make the data directory's outbox hold exactly ``events`` undelivered events about
    ``devices`` bench devices (writing or re-queuing in chunks)."""
    if events < 1 or devices < 1:
        raise OutboxPrepareError("--events and --devices must be >= 1")
    t0 = time.perf_counter()
    db = Database(config.database_url, 2)
    try:
        ids = await _devices(db, devices)
        async with db.session() as session:
            count, low, high = await store.id_bounds(session)
        if count:  # the server's own events of an earlier run (core link up, ...) go first
            await _chunked(db, partial(store.delete_foreign, first_device=min(ids), last_device=max(ids)),
                           low, high, None)
            async with db.session() as session:
                count, low, high = await store.id_bounds(session)
        if count == events:
            await _chunked(db, store.requeue_range, low, high, progress)
            return Prepared(events, devices, 0, round(time.perf_counter() - t0, 1))
        if count:
            await _chunked(db, store.delete_range, low, high, None)
        await write_events(db, ids, events, seed=seed, progress=progress)
        return Prepared(events, devices, events, round(time.perf_counter() - t0, 1))
    finally:
        await db.close()


async def _devices(db: Database, devices: int) -> list[int]:
    async with db.session() as session:
        ids = await store.device_ids(session, FIRST, LAST, Protocol.IOS.value)
    if len(ids) > devices:
        return ids[:devices]
    now = utcnow()
    for start in range(len(ids), devices, CHUNK):
        async with db.transaction() as session:
            rows = [_device_row(i, now) for i in range(start, min(devices, start + CHUNK))]
            await store.insert_devices(session, rows)
    async with db.session() as session:
        return (await store.device_ids(session, FIRST, LAST, Protocol.IOS.value))[:devices]


async def write_events(db: Database, device_ids: list[int], events: int, *, seed: int = 14,
                       progress: Callable[[int], None] | None = None) -> None:
    """Append ``events`` events about ``device_ids`` in chunks of ``CHUNK`` (one transaction
    each), ``created_at`` rising over the last hour."""
    rng = random.Random(seed)  # noqa: S311 - simulation data
    start = utcnow() - SPAN
    step = SPAN / events
    done = 0
    while done < events:
        n = min(CHUNK, events - done)
        rows = [event_row(rng, rng.choice(device_ids), done + k, start + step * (done + k)) for k in range(n)]
        async with db.transaction() as session:
            await store.insert_events(session, rows)
        done += n
        if progress:
            progress(done)


async def _chunked(db: Database, action: Callable[..., Any], low: int, high: int,
                   progress: Callable[[int], None] | None) -> None:
    done = 0
    for first in range(low, high + 1, CHUNK):
        async with db.transaction() as session:
            done += await action(session, first, first + CHUNK)
        if progress:
            progress(done)
